"""sd_notify: datagrams really reach a socket; watchdog pings at half the timeout."""

import os
import socket
from pathlib import Path

import pytest
import trio

from stas.sdnotify import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    yield str(path), sock
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_ready_reloading_stopping(notify_socket) -> None:
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.ready("serving") and n.reloading() and n.stopping()
    assert drain(sock) == ["READY=1\nSTATUS=serving", "RELOADING=1", "STOPPING=1"]


def test_abstract_socket() -> None:
    name = f"stas-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_without_socket_is_a_noop() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready() and n.watchdog_interval is None


def test_watchdog_for_another_pid_is_ignored() -> None:
    n = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval is None


async def test_watchdog_pings_at_half_interval(notify_socket, autojump_clock) -> None:
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    assert n.watchdog_interval == 5.0
    with trio.move_on_after(22):
        await n.run_watchdog()
    assert drain(sock) == ["WATCHDOG=1"] * 5  # t = 0, 5, 10, 15, 20
