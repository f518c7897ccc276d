"""End-to-end process helpers: the simulator, stafd and stacd as processes, stafctl/stacctl.

Waiting is on events (a daemon's sd_notify datagram, a log line, a bus signal) or on a polled
condition with a generous deadline: a loaded machine makes things slow, not wrong. How fast a
change arrives is measured by the benchmarks, not asserted here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "nvmet-harness" / "simulator.py"
NVMET_CONF = ROOT / "nvmet-harness" / "nvmet.conf"
DEADLINE = 60.0  # seconds: only ever reached when something is wrong
WK = "nqn.2014-08.org.nvmexpress.discovery"
SEED = {  # the subsystems nvmet.conf's port 1 lists
    "klingons",
    "starfleet",
    "nqn.1988-11.com.dell:PowerSANxxx:01:20210225100113-454f73093ceb4847a7bdfc6e34ae8e28",
}
HOSTID = "0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
HOSTNQN = f"nqn.2014-08.org.nvmexpress:uuid:{HOSTID}"

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float = DEADLINE) -> T:
    """Poll ``check`` until it returns something true; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what} (last seen: {value!r})")
        time.sleep(0.1)


class Notify:
    """A systemd notify socket of our own: the daemon's READY/RELOADING/STOPPING, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def next(
        self, timeout: float = DEADLINE, sender: subprocess.Popen[bytes] | None = None
    ) -> bytes:
        """The next datagram; fails after ``timeout`` or as soon as ``sender`` has exited."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(min(left, 0.5))
            try:
                return self.sock.recv(4096)
            except TimeoutError:
                if sender is not None and sender.poll() is not None:
                    raise AssertionError(
                        f"{self.path.stem} exited ({sender.returncode}) instead of notifying"
                    ) from None
        raise AssertionError(f"no sd_notify datagram on {self.path} in {timeout} s")

    def close(self) -> None:
        self.sock.close()


class Daemon:
    """stafd or stacd as a process with its own notify socket and log file."""

    name = ""
    count = 0

    def __init__(self, world: World, argv: list[str]) -> None:
        Daemon.count += 1
        tag = f"{self.name}-{Daemon.count}"
        self.notify = Notify(world.tmp / f"{tag}.notify")
        self.log_path = world.tmp / f"{tag}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(world.env, NOTIFY_SOCKET=str(self.notify.path))
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=self._log, cwd=ROOT)
        self.signalled = False

    def wait_ready(self) -> bytes:
        """READY=1: sent once the daemon owns its bus name, so the ctl tools answer at once."""
        msg = self.next_notify()
        assert msg.startswith(b"READY=1"), (msg, self.log_text())
        return msg

    def next_notify(self) -> bytes:
        """The daemon's next sd_notify datagram (its log is shown if it exits instead)."""
        try:
            return self.notify.next(sender=self.proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log:\n{self.log_text()[-3000:]}") from None

    def reload(self) -> None:
        """SIGHUP, then RELOADING=1 and READY=1 as systemd's Type=notify-reload expects."""
        self.proc.send_signal(signal.SIGHUP)
        assert self.next_notify() == b"RELOADING=1"
        self.wait_ready()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = DEADLINE) -> None:
        wait_for(f"{text!r} in {self.log_path.name}", lambda: text in self.log_text(), timeout)

    def send(self, sig: int) -> None:
        """Send a stopping signal (SIGTERM, SIGINT); ``stop`` then only waits."""
        self.proc.send_signal(sig)
        self.signalled = True

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop (unless already signalled) and wait; the exit code."""
        if self.proc.poll() is None and not self.signalled:
            self.send(sig)
        try:
            return self.proc.wait(DEADLINE)
        finally:
            self._log.close()
            self.notify.close()


class Stafd(Daemon):
    name = "stafd"

    def __init__(self, world: World, *extra: str) -> None:
        t = world.tmp
        super().__init__(world, [
            sys.executable, "-m", "stas.main", "-f", str(t / "stafd.conf"),
            "--sys-conf", str(t / "sys.conf"), "--state-dir", str(t / "state"), *extra,
        ])  # fmt: skip


class Stacd(Daemon):
    name = "stacd"

    def __init__(self, world: World, *extra: str) -> None:
        t = world.tmp
        super().__init__(world, [
            sys.executable, "-m", "stas.stacd", "-f", str(t / "stacd.conf"),
            "--sys-conf", str(t / "sys.conf"), "--kernel", "fake", *extra,
        ])  # fmt: skip


class Simulator:
    """nvmet-harness/simulator.py serving nvmet.conf on an ephemeral port of ::1."""

    def __init__(self, tmp: Path, name: str, *, mdns: bool = False) -> None:
        self.control = str(tmp / f"{name}.sock")
        argv = [
            sys.executable, str(SIM), "serve", "-f", str(NVMET_CONF), "--ephemeral",
            "--control", self.control, *(["--mdns"] if mdns else []),
        ]  # fmt: skip
        self.log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()  # "listening on [::1]:PORT (port 1)"
        assert "listening on" in line, line
        self.port = line.split("]:", 1)[1].split(" ", 1)[0]
        wait_for("simulator control socket", lambda: os.path.exists(self.control))

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, str(SIM), *args, "--control", self.control],
            capture_output=True, text=True, check=True, timeout=DEADLINE,
        )  # fmt: skip
        return out.stdout

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(DEADLINE)
        finally:
            self.log.close()


class World:
    """One test's directory, environment (private bus as the system bus) and processes."""

    def __init__(self, tmp: Path, env: dict[str, str], bus_address: str) -> None:
        self.tmp, self.env, self.bus_address = tmp, env, bus_address
        self.started: list[Simulator | Daemon] = []

    def simulator(self, name: str, *, mdns: bool = False) -> Simulator:
        sim = Simulator(self.tmp, name, mdns=mdns)
        self.started.append(sim)
        return sim

    def stafd(self, *extra: str, ready: bool = True) -> Stafd:
        return self._started(Stafd(self, *extra), ready)

    def stacd(self, *extra: str, ready: bool = True) -> Stacd:
        return self._started(Stacd(self, *extra), ready)

    def _started(self, daemon: Any, ready: bool) -> Any:
        self.started.append(daemon)
        if ready:
            daemon.wait_ready()
        return daemon

    def stop(self, thing: Simulator | Daemon, sig: int = signal.SIGTERM) -> int:
        self.started.remove(thing)
        return thing.stop(sig) if isinstance(thing, Daemon) else thing.stop()

    def stop_all(self) -> None:
        for thing in reversed(self.started):
            with contextlib.suppress(Exception):  # cleanup goes on; the test already reported
                thing.stop()
        self.started.clear()


def run_module(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` to completion, output captured (a one-shot command)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=DEADLINE,
    )  # fmt: skip


def run_ctl(tool: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``stafctl``/``stacctl`` as a process (``tool`` is the module name under stas.ctl)."""
    return run_module(f"stas.ctl.{tool}", env, *args)


def ctl_json(tool: str, env: dict[str, str], *args: str) -> Any:
    """The tool's ``--json`` output; a failure (daemon absent, error) fails the test."""
    out = run_ctl(tool, env, "--json", *args)
    if out.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} exited {out.returncode}: {out.stderr}")
    return json.loads(out.stdout)


def stafctl(env: dict[str, str], *args: str) -> Any:
    return ctl_json("stafctl", env, *args)


def stacctl(env: dict[str, str], *args: str) -> Any:
    return ctl_json("stacctl", env, *args)


def subnqns(env: dict[str, str]) -> set[str]:
    """The subsystem NQNs in all of stafd's cached log pages (stafd must answer)."""
    return {e["subnqn"] for dc in stafctl(env, "adlp") for e in dc["log-pages"]}


def connected(env: dict[str, str]) -> set[str]:
    """The subsystem NQNs stacd shows connected (stacd must answer)."""
    return {c["subsysnqn"] for c in stacctl(env, "ls", "-d") if c["connected"] == "True"}
