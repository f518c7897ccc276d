#!/usr/bin/env python3
"""Benchmarks on the real kernel beside nvme-cli (run in the VM: `make bench-kernel`).

Every figure is measured from outside, by watching sysfs (what the kernel really has), so the
daemons and nvme-cli are timed the same way, in the same boot, interleaved:
- cold start to the discovery controller connected: stafd vs `nvme discover -p`;
- scale (issue 8): 3, 50 and 200 subsystems (one null_blk namespace each), cold start to every
  I/O controller live: stafd + stacd vs `nvme connect-all`; stacd's sysfs opens per connect
  (strace, or an audit hook when strace is missing); the check fails (exit 1) when 200
  subsystems cost stacd more than 5x what 50 cost (linear is 4x, quadratic 16x);
  opens are counted by a Python audit hook in stacd (all its sysfs reads are Python's), or by
  ``strace -f`` with BENCH_STRACE=1 (C code included, but far slower under emulation);
- reactions with the daemons running: unlink -> gone, re-link -> back, a new subsystem linked
  -> connected; and the scripted nvme-cli equivalent of the unlink (discover, disconnect);
- RSS of each daemon at 3 and at the largest scale;
- the kernel's own floor at each scale, in the same boot: the same connects written to
  /dev/nvme-fabrics one after another by a shell loop (no library, no discovery). The kernel
  holds one mutex (nvmf_dev_mutex) across the whole of each connect, so no amount of
  parallelism gets under it; our figure is printed as floor + overhead.
Medians with min-max over BENCH_RUNS runs (3); BENCH_SCALES=3,50,200 chooses the scales.
Under qemu software emulation everything is slower than on hardware, both sides alike.
"""

from __future__ import annotations

import os
import shutil
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
SCALES = tuple(int(x) for x in os.environ.get("BENCH_SCALES", "3,50,200").split(","))
TMP = Path("/tmp/stas-bench")
LOGS = Path(os.environ.get("BENCH_LOGS", str(TMP)))  # daemons' stderr (runner.py --share DIR)
LINEAR_LIMIT = 5.0  # stacd at 200 subsystems may cost at most 5x its cost at 50
SEED = (
    "nqn.1988-11.com.dell:PowerSANxxx:01:20210225100113-454f73093ceb4847a7bdfc6e34ae8e28",
    "klingons",
    "starfleet",
)
AUDIT_WRAPPER = """
import atexit, runpy, sys
path = sys.argv.pop(1)
count = [0]
def hook(event, args):
    if event == "open" and str(args[0]).startswith("/sys/"):
        count[0] += 1
sys.addaudithook(hook)
atexit.register(lambda: open(path, "w").write(str(count[0])))
sys.argv[0] = "stacd"
runpy.run_module("stas.stacd", run_name="__main__")
"""


# --- measuring -------------------------------------------------------------------------------


def live(kind: str) -> dict[str, str]:
    """subsysnqn -> device of every live controller of ``kind`` ('io' or 'discovery')."""
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


def io_live(n: int) -> Callable[[], bool]:
    """A cheap check: count directories first, read attributes only once enough exist."""
    return lambda: len(list(SYS.glob("nvme*"))) >= n and len(live("io")) >= n


def wait(check: Callable[[], bool], timeout: float = 600, poll: float = 0.01) -> float:
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("timed out")
        time.sleep(poll)
    return time.perf_counter() - t0


def fmt(xs: list[float]) -> str:
    """Median (min-max), in ms under 10 s, else in s."""
    med, lo, hi = statistics.median(xs), min(xs), max(xs)
    if hi < 10:
        return f"{med * 1000:,.0f} ms ({lo * 1000:,.0f}-{hi * 1000:,.0f})"
    return f"{med:.1f} s ({lo:.1f}-{hi:.1f})"


def rss_mb(proc: subprocess.Popen) -> str:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return f"{int(line.split()[1]) // 1024} MB"
    return "?"


# --- driving -----------------------------------------------------------------------------------


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def reset() -> None:
    subprocess.run(["nvme", "disconnect-all"], capture_output=True)
    wait(lambda: not list(SYS.glob("nvme*")), 120)


def start(argv: list[str], env: dict[str, str], log: str) -> subprocess.Popen:
    with open(LOGS / f"{log}.log", "ab") as err:
        return subprocess.Popen(argv, env=env, stdout=err, stderr=err)


def stop(*procs: subprocess.Popen) -> None:
    """SIGTERM each (under strace: its child, the daemon), then wait."""
    for proc in procs:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        pids = children.read_text().split() if proc.args[0] == "strace" else []
        for pid in pids or [str(proc.pid)]:
            os.kill(int(pid), signal.SIGTERM)
    for proc in procs:
        proc.wait(60)


def names_of(n: int) -> list[str]:
    return list(SEED[:n]) + [f"nqn.2026-01.io.bench:s{i:03d}" for i in range(n - len(SEED))]


def floor_script(n: int) -> str:
    """A shell loop writing ``n`` connects to /dev/nvme-fabrics, one after another.

    The options are the ones a connect cannot do without (plus the host identity nvme-cli
    would send, when /etc/nvme has one): the kernel's serialized cost and nothing else.
    """
    ident = ""
    nqn_file, id_file = Path("/etc/nvme/hostnqn"), Path("/etc/nvme/hostid")
    if nqn_file.exists() and id_file.exists():
        ident = f",hostnqn={nqn_file.read_text().strip()},hostid={id_file.read_text().strip()}"
    lines = [
        f"echo 'transport=tcp,traddr=::1,trsvcid=8009,nqn={nqn}{ident}' > /dev/nvme-fabrics"
        for nqn in names_of(n)
    ]
    return "\n".join(lines) + "\n"


def write_target(n: int, *, spare: bool = False) -> Path:
    """An nvmet.conf with ``n`` subsystems on port 1 (::1/8009); ``spare``: one more, unlinked."""
    names = names_of(n)
    subs = [{"subsysnqn": nqn, "port": 1, "namespaces": [1]} for nqn in names]
    if spare:
        subs.append({"subsysnqn": "romulans", "port": None, "namespaces": [1]})
    conf = {
        "ports": [{"id": 1, "adrfam": "ipv6", "traddr": "::1", "trsvcid": 8009, "trtype": "tcp"}],
        "subsystems": subs,
    }
    path = TMP / f"nvmet-{n}.conf"
    path.write_text(repr(conf) + "\n")
    return path


class Bench:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.stafd = [PY, "-m", "stas.main", "-f", str(TMP / "stafd.conf"), "--state-dir", str(TMP)]
        self.stacd = [PY, "-m", "stas.stacd", "-f", str(TMP / "stacd.conf")]
        self.rows: list[tuple[str, str, str]] = []
        self.medians: dict[int, tuple[float, float]] = {}  # n -> (nvme-cli, stafd + stacd)
        self.shown = {"stafd": "python " + " ".join(self.stafd[1:]),
                      "stacd": "python " + " ".join(self.stacd[1:])}  # fmt: skip
        self.failed: list[str] = []

    def row(self, what: str, value: str, command: str) -> None:
        self.rows.append((what, value, command))
        print(f"  {what}: {value}", flush=True)

    def daemons(self) -> tuple[subprocess.Popen, subprocess.Popen]:
        return start(self.stafd, self.env, "stafd"), start(self.stacd, self.env, "stacd")

    def cold(self) -> None:
        (TMP / "last-known-config.json").unlink(missing_ok=True)

    def discovery(self) -> None:
        cli, ours = [], []
        for _ in range(RUNS):
            reset()
            t0 = time.perf_counter()
            run("nvme", "discover", "-p", *ADDR)
            wait(lambda: bool(live("discovery")))
            cli.append(time.perf_counter() - t0)
            reset()
            self.cold()
            t0 = time.perf_counter()
            stafd = start(self.stafd, self.env, "stafd")
            wait(lambda: bool(live("discovery")))
            ours.append(time.perf_counter() - t0)
            stop(stafd)
        self.row("cold start -> DC live: nvme-cli", fmt(cli), "nvme discover -p " + " ".join(ADDR))
        self.row("cold start -> DC live: stafd", fmt(ours), self.shown["stafd"])

    def scale(self, n: int) -> float:
        """Cold start -> n I/O controllers live; returns stacd's median."""
        run(*NVMET, "create", "-f", str(write_target(n)))
        script = TMP / f"floor-{n}.sh"
        script.write_text(floor_script(n))
        cli, ours, floor = [], [], []
        rss = ("?", "?")
        for i in range(RUNS):
            reset()
            t0 = time.perf_counter()
            run("sh", str(script))
            wait(io_live(n))
            floor.append(time.perf_counter() - t0)
            reset()
            t0 = time.perf_counter()
            run("nvme", "connect-all", *ADDR)
            wait(io_live(n))
            cli.append(time.perf_counter() - t0)
            reset()
            self.cold()
            t0 = time.perf_counter()
            stafd, stacd = self.daemons()
            wait(io_live(n))
            ours.append(time.perf_counter() - t0)
            if i == RUNS - 1:
                time.sleep(1)
                rss = (rss_mb(stafd), rss_mb(stacd))
            stop(stacd, stafd)
        med_cli, med_ours = statistics.median(cli), statistics.median(ours)
        med_floor = statistics.median(floor)
        self.medians[n] = (med_cli, med_ours)
        self.row(f"{n} subsystems: kernel floor (serialized writes to /dev/nvme-fabrics)",
                 fmt(floor), f"sh {script} (one echo per subsystem)")  # fmt: skip
        self.row(f"{n} subsystems: cold start -> all live: nvme-cli", fmt(cli),
                 "nvme connect-all " + " ".join(ADDR))  # fmt: skip
        self.row(f"{n} subsystems: cold start -> all live: stafd + stacd", fmt(ours),
                 f"{self.shown['stafd']} & {self.shown['stacd']}")  # fmt: skip
        self.row(f"{n} subsystems: floor + overhead: nvme-cli / stafd + stacd",
                 f"{med_floor:.1f} s + {med_cli - med_floor:.1f} s / "
                 f"{med_floor:.1f} s + {med_ours - med_floor:.1f} s", "")  # fmt: skip
        self.row(f"{n} subsystems: stacd / nvme-cli", f"{med_ours / med_cli:.2f}x", "")
        self.row(f"{n} subsystems: per controller: nvme-cli / stacd",
                 f"{med_cli / n * 1000:.0f} ms / {med_ours / n * 1000:.0f} ms", "")  # fmt: skip
        self.row(f"{n} subsystems: RSS stafd / stacd", f"{rss[0]} / {rss[1]}", "")
        self.opens(n)
        reset()
        run(*NVMET, "clean")
        return med_ours

    def opens(self, n: int) -> None:
        """stacd's opens of /sys files during one cold start to n live, per connect."""
        reset()
        self.cold()
        out = TMP / f"opens-{n}"
        out.unlink(missing_ok=True)
        if os.environ.get("BENCH_STRACE") == "1" and shutil.which("strace"):  # slow under TCG
            how = "strace -f -e trace=open,openat"
            argv = ["strace", "-f", "-qq", "-e", "trace=open,openat", "-o", str(out), *self.stacd]
        else:
            how = "audit hook"
            argv = [PY, "-c", AUDIT_WRAPPER, str(out), *self.stacd[3:]]
        shown = " ".join(argv) if argv[0] == "strace" else f"{self.shown['stacd']} (audit hook)"
        stafd, stacd = start(self.stafd, self.env, "stafd"), start(argv, self.env, "stacd")
        wait(io_live(n))
        time.sleep(1)
        stop(stacd, stafd)
        text = out.read_text()
        if how == "audit hook":
            total = int(text or 0)
        else:
            total = sum('"/sys/' in line for line in text.splitlines())
        self.row(f"{n} subsystems: stacd sysfs opens (cold start, {how})",
                 f"{total:,} = {total / n:.1f} per connect", shown)  # fmt: skip

    def reactions(self) -> None:
        run(*NVMET, "create", "-f", str(write_target(3, spare=True)))
        reset()
        self.cold()
        stafd, stacd = self.daemons()
        wait(io_live(3))
        gone, back, new = [], [], []
        for _ in range(RUNS):
            run(*NVMET, "unlink", "-p", "1", "-s", "klingons")
            gone.append(wait(lambda: "klingons" not in live("io"), 60, 0.002))
            run(*NVMET, "link", "-p", "1", "-s", "klingons")
            back.append(wait(lambda: "klingons" in live("io"), 60, 0.002))
            run(*NVMET, "link", "-p", "1", "-s", "romulans")
            new.append(wait(lambda: "romulans" in live("io"), 60, 0.002))
            run(*NVMET, "unlink", "-p", "1", "-s", "romulans")
            wait(lambda: "romulans" not in live("io"))
        stop(stacd, stafd)
        after = "(after nvmet.py returns)"
        self.row(f"unlink -> gone: stacd {after}", fmt(gone), "nvmet.py unlink -p 1 -s klingons")
        self.row(f"re-link -> live: stacd {after}", fmt(back), "nvmet.py link -p 1 -s klingons")
        self.row(f"new subsystem -> live: stacd {after}", fmt(new),
                 "nvmet.py link -p 1 -s romulans")  # fmt: skip
        cli = []
        for _ in range(RUNS):  # the scripted equivalent: discover, diff, disconnect
            reset()
            run("nvme", "connect-all", *ADDR)
            wait(io_live(3))
            run(*NVMET, "unlink", "-p", "1", "-s", "klingons")
            t0 = time.perf_counter()
            out = subprocess.run(["nvme", "discover", *ADDR], capture_output=True, text=True)
            if "klingons" not in out.stdout:
                run("nvme", "disconnect", "-n", "klingons")
            wait(lambda: "klingons" not in live("io"), 60, 0.002)
            cli.append(time.perf_counter() - t0)
            run(*NVMET, "link", "-p", "1", "-s", "klingons")
        self.row("unlink -> gone: scripted nvme-cli", fmt(cli),
                 "nvme discover; nvme disconnect -n klingons")  # fmt: skip
        reset()
        run(*NVMET, "clean")

    def linearity(self, costs: dict[int, float]) -> None:
        """The 200/50 check, and the cost of each controller beyond the smallest scale.

        The marginal figure leaves out what does not depend on the count (process start-up,
        the discovery controller), which dominates the totals under emulation.
        """
        base = min(self.medians)
        for n, (cli, ours) in sorted(self.medians.items()):
            if n == base:
                continue
            b_cli, b_ours = self.medians[base]
            self.row(f"{n} subsystems: each controller beyond {base}: nvme-cli / stacd",
                     f"{(cli - b_cli) / (n - base) * 1000:.0f} ms / "
                     f"{(ours - b_ours) / (n - base) * 1000:.0f} ms", "")  # fmt: skip
        if 50 not in costs or 200 not in costs:
            return
        ratio = costs[200] / costs[50]
        verdict = "PASS" if ratio <= LINEAR_LIMIT else "FAIL"
        self.row("linearity: stacd 200 / 50 subsystems (linear 4x, limit 5x)",
                 f"{ratio:.2f}x {verdict}", "")  # fmt: skip
        if verdict == "FAIL":
            self.failed.append(f"stacd at 200 subsystems costs {ratio:.1f}x its 50 figure")


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from stas.dbus.testbus import private_bus

    TMP.mkdir(exist_ok=True)
    LOGS.mkdir(exist_ok=True)
    (TMP / "stafd.conf").write_text(
        "[Service Discovery]\nzeroconf=disabled\n[Controllers]\n"
        "controller=transport=tcp;traddr=::1;trsvcid=8009\n"
        "[Discovery controller connection management]\npersistent-connections=false\n"
    )
    (TMP / "stacd.conf").write_text("")
    with private_bus() as address:
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
        env.pop("NOTIFY_SOCKET", None)
        bench = Bench(env)
        print(f"runs per figure: {RUNS}; scales: {SCALES}", flush=True)
        run(*NVMET, "create", "-f", str(write_target(3)))
        bench.discovery()
        reset()
        run(*NVMET, "clean")
        costs = {n: bench.scale(n) for n in SCALES}
        bench.linearity(costs)
        bench.reactions()
    width = max(len(r[0]) for r in bench.rows)
    print()
    for what, value, command in bench.rows:
        print(f"{what.ljust(width)}  {value}" + (f"   [{command}]" if command else ""))
    for problem in bench.failed:
        print(f"FAIL: {problem}")
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
