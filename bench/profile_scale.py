#!/usr/bin/env python3
"""Where benchmark (4)'s memory and time go: stacd (or stafd) under tracemalloc or py-spy.

Not a benchmark: a tool for finding what to fix. It starts the simulator, stafd and stacd as
``bench/daemons.py`` does (100 DCs x 100 subsystems by default), waits until stacd has
connected everything, then prints

- ``--trace stacd|stafd``: that daemon runs under tracemalloc (``-X tracemalloc=N``), and on
  SIGUSR1 writes its top allocation sites (by line, and by traceback) to a file, printed here;
- ``--py-spy stacd|stafd``: that daemon's cold start sampled by py-spy (if installed), the
  flat top of the profile printed;
- always: cold start time, both daemons' RSS and peak RSS (VmHWM: what a transient burst
  left behind shows as the gap), and the count of live objects by type in the traced daemon
  (with ``--trace``);
- ``--settle S``: the RSS again S seconds later (past 60 s, after the stafd client's full
  re-read that confirms removals: the steady state, not only the cold start's).

Tracing slows the daemon and adds its own memory: the RSS printed under ``--trace`` is not
the figure; run without options for clean times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from bench.daemons import _connected, dc_lines, wait_count, world  # noqa: E402
from bench.harness import Proc, SimProc  # noqa: E402
from bench.procstat import status_kb  # noqa: E402

# Run inside the traced daemon: dump the allocation sites on SIGUSR1, then carry on.
_HOOK = """
import gc, signal, sys, tracemalloc, collections
def _dump(signum, frame):
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    with open({out!r}, "w") as f:
        total = sum(s.size for s in snap.statistics("filename"))
        peak = tracemalloc.get_traced_memory()[1]
        print(f"traced total {{total / 2**20:.1f}} MiB, peak {{peak / 2**20:.1f}} MiB", file=f)
        print("--- by line", file=f)
        for s in snap.statistics("lineno")[:40]:
            print(f"{{s.size / 2**20:7.2f}} MiB {{s.count:8d}}  {{s.traceback[0]}}", file=f)
        print("--- by traceback (top 12)", file=f)
        for s in snap.statistics("traceback")[:12]:
            print(f"{{s.size / 2**20:7.2f}} MiB {{s.count:8d}}", file=f)
            for line in s.traceback.format()[-{depth} * 2:]:
                print("      " + line, file=f)
        counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        print("--- live gc objects by type (top 25)", file=f)
        for name, n in counts.most_common(25):
            print(f"{{n:9d}}  {{name}}", file=f)
signal.signal(signal.SIGUSR1, _dump)
"""


def traced_argv(argv: list[str], out: Path, depth: int) -> list[str]:
    """``python -m MOD ARGS`` -> the same under tracemalloc with the dump hook installed."""
    assert argv[1] == "-m"
    module = argv[2]
    code = _HOOK.format(out=str(out), depth=depth) + (
        f"import runpy, sys; sys.argv = [{module!r}] + {argv[3:]!r}; "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return [argv[0], "-X", f"tracemalloc={depth}", "-c", code]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dcs", type=int, default=100)
    ap.add_argument("--subsystems", type=int, default=100)
    ap.add_argument("--trace", choices=("stacd", "stafd"))
    ap.add_argument("--depth", type=int, default=6, help="traceback depth under --trace")
    ap.add_argument("--py-spy", dest="pyspy", choices=("stacd", "stafd"))
    ap.add_argument("--settle", type=float, default=0.0, metavar="S", help="RSS again after S s")
    args = ap.parse_args()
    total = args.dcs * args.subsystems
    with world() as (tmp, env, _address):
        sim = SimProc(tmp, "sim", harness.nvmet_conf(args.dcs, args.subsystems))
        procs: list[Proc] = [sim]
        dump = tmp / "trace.txt"
        spy_out = tmp / "spy.txt"
        try:
            dconf = "[Service Discovery]\nzeroconf=disabled\n[Controllers]\n" + dc_lines(sim.ports)
            t0 = time.monotonic()
            stafd = harness.stafd(tmp, env, dconf)
            procs.append(stafd)
            stacd = harness.stacd(tmp, env)
            procs.append(stacd)
            for name, p in (("stafd", stafd), ("stacd", stacd)):
                if args.trace == name:
                    p.stop()
                    procs.remove(p)
                    p = Proc(traced_argv(p.argv, dump, args.depth), env)
                    procs.append(p)
                    if name == "stafd":
                        stafd = p
                    else:
                        stacd = p
            spy = None
            if args.pyspy:
                exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                target = stafd if args.pyspy == "stafd" else stacd
                spy = subprocess.Popen(
                    [exe, "record", "-p", str(target.pid), "-f", "raw", "-o", str(spy_out),
                     "-r", "200", "--nonblocking"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            t_conv = wait_count(stacd, _connected, total, timeout=600)
            print(f"cold start -> {total:,} connected: {t_conv - t0:.1f} s")
            timeline(t0, stafd, stacd, args.dcs)
            time.sleep(2.0)
            print_rss(stafd, stacd)
            if args.settle:
                time.sleep(args.settle)
                print(f"after {args.settle:.0f} s more:")
                print_rss(stafd, stacd)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
                print_flat(spy_out)
            if args.trace:
                target = stafd if args.trace == "stafd" else stacd
                os.kill(target.pid, signal.SIGUSR1)
                for _ in range(600):
                    if dump.exists() and "live gc objects" in dump.read_text():
                        time.sleep(0.5)
                        break
                    time.sleep(0.1)
                print(dump.read_text())
        finally:
            for p in reversed(procs):
                p.stop()
    return 0


def print_rss(stafd: Proc, stacd: Proc) -> None:
    for name, p in (("stafd", stafd), ("stacd", stacd)):
        peak = status_kb(p.pid, "VmHWM")
        print(
            f"{name} RSS {p.rss_kb() / 1024:.1f} MB (peak {peak / 1024:.1f} MB),"
            f" CPU {p.cpu_seconds():.1f} s"
        )


def timeline(t0: float, stafd: Proc, stacd: Proc, dcs: int) -> None:
    """When each phase ended, from the daemons' own log lines (seconds after t0)."""

    def first(p: Proc, text: str) -> str:
        hits = [st for st, ln in p.log.lines if text in ln]
        return f"{hits[0] - t0:6.2f} s" if hits else "     -  "

    def nth(p: Proc, text: str, n: int) -> str:
        hits = [st for st, ln in p.log.lines if text in ln]
        return f"{hits[n - 1] - t0:6.2f} s" if len(hits) >= n else "     -  "

    print("timeline (s after both daemons were started):")
    print(f"  stafd first log line       {first(stafd, 'starting (pid')}")
    print(f"  stafd ready (D-Bus name)   {first(stafd, ' ready (host NQN')}")
    print(f"  stafd first DC connected   {first(stafd, 'connected (device')}")
    print(f"  stafd all {dcs} DCs connected {nth(stafd, 'connected (device', dcs)}")
    print(f"  stacd ready (D-Bus name)   {first(stacd, ' ready (host NQN')}")
    print(f"  stacd first I/O connected  {first(stacd, ': connected as nvme')}")
    lines = [st for st, ln in stacd.log.lines if ": connected as nvme" in ln]
    if len(lines) > 1:
        rate = (len(lines) - 1) / (lines[-1] - lines[0])
        print(f"  stacd last I/O connected   {lines[-1] - t0:6.2f} s ({rate:,.0f} connects/s)")


def print_flat(path: Path, top: int = 30) -> None:
    """py-spy's raw (collapsed) stacks -> own time per function and cumulative per function."""
    own: dict[str, int] = {}
    cum: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            cum[f] = cum.get(f, 0) + n
    print(f"py-spy: {samples} samples")
    print("--- own time")
    for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{n / samples * 100:5.1f} %  {f}")
    print("--- cumulative")
    for f, n in sorted(cum.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{n / samples * 100:5.1f} %  {f}")


if __name__ == "__main__":
    sys.exit(main())
