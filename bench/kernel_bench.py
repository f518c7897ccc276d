#!/usr/bin/env python3
"""Benchmarks on the real kernel beside nvme-cli (run in the VM: `make bench-kernel`).

Each figure is a median over a few runs, measured from outside by watching sysfs (what the
kernel really has), so the daemons and nvme-cli are timed the same way:
- cold start to the discovery controller connected: stafd vs `nvme discover -p`;
- cold start to all I/O controllers connected: stafd + stacd vs `nvme connect-all`;
- unlink reaching the kernel: stacd vs a script (nvme discover, then nvme disconnect);
- RSS of each daemon.
Figures under qemu software emulation are slower than on hardware for both sides alike.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NVMET = [PY, str(ROOT / "nvmet-harness/nvmet.py")]
SYS = Path("/sys/class/nvme")
ADDR = ["-t", "tcp", "-a", "::1", "-s", "8009"]
RUNS = int(os.environ.get("BENCH_RUNS", "3"))


def ctrls(kind: str) -> dict[str, str]:
    out = {}
    for d in SYS.glob("nvme*"):
        try:
            if (d / "cntrltype").read_text().strip() == kind and (
                d / "state"
            ).read_text().strip() == "live":
                out[(d / "subsysnqn").read_text().strip()] = d.name
        except OSError:
            pass
    return out


def wait(check: Callable[[], bool], timeout: float = 60) -> float:
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("timed out")
        time.sleep(0.005)
    return time.perf_counter() - t0


def reset() -> None:
    subprocess.run(["nvme", "disconnect-all"], capture_output=True)
    wait(lambda: not list(SYS.glob("nvme*")), 30)


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def rss_kb(proc: subprocess.Popen) -> int:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def median(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ms"


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from stas.dbus.testbus import private_bus

    run(*NVMET, "create")
    tmp = Path("/tmp/stas-bench")
    tmp.mkdir(exist_ok=True)
    (tmp / "stafd.conf").write_text(
        "[Service Discovery]\nzeroconf=disabled\n[Controllers]\n"
        "controller=transport=tcp;traddr=::1;trsvcid=8009\n"
        "[Discovery controller connection management]\npersistent-connections=false\n"
    )
    (tmp / "stacd.conf").write_text("")
    rows: dict[str, str] = {}
    with private_bus() as address:
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
        env.pop("NOTIFY_SOCKET", None)
        stafd_argv = [PY, "-m", "stas.main", "-f", str(tmp / "stafd.conf"), "--state-dir", str(tmp)]
        stacd_argv = [PY, "-m", "stas.stacd", "-f", str(tmp / "stacd.conf")]
        cli, ours = [], []
        for _ in range(RUNS):
            reset()
            t0 = time.perf_counter()
            run("nvme", "discover", "-p", *ADDR)
            wait(lambda: bool(ctrls("discovery")))
            cli.append(time.perf_counter() - t0)
            reset()
            (tmp / "last-known-config.json").unlink(missing_ok=True)
            t0 = time.perf_counter()
            stafd = start(stafd_argv, env)
            wait(lambda: bool(ctrls("discovery")))
            ours.append(time.perf_counter() - t0)
            stop(stafd)
        rows["cold start to DC connected: nvme discover -p"] = median(cli)
        rows["cold start to DC connected: stafd"] = median(ours)
        cli, ours = [], []
        for _ in range(RUNS):
            reset()
            t0 = time.perf_counter()
            run("nvme", "connect-all", *ADDR)
            wait(lambda: len(ctrls("io")) == 3)
            cli.append(time.perf_counter() - t0)
            reset()
            (tmp / "last-known-config.json").unlink(missing_ok=True)
            t0 = time.perf_counter()
            stafd, stacd = start(stafd_argv, env), start(stacd_argv, env)
            wait(lambda: len(ctrls("io")) == 3)
            ours.append(time.perf_counter() - t0)
            if _ == RUNS - 1:
                time.sleep(1)
                rows["stafd RSS (kernel backend, 1 DC)"] = f"{rss_kb(stafd) // 1024} MB"
                rows["stacd RSS (3 I/O controllers)"] = f"{rss_kb(stacd) // 1024} MB"
                break
            stop(stacd)
            stop(stafd)
        rows["cold start to 3 I/O controllers: nvme connect-all"] = median(cli)
        rows["cold start to 3 I/O controllers: stafd + stacd"] = median(ours)
        ours = []
        for _ in range(RUNS):  # daemons running: unlink/link reach the kernel
            run(*NVMET, "unlink", "-p", "1", "-s", "klingons")
            t0 = time.perf_counter()
            wait(lambda: "klingons" not in ctrls("io"))
            ours.append(time.perf_counter() - t0)
            run(*NVMET, "link", "-p", "1", "-s", "klingons")
            wait(lambda: "klingons" in ctrls("io"))
        rows["unlink reaches the kernel: stacd (after nvmet.py returns)"] = median(ours)
        stop(stacd)
        stop(stafd)
        cli = []
        for _ in range(RUNS):  # the scripted equivalent: discover, diff, disconnect
            reset()
            run("nvme", "connect-all", *ADDR)
            wait(lambda: len(ctrls("io")) == 3)
            run(*NVMET, "unlink", "-p", "1", "-s", "klingons")
            t0 = time.perf_counter()
            out = subprocess.run(["nvme", "discover", *ADDR], capture_output=True, text=True)
            if "klingons" not in out.stdout:
                run("nvme", "disconnect", "-n", "klingons")
            wait(lambda: "klingons" not in ctrls("io"))
            cli.append(time.perf_counter() - t0)
            run(*NVMET, "link", "-p", "1", "-s", "klingons")
        rows["unlink reaches the kernel: scripted nvme-cli"] = median(cli)
    reset()
    run(*NVMET, "clean")
    width = max(map(len, rows))
    for k, v in rows.items():
        print(f"{k.ljust(width)}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
