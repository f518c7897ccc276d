"""stacd end to end: simulator -> stafd (userspace) -> D-Bus -> stacd (fake kernel) -> stacctl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_e2e_stafd import SEED, Simulator, Stafd, wait_for

ROOT = Path(__file__).resolve().parents[2]


def stacctl(env: dict[str, str], *args: str) -> object:
    out = subprocess.run(
        [sys.executable, "-m", "stas.ctl.stacctl", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    return json.loads(out.stdout) if out.returncode == 0 else None


def connected(env: dict[str, str]) -> set[str]:
    return {c["subsysnqn"] for c in stacctl(env, "ls", "-d") or [] if c["connected"] == "True"}


class Stacd:
    def __init__(self, tmp: Path, env: dict[str, str], *extra: str) -> None:
        self.log = open(tmp / "stacd.log", "ab")  # noqa: SIM115 - closed in stop()
        argv = [
            sys.executable,
            "-m",
            "stas.stacd",
            "-f",
            str(tmp / "stacd.conf"),
            "--sys-conf",
            str(tmp / "sys.conf"),
            "--kernel",
            "fake",
            *extra,
        ]
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=self.log, cwd=ROOT)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(10)
        self.log.close()
        return rc


def test_stacd_follows_stafd_and_survives_its_absence(world) -> None:
    tmp, env = world["tmp"], world["env"]
    sim = Simulator(tmp, "sim")
    world["started"].append(sim)
    (tmp / "stafd.conf").write_text(
        "[Service Discovery]\nzeroconf=disabled\n"
        f"[Controllers]\ncontroller=transport=tcp;traddr=localhost;trsvcid={sim.port}\n"
    )
    (tmp / "stacd.conf").write_text("[Global]\ntron=true\n")
    stacd = Stacd(tmp, env)  # started before stafd, like a slow stafd start
    world["started"].append(stacd)
    time.sleep(0.5)
    assert connected(env) == set()
    stafd = Stafd(tmp, env)
    world["started"].append(stafd)
    wait_for("stacctl ls shows the three I/O controllers", lambda: connected(env) == SEED)
    (ioc,) = [c for c in stacctl(env, "ls") if c["subsysnqn"] == "klingons"]
    assert (ioc["traddr"], ioc["trsvcid"], ioc["transport"]) == ("::1", sim.port, "tcp")

    sim.cli("unlink", "-p", "1", "-s", "klingons")
    wait_for("klingons disconnected", lambda: connected(env) == SEED - {"klingons"}, timeout=2)

    # stafd goes away for a while: nothing is disconnected
    world["started"].remove(stafd)
    assert stafd.stop() == 0
    time.sleep(1.0)
    assert connected(env) == SEED - {"klingons"}

    # stafd back (warm, from its cache) and klingons linked again
    sim.cli("link", "-p", "1", "-s", "klingons")
    stafd2 = Stafd(tmp, env)
    world["started"].append(stafd2)
    wait_for("klingons back", lambda: connected(env) == SEED, timeout=10)


def test_dry_run_prints_the_plan(world) -> None:
    tmp, env = world["tmp"], world["env"]
    (tmp / "stacd.conf").write_text(
        "[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.9;trsvcid=4420;nqn=vol\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stas.stacd",
            "-f",
            str(tmp / "stacd.conf"),
            "--sys-conf",
            str(tmp / "sys.conf"),
            "--dry-run",
            "--kernel",
            "fake",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "connect     (tcp, 10.0.0.9, 4420, vol)  <- configured in stacd.conf" in out.stdout
    assert "stafd not reachable" in out.stdout
    assert os.path.exists(tmp / "stacd.conf")


def test_stacctl_plan_uses_stafd_pages(world) -> None:
    tmp, env = world["tmp"], world["env"]
    sim = Simulator(tmp, "simp")
    world["started"].append(sim)
    (tmp / "stafd.conf").write_text(
        "[Service Discovery]\nzeroconf=disabled\n"
        f"[Controllers]\ncontroller=transport=tcp;traddr=::1;trsvcid={sim.port}\n"
    )
    (tmp / "stacd.conf").write_text("[Controllers]\nexclude=nqn=starfleet\n")
    world["started"].append(Stafd(tmp, env))
    wait_for("stafd has the pages", lambda: stafctl_pages(env) == 3)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stas.ctl.stacctl",
            "plan",
            "-f",
            str(tmp / "stacd.conf"),
            "--sys-conf",
            str(tmp / "sys.conf"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 2, out.stdout + out.stderr
    assert all(ln.startswith("connect ") and "listed by DC (tcp, ::1" in ln for ln in lines)
    assert not any("starfleet" in ln for ln in lines)


def stafctl_pages(env: dict[str, str]) -> int:
    out = subprocess.run(
        [sys.executable, "-m", "stas.ctl.stafctl", "--json", "adlp"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    return sum(len(dc["log-pages"]) for dc in json.loads(out.stdout)) if out.returncode == 0 else 0
