"""The blocking client: addresses, and 'daemon not there' always meaning DBusUnavailable."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from typing import Any

import pytest
import trio
from jeepney import HeaderFields
from stas_dbus_fakes import StartServer

from stas.dbus import client
from stas.dbus.common import (
    DBusAccessDenied,
    DBusCallError,
    DBusUnavailable,
    call_error,
    system_bus_address,
)
from stas.dbus.idl import STACD, STAFD
from tests.dbus.scripted_bus import HOLD, SILENT, answer_hello, fake_bus, within_guard


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def test_system_bus_address_honours_environment() -> None:
    assert system_bus_address({}) == "unix:path=/run/dbus/system_bus_socket"
    assert system_bus_address({"DBUS_SYSTEM_BUS_ADDRESS": ""}).endswith("system_bus_socket")
    env = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/tmp/x"}
    assert system_bus_address(env) == "unix:path=/tmp/x"


@pytest.mark.parametrize(
    "address",
    [
        "unix:path=/nonexistent/stas/bus",
        "tcp:host=127.0.0.1,port=1",
        "garbage",
        "unix:path",
    ],
)
def test_bogus_address_is_unavailable(address: str) -> None:
    with pytest.raises(DBusUnavailable) as err:
        client.open_system_bus(address)
    assert address in str(err.value)


def test_bogus_env_address_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/env/bus")
    with pytest.raises(DBusUnavailable, match="/nonexistent/env/bus"):
        client.connect(STAFD)


async def test_service_not_running_is_unavailable(bus_address: str) -> None:
    with pytest.raises(DBusUnavailable, match=r"org\.nvmexpress\.stac is not running"):
        await in_thread(client.connect, STACD)
    conn = await in_thread(client.open_system_bus)
    try:
        with pytest.raises(DBusUnavailable, match="ServiceUnknown"):
            await in_thread(
                client.call,
                conn,
                STAFD.bus_name,
                STAFD.object_path,
                STAFD.main_interface,
                "list_controllers",
                "b",
                False,
            )
    finally:
        conn.close()


async def test_connect_then_call_by_name(start_staf: StartServer) -> None:
    await start_staf()
    with await in_thread(client.connect, STAFD) as c:
        assert await in_thread(c.get, "log_level") == "INFO"
        with pytest.raises(KeyError, match="nonesuch"):
            await in_thread(c.set, "nonesuch", 1)


def test_call_error_mapping() -> None:
    assert isinstance(call_error("org.freedesktop.DBus.Error.NoReply", ()), DBusUnavailable)
    denied = call_error("org.freedesktop.DBus.Error.AccessDenied", ("nope",))
    assert isinstance(denied, client.DBusCallError)
    assert isinstance(denied, client.DBusAccessDenied)
    assert denied.message == "nope"
    other = call_error("org.example.Error", ("bad thing", 3))
    assert isinstance(other, DBusCallError)
    assert (other.name, other.message, str(other)) == (
        "org.example.Error",
        "bad thing",
        "org.example.Error: bad thing",
    )


def test_client_import_does_not_pull_in_trio() -> None:
    code = (
        "import sys, stas.dbus.client; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'outcome')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


async def hold_the_only_slot(nursery: trio.Nursery, fake: Any) -> None:
    """Another connection of the same (fake) uid keeps one slow call running."""
    from jeepney import DBusAddress, new_method_call

    from stas.dbus.connection import open_bus

    bus = await open_bus()
    await nursery.start(bus.serve, lambda msg: None)
    target = DBusAddress(STAFD.object_path, STAFD.bus_name, STAFD.main_interface)
    msg = new_method_call(target, "list_controllers", "b", (False,))
    nursery.start_soon(functools.partial(bus.call_checked, msg, timeout=30))
    await fake.entered.wait()


async def test_ctl_retries_busy_then_succeeds(
    bus_address: str, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Issue 13 item 6: a busy answer is retried; the flood ending lets the tool through."""
    from stas_dbus_fakes import FakeStafd

    from stas.ctl import stafctl
    from stas.dbus.service import DBusObjectServer

    fake = FakeStafd()
    fake.gate = trio.Event()

    async def same_uid(sender: str) -> int:
        return 1000

    server: DBusObjectServer = fake.server(bus_address, same_uid, max_concurrent=1)
    await nursery.start(server.run)
    await hold_the_only_slot(nursery, fake)
    token = trio.lowlevel.current_trio_token()
    slept: list[float] = []

    def fake_sleep(delay: float) -> None:
        slept.append(delay)
        if len(slept) == 2:  # the flood ends during the second wait
            trio.from_thread.run_sync(fake.gate.set, trio_token=token)
            trio.from_thread.run_sync(lambda: None, trio_token=token)  # let the reply go out

    monkeypatch.setattr(client, "_sleep", fake_sleep)
    rc = await in_thread(stafctl.main, ["--json", "dlp", "-a", "192.168.1.10", "-s", "8009"])
    out, err = capsys.readouterr()
    assert (rc, err) == (0, "") and "192.168.1.20" in out
    assert slept[:2] == [0.05, 0.1]


async def test_ctl_gives_up_on_busy_with_one_line(
    bus_address: str, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from stas_dbus_fakes import FakeStafd

    from stas.ctl import stafctl

    fake = FakeStafd()
    fake.gate = trio.Event()

    async def same_uid(sender: str) -> int:
        return 1000

    await nursery.start(fake.server(bus_address, same_uid, max_concurrent=1).run)
    await hold_the_only_slot(nursery, fake)
    slept: list[float] = []
    monkeypatch.setattr(client, "_sleep", slept.append)
    rc = await in_thread(stafctl.main, ["dlp", "-a", "192.168.1.10", "-s", "8009"])
    out, err = capsys.readouterr()
    fake.gate.set()
    assert (rc, out) == (1, "")
    assert err == (
        "stafd is busy with other calls from this user: still busy after 2.0 s; try again later\n"
    )
    assert slept == list(client.BUSY_RETRY_DELAYS) and sum(slept) == pytest.approx(2.0)


def test_size_limit_is_not_retried() -> None:
    """A reply too large would be too large again: only "server busy" means retry."""
    busy = call_error("org.freedesktop.DBus.Error.LimitsExceeded", ("server busy, retry",))
    big = call_error("org.freedesktop.DBus.Error.LimitsExceeded", ("reply to x would be 9",))
    assert isinstance(busy, client.DBusBusy) and not isinstance(big, client.DBusBusy)
    assert isinstance(big, DBusCallError)


# --- a bus that fails after authentication: nothing of the connection may stay open ----------


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_failed_hello_leaves_no_socket_open(tmp_path: Any) -> None:
    """The bus hangs up on Hello: NoSystemBus, and the socket and selector are closed now, not
    at garbage collection (the exception, held here, keeps the failed frames alive)."""
    path = str(tmp_path / "bus")
    before = _open_fds()
    thread = fake_bus(path, lambda msg: None)
    with pytest.raises(client.NoSystemBus) as err:
        client.connect(STAFD, address=f"unix:path={path}")
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(err.value.__cause__, ConnectionResetError)
    assert err.value.address == f"unix:path={path}"
    assert _open_fds() == before


def test_a_refused_first_call_closes_the_connection(tmp_path: Any) -> None:
    """Hello answered, NameHasOwner refused by the bus policy: DBusAccessDenied, and the
    connection is closed (it was left open for anything but DBusUnavailable)."""
    from jeepney import new_error, new_method_return

    def replies(msg: Any) -> Any:
        if msg.header.fields[HeaderFields.member] == "Hello":
            return new_method_return(msg, "s", (":1.7",))
        return new_error(msg, "org.freedesktop.DBus.Error.AccessDenied", "s", ("policy",))

    path = str(tmp_path / "bus")
    before = _open_fds()
    thread = fake_bus(path, replies)
    with pytest.raises(DBusAccessDenied, match="policy") as err:
        client.connect(STAFD, address=f"unix:path={path}")
    thread.join(10)  # the client's close is what ends the fake bus's loop
    assert not thread.is_alive() and err.value is not None
    assert _open_fds() == before


def test_no_system_bus_is_a_dbus_unavailable() -> None:
    """Callers that only know DBusUnavailable (stacctl plan, stacd) still catch it."""
    with pytest.raises(DBusUnavailable) as err:
        client.open_system_bus("unix:path=/nonexistent/stas/bus")
    assert isinstance(err.value, client.NoSystemBus)
    assert err.value.address == "unix:path=/nonexistent/stas/bus"


# --- a bus that authenticates, then is silent: the whole connect has one time limit ----------


def names_has_owner(then: Any) -> Any:
    """NameHasOwner answered True; anything else by ``then``."""
    from jeepney import new_method_return

    def replies(msg: Any) -> Any:
        if msg.header.fields[HeaderFields.member] == "NameHasOwner":
            return new_method_return(msg, "b", (True,))
        return then(msg)

    return replies


@pytest.mark.parametrize(
    ("silent_on", "replies"),
    [("Hello", lambda msg: SILENT), ("NameHasOwner", answer_hello(lambda msg: SILENT))],
)
def test_a_silent_bus_is_not_answering_within_the_timeout(
    tmp_path: Any, silent_on: str, replies: Any
) -> None:
    """Old code: jeepney's Hello waited forever (stafctl hung), and a silent NameHasOwner was
    "connection lost" after 25 s whatever the timeout. Now: BusNotAnswering, nothing open."""
    path = str(tmp_path / "bus")
    before = _open_fds()
    thread = fake_bus(path, replies)
    err = within_guard(client.connect, STAFD, address=f"unix:path={path}", timeout=0.2)
    assert isinstance(err, client.BusNotAnswering), err
    assert isinstance(err, client.NoSystemBus) and isinstance(err, DBusUnavailable)
    assert str(err) == f"the system bus at unix:path={path} did not answer within 0.2 s"
    assert (err.address, err.timeout) == (f"unix:path={path}", 0.2)
    thread.join(HOLD)  # the client's close is what ends the fake bus's loop
    assert not thread.is_alive() and _open_fds() == before


def test_open_system_bus_bounds_hello_too(tmp_path: Any) -> None:
    path = str(tmp_path / "bus")
    fake_bus(path, lambda msg: SILENT)
    err = within_guard(client.open_system_bus, f"unix:path={path}", timeout=0.2)
    assert isinstance(err, client.BusNotAnswering) and err.timeout == 0.2


def test_the_connect_has_one_time_limit_not_one_per_step(tmp_path: Any) -> None:
    """Authentication and Hello each take 0.25 s: within 0.4 s each, not 0.4 s in all."""
    slow = threading.Event()  # never set: waiting on it is the bus being slow

    def slow_hello(msg: Any) -> Any:
        slow.wait(0.25)
        return answer_hello(lambda m: None)(msg)

    path = str(tmp_path / "bus")
    fake_bus(path, names_has_owner(slow_hello), auth_delay=0.25)
    err = within_guard(client.connect, STAFD, address=f"unix:path={path}", timeout=0.4)
    assert isinstance(err, client.BusNotAnswering) and err.timeout == 0.4
    path = str(tmp_path / "bus2")  # the same slow bus within a larger limit: connected
    fake_bus(path, names_has_owner(slow_hello), auth_delay=0.25)
    with within_guard(client.connect, STAFD, address=f"unix:path={path}", timeout=5.0) as c:
        assert c.conn.deadline is None  # each call now has its own timeout


def test_a_deadline_gone_before_authentication_is_not_answering(tmp_path: Any) -> None:
    """Under load the deadline can pass before jeepney's first auth read, whose socket then
    has timeout 0 (EAGAIN, not a timeout): still the bus not answering, not "cannot connect"."""
    path = str(tmp_path / "bus")
    thread = fake_bus(path, lambda msg: SILENT)
    err = within_guard(client.connect, STAFD, address=f"unix:path={path}", timeout=1e-9)
    assert isinstance(err, client.BusNotAnswering), err
    thread.join(HOLD)
    assert not thread.is_alive()
