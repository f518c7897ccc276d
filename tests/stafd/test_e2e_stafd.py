"""stafd end to end with real parts: private dbus-daemon, simulator over NVMe/TCP on ::1,
mDNS on loopback, stafd and stafctl as processes, sd_notify over a real datagram socket."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIM = ROOT / "nvmet-harness" / "simulator.py"
SEED = {
    "klingons",
    "starfleet",
    "nqn.1988-11.com.dell:PowerSANxxx:01:20210225100113-454f73093ceb4847a7bdfc6e34ae8e28",
}
WK = "nqn.2014-08.org.nvmexpress.discovery"


def wait_for(what: str, check: Callable[[], object], timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Simulator:
    def __init__(self, tmp: Path, name: str, *, mdns: bool = False) -> None:
        self.control = str(tmp / f"{name}.sock")
        argv = [
            sys.executable,
            str(SIM),
            "serve",
            "-f",
            str(ROOT / "nvmet-harness/nvmet.conf"),
            "--ephemeral",
            "--control",
            self.control,
        ] + (["--mdns"] if mdns else [])
        self.log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline().decode()  # "listening on [::1]:PORT (port 1)"
        assert "listening on" in line, line
        self.port = line.split("]:", 1)[1].split(" ", 1)[0]
        wait_for("simulator control socket", lambda: os.path.exists(self.control))

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, str(SIM), *args, "--control", self.control],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self.log.close()


class Stafd:
    def __init__(self, tmp: Path, env: dict[str, str], extra: list[str] | None = None) -> None:
        self.tmp, self.env = tmp, env
        self.log = open(tmp / "stafd.log", "ab")  # noqa: SIM115 - closed in stop()
        argv = [
            sys.executable,
            "-m",
            "stas.main",
            "-f",
            str(tmp / "stafd.conf"),
            "--sys-conf",
            str(tmp / "sys.conf"),
            "--state-dir",
            str(tmp / "state"),
            *(extra or []),
        ]
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=self.log, cwd=ROOT)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(10)
        self.log.close()
        return rc


@pytest.fixture
def world(tmp_path: Path, bus_address: str) -> Iterator[dict]:
    (tmp_path / "hostnqn").write_text(
        "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10\n"
    )
    (tmp_path / "hostid").write_text("0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10\n")
    (tmp_path / "sys.conf").write_text(
        f"[Host]\nnqn=file://{tmp_path}/hostnqn\nid=file://{tmp_path}/hostid\n"
    )
    env = dict(
        os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus_address, STAS_SYS_CONF=str(tmp_path / "sys.conf")
    )
    env.pop("NOTIFY_SOCKET", None)
    started: list = []
    yield {"tmp": tmp_path, "env": env, "started": started}
    for thing in reversed(started):
        with contextlib.suppress(Exception):  # cleanup goes on; the test already reported
            thing.stop()


def stafctl(env: dict[str, str], *args: str) -> object:
    out = subprocess.run(
        [sys.executable, "-m", "stas.ctl.stafctl", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    return json.loads(out.stdout) if out.returncode == 0 else None


def subnqns(env: dict[str, str]) -> set[str]:
    doc = stafctl(env, "adlp") or []
    return {e["subnqn"] for dc in doc for e in dc["log-pages"]}


def test_seed_workflow_reload_and_warm_restart(world) -> None:
    tmp, env = world["tmp"], world["env"]
    sim = Simulator(tmp, "sim1")
    world["started"].append(sim)
    (tmp / "stafd.conf").write_text(
        "[Global]\ntron=true\n[Service Discovery]\nzeroconf=disabled\n"
        f"[Controllers]\ncontroller=transport=tcp;traddr=localhost;trsvcid={sim.port}\n"
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify"))
    notify.settimeout(10)
    env = dict(env, NOTIFY_SOCKET=str(tmp / "notify"))
    stafd = Stafd(tmp, env)
    assert notify.recv(4096).startswith(b"READY=1")
    # READY=1 comes after the bus name is owned: stafctl answers at once, no waiting
    assert isinstance(stafctl(env, "ls"), list)

    # stafctl ls: the seed's localhost line reaches the DC listening on ::1 only
    ls = wait_for("stafctl ls", lambda: stafctl(env, "ls"))
    assert [(d["transport"], d["traddr"], d["trsvcid"], d["subsysnqn"]) for d in ls] == [
        ("tcp", "::1", sim.port, WK)
    ]
    assert wait_for("three subsystems", lambda: subnqns(env) == SEED)

    # unlink: the AEN makes stafd refetch; stafctl shows two within a second
    sim.cli("unlink", "-p", "1", "-s", "klingons")
    t0 = time.monotonic()
    wait_for("klingons gone", lambda: subnqns(env) == SEED - {"klingons"}, timeout=1.0)
    assert time.monotonic() - t0 < 1.0
    sim.cli("link", "-p", "1", "-s", "klingons")
    wait_for("klingons back", lambda: subnqns(env) == SEED, timeout=2.0)

    # SIGHUP with a second controller= line adds that DC
    sim2 = Simulator(tmp, "sim2")
    world["started"].append(sim2)
    with (tmp / "stafd.conf").open("a") as f:
        f.write(f"controller=transport=tcp;traddr=::1;trsvcid={sim2.port}\n")
    stafd.proc.send_signal(signal.SIGHUP)
    assert notify.recv(4096) == b"RELOADING=1"
    assert notify.recv(4096).startswith(b"READY=1")
    wait_for("second DC", lambda: len(stafctl(env, "ls") or []) == 2)

    # SIGTERM, storage gone, restart: the cached log pages are there before any reconnect
    assert stafd.stop() == 0
    assert notify.recv(4096) == b"STOPPING=1"
    sim.stop()
    sim2.stop()
    world["started"].clear()
    stafd2 = Stafd(tmp, env)
    world["started"].append(stafd2)
    assert notify.recv(4096).startswith(b"READY=1")
    assert subnqns(env) == SEED
    details = stafctl(env, "ls", "-d")
    assert {d["connected"] for d in details} == {"False"}
    notify.close()


def test_mdns_discovery(world) -> None:
    tmp, env = world["tmp"], world["env"]
    sim = Simulator(tmp, "simm", mdns=True)
    world["started"].append(sim)
    (tmp / "stafd.conf").write_text("[Service Discovery]\nzeroconf=enabled\n")
    stafd = Stafd(tmp, env, ["--mdns-interfaces", "127.0.0.1"])
    world["started"].append(stafd)

    def found() -> object:
        return [d for d in stafctl(env, "ls", "-d") or [] if d["trsvcid"] == sim.port]

    (dc,) = wait_for("mDNS-discovered DC", found, timeout=15)
    assert dc["origin"] == "discovered" and dc["traddr"] == "::1" and dc["host-iface"] == "lo"
    assert wait_for("its log page", lambda: subnqns(env) >= SEED)


def test_unreadable_config_on_reload_keeps_the_running_one(world) -> None:
    tmp, env = world["tmp"], world["env"]
    sim = Simulator(tmp, "simr")
    world["started"].append(sim)
    conf = tmp / "stafd.conf"
    conf.write_text(
        "[Service Discovery]\nzeroconf=disabled\n"
        f"[Controllers]\ncontroller=transport=tcp;traddr=::1;trsvcid={sim.port}\n"
    )
    stafd = Stafd(tmp, env)
    world["started"].append(stafd)
    wait_for("the DC", lambda: subnqns(env) == SEED)
    conf.write_bytes(b"\x00\xff not a config file")
    stafd.proc.send_signal(signal.SIGHUP)
    log = tmp / "stafd.log"
    wait_for("the reload refusal", lambda: "keeping the running configuration" in log.read_text())
    assert str(conf) in log.read_text() and "Traceback" not in log.read_text()
    assert stafd.proc.poll() is None and subnqns(env) == SEED
    world["started"].remove(stafd)
    assert stafd.stop(signal.SIGINT) == 0
    assert "SIGINT: stopping" in log.read_text()
