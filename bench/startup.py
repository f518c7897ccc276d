#!/usr/bin/env python3
"""Start-up, memory and idle cost of the INSTALLED daemons (issue 8), beside their targets.

What users run is the `make install` layout (launchers in PREFIX/sbin, the package and its
dependencies in PREFIX/lib/nvme-stas, the launchers' interpreter), not the editable `.venv`
(whose import finder costs every process extra). So this benchmark installs into a scratch
PREFIX with scripts/install.py (what `make install` runs; cached in .build/startup-install,
the stas package refreshed on every run), byte-compiles it with the launchers' interpreter as
a distribution package would, and measures:

  imports        `python -X importtime`, the daemon's own imports as stas.main does them
                 (the launchers' interpreter options, logging's deferred modules, attrs' code
                 recorded at install; interpreter start-up excluded and shown apart): median
                 total and the top 10 by cumulative time; instructions with valgrind
  first log line process start -> its first line on stdout
  D-Bus name     process start -> NameOwnerChanged for its name on a private dbus-daemon
  RSS            stafd (userspace host, simulator DC with N subsystems) and stacd (`--kernel
                 fake`, N I/O controllers connected), N = 3 and 50, settled
  idle CPU       utime+stime of each daemon over a window after convergence, per 60 s

    .venv/bin/python bench/startup.py [--quick] [--runs N] [--idle S] [--layout venv]

A MISS is printed, never raised (benchmarks are not tests).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from bench.harness import Proc, SimProc  # noqa: E402
from bench.install_layout import INSTALL_PYTHON, install_into  # noqa: E402
from bench.report import Row, failed, table  # noqa: E402

CACHE = ROOT / ".build" / "startup-install"
BUS_NAMES = {"stafd": "org.nvmexpress.staf", "stacd": "org.nvmexpress.stac"}
IMPORT_TARGET_S = 0.100
FIRST_LINE_TARGET_S = 0.300
RSS_TARGET_MB = 25.0
IDLE_TARGET_S = 0.05  # CPU seconds per 60 s


class Layout:
    """How to start each daemon and which interpreter/library path its imports use."""

    def __init__(self, name: str, python: str, libdir: str | None, launchers: dict[str, list[str]],
                 flags: Sequence[str] = ()):  # fmt: skip
        self.name = name
        self.python = python
        self.flags = list(flags)  # the launchers' interpreter options (-S when bundled)
        self.libdir = libdir
        self.launchers = launchers

    @property
    def argv(self) -> list[str]:
        return [self.python, *self.flags]

    def import_code(self, prog: str) -> str:
        """What the launcher imports, as stas.main does: the deferred imports' stand-ins, then
        logging, then the daemon's modules (with attrs' recorded code)."""
        return self.as_daemon(f"import stas.{prog}")

    def as_daemon(self, imports: str) -> str:
        """``imports`` as the daemons import (a fair floor: the same deferrals and table)."""
        path = f"import sys; sys.path.insert(0, {self.libdir!r}); " if self.libdir else ""
        return path + (
            "import stas.main; stas.main._defer_imports()\n"
            "import stas.logsetup\n"
            "with stas.main._recorded_attrs_code():\n"
            "    stas.main._import_trio()\n"
            f"    {imports}"
        )


def installed_layout() -> Layout:
    """`make install` into .build/startup-install (full once per pyproject.toml, stas refreshed)."""
    prefix = install_into(CACHE, INSTALL_PYTHON)
    lib = prefix / "lib" / "nvme-stas"
    sbin = prefix / "sbin"
    shebang = (sbin / "stafd").read_text().splitlines()[0].removeprefix("#!").split()
    return Layout("installed", shebang[0], str(lib),
                  {p: [str(sbin / p)] for p in ("stafd", "stacd")}, flags=shebang[1:])  # fmt: skip


def venv_layout() -> Layout:
    bindir = ROOT / ".venv" / "bin"
    return Layout("venv", str(bindir / "python"), None,
                  {p: [str(bindir / p)] for p in ("stafd", "stacd")})  # fmt: skip


# --- imports -----------------------------------------------------------------------------------

_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def parse_importtime(text: str) -> list[tuple[str, int, int, int]]:
    """(module, self us, cumulative us, depth) per `-X importtime` line."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append((m.group(4), int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2))
    return out


def _importtime(python: Sequence[str], code: str) -> list[tuple[str, int, int, int]]:
    res = subprocess.run([*python, "-X", "importtime", "-c", code], capture_output=True,
                         text=True, cwd=tempfile.gettempdir(), check=True)  # fmt: skip
    return parse_importtime(res.stderr)


def bench_imports(layout: Layout, prog: str, runs: int) -> list[Row]:
    """Median of the daemon's own imports; top 10 by cumulative from the median run."""
    startup = {m for m, _, _, d in _importtime(layout.argv, "pass") if d == 0}
    totals, interp, per_run, cpu = [], [], [], []
    timed = ("import time; t0 = time.process_time(); " + layout.import_code(prog)
             + "\nprint(time.process_time() - t0)")  # fmt: skip
    for _ in range(runs):
        res = subprocess.run([*layout.argv, "-c", timed], capture_output=True, text=True,
                             cwd=tempfile.gettempdir(), check=True)  # fmt: skip
        cpu.append(float(res.stdout.split()[-1]))
        lines = _importtime(layout.argv, layout.import_code(prog))
        own = [ln for ln in lines if not (ln[3] == 0 and ln[0] in startup)]
        totals.append(sum(c for _, _, c, d in own if d == 0) / 1e6)
        interp.append(sum(c for m, _, c, d in lines if d == 0 and m in startup) / 1e6)
        per_run.append(own)
    med = statistics.median(totals)
    run = per_run[min(range(runs), key=lambda i: abs(totals[i] - med))]
    roots = {m for m, _, _, d in run if d == 0}
    top = sorted((ln for ln in run if ln[0] not in roots), key=lambda ln: -ln[2])[:10]
    top_text = ", ".join(f"{m} {c / 1000:.1f}" for m, _, c, _ in top)
    return [
        Row(
            f"{prog}: imports (-X importtime, {layout.name} layout)",
            totals,
            target=f"<= {IMPORT_TARGET_S * 1000:.0f} ms",
            passed=med <= IMPORT_TARGET_S,
            note=f"{len(run)} modules; CPU time of the same imports "
            f"{statistics.median(cpu) * 1000:.1f} ms; interpreter start-up apart: "
            f"{statistics.median(interp) * 1000:.1f} ms; top 10 cumulative (ms): {top_text}",
        )
    ]


FLOOR_CODE = "import trio, trio_util, jeepney, attrs, argparse, logging"


def instructions(python: Sequence[str], code: str) -> int:
    """Instructions executed by ``python -c code`` (valgrind): a figure load cannot move."""
    res = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          *python, "-c", code], capture_output=True, text=True,
                         cwd=tempfile.gettempdir())  # fmt: skip
    m = re.search(r"Collected : (\d+)", res.stderr)
    if m is None:
        raise RuntimeError(f"valgrind: {res.stderr.strip()[-300:]}")
    return int(m.group(1))


def bench_instructions(layout: Layout) -> list[Row]:
    """The daemons' imports in instructions, beside the floor every trio daemon pays."""
    from concurrent.futures import ThreadPoolExecutor

    codes = {"floor": layout.as_daemon(FLOOR_CODE), "python": "pass"}
    codes |= {p: layout.import_code(p) for p in ("stafd", "stacd")}
    with ThreadPoolExecutor(len(codes)) as pool:
        counts = dict(zip(codes, pool.map(lambda c: instructions(layout.argv, c),
                                          codes.values()), strict=True))  # fmt: skip
    floor = counts["floor"] - counts["python"]
    return [
        Row(f"{p}: imports, instructions (valgrind)",
            text=f"{(counts[p] - counts['python']) / 1e6:.0f} M",
            note=f"interpreter start-up apart ({counts['python'] / 1e6:.0f} M); of which "
                 f"{floor / 1e6:.0f} M is the floor `{FLOOR_CODE}` (after logging set-up, "
                 f"same deferrals and attrs table), "
                 f"{(counts[p] - counts['floor']) / 1e6:.0f} M is nvme-stas's own")
        for p in ("stafd", "stacd")
    ]  # fmt: skip


# --- start-up: first log line, D-Bus name --------------------------------------------------


@contextmanager
def name_watch(address: str, name: str) -> Iterator[object]:
    """A blocking jeepney connection subscribed to NameOwnerChanged for ``name``."""
    from jeepney import MatchRule, message_bus
    from jeepney.io.blocking import open_dbus_connection

    conn = open_dbus_connection(bus=address)
    rule = MatchRule(type="signal", sender="org.freedesktop.DBus", member="NameOwnerChanged",
                     interface="org.freedesktop.DBus", path="/org/freedesktop/DBus")  # fmt: skip
    rule.add_arg_condition(0, name)
    conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def wait_owned(conn, name: str, timeout: float) -> float:
    """time.monotonic() when ``name`` got an owner."""
    deadline = time.monotonic() + timeout
    while True:
        msg = conn.receive(timeout=max(0.01, deadline - time.monotonic()))
        if msg.header.fields.get(3) == "NameOwnerChanged" and msg.body[0] == name and msg.body[2]:
            return time.monotonic()


def daemon_argv(layout: Layout, prog: str, tmp: Path, conf: str, state: Path | None) -> list[str]:
    (tmp / f"{prog}.conf").write_text(conf)
    argv = [*layout.launchers[prog], "-f", str(tmp / f"{prog}.conf")]
    argv += ["--sys-conf", str(tmp / "sys.conf")]
    if prog == "stafd":
        state = state or tmp / "state"
        state.mkdir(parents=True, exist_ok=True)
        return [*argv, "--state-dir", str(state)]
    return [*argv, "--kernel", "fake"]


def stafd_conf(sim: SimProc, port: int, zeroconf: bool = False) -> str:
    return (
        "[Global]\ndc-backend=userspace\n"
        f"[Service Discovery]\nzeroconf={'enabled' if zeroconf else 'disabled'}\n"
        f"[Controllers]\ncontroller=transport=tcp;traddr=::1;trsvcid={sim.ports[port]}\n"
    )


def bench_start(layout: Layout, tmp: Path, env: dict[str, str], address: str, sim: SimProc,
                prog: str, runs: int) -> list[Row]:  # fmt: skip
    first, named = [], []
    for i in range(runs):
        conf = stafd_conf(sim, 1) if prog == "stafd" else ""
        argv = daemon_argv(layout, prog, tmp, conf, tmp / f"state-{prog}-{i}")
        with name_watch(address, BUS_NAMES[prog]) as conn:
            t0 = time.monotonic()
            proc = Proc(argv, env)
            try:
                t_name = wait_owned(conn, BUS_NAMES[prog], timeout=60)
                _, t_line, _ = proc.log.wait_for(lambda ln: True, timeout=60)
            finally:
                proc.stop()
        first.append(t_line - t0)
        named.append(t_name - t0)
    what = "simulator DC, 3 subsystems" if prog == "stafd" else "--kernel fake, no stafd"
    return [
        Row(f"{prog}: process start -> first log line", first,
            target=f"<= {FIRST_LINE_TARGET_S * 1000:.0f} ms",
            passed=statistics.median(first) <= FIRST_LINE_TARGET_S, note=what),
        Row(f"{prog}: process start -> D-Bus name owned", named,
            target=f"<= {FIRST_LINE_TARGET_S * 1000:.0f} ms",
            passed=statistics.median(named) <= FIRST_LINE_TARGET_S,
            note="NameOwnerChanged seen by a client on the private bus"),
    ]  # fmt: skip


# --- RSS and idle CPU ----------------------------------------------------------------------


def _connected(line: str) -> bool:
    return ": connected as nvme" in line


def resident(pid: int) -> str:
    """What the RSS is made of: heap (anonymous) vs mapped files, threads, OpenSSL mapped."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in rollup.splitlines()[1:] if "kB" in ln}
    anon, rss = kb.get("Anonymous", 0), kb.get("Rss", 0)
    threads = len(list(Path(f"/proc/{pid}/task").iterdir()))
    maps = Path(f"/proc/{pid}/maps").read_text()
    ssl = "OpenSSL mapped" if "libcrypto" in maps else "no OpenSSL"
    return f"anonymous {anon / 1024:.1f} MB + files {(rss - anon) / 1024:.1f} MB, " \
           f"{threads} thread(s), {ssl}"  # fmt: skip


def bench_memory(layout: Layout, tmp: Path, env: dict[str, str], sim: SimProc, port: int,
                 count: int, idle_s: float) -> list[Row]:  # fmt: skip
    """Both daemons up, ``count`` I/O controllers connected; RSS settled, then idle CPU."""
    procs: list[Proc] = []
    rows: list[Row] = []
    try:
        sub = tmp / f"mem{count}"
        sub.mkdir()
        shutil.copy(tmp / "sys.conf", sub / "sys.conf")
        procs.append(stafd := Proc(daemon_argv(layout, "stafd", sub, stafd_conf(sim, port), None),
                                   env))  # fmt: skip
        procs.append(stacd := Proc(daemon_argv(layout, "stacd", sub, "", None), env))
        seen = 0
        pos = 0
        while seen < count:
            pos, _, _ = stacd.log.wait_for(_connected, since=pos, timeout=120)
            seen, pos = seen + 1, pos + 1
        time.sleep(2.0)  # the last replies, state writes and log lines
        for name, p in (("stafd", stafd), ("stacd", stacd)):
            mb = p.rss_kb() / 1024
            where = "stafd: 1 DC (userspace host) listing them; stacd: --kernel fake; "
            rows.append(Row(f"{name}: RSS, {count} controllers", text=f"{mb:.1f} MB",
                            target=f"<= {RSS_TARGET_MB:.0f} MB", passed=mb <= RSS_TARGET_MB,
                            note=(where if name == "stafd" else "") + resident(p.pid)))  # fmt: skip
        if idle_s > 0:
            cpu0 = {p: p.cpu_seconds() for p in (stafd, stacd)}
            w0 = time.monotonic()
            time.sleep(idle_s)
            wall = time.monotonic() - w0
            for name, p in (("stafd", stafd), ("stacd", stacd)):
                per60 = (p.cpu_seconds() - cpu0[p]) * 60 / wall
                rows.append(Row(f"{name}: idle CPU, {count} controllers",
                                text=f"{per60:.3f} s/60 s",
                                target=f"<= {IDLE_TARGET_S} s/60 s", passed=per60 <= IDLE_TARGET_S,
                                note=f"window {wall:.0f} s (clock tick 10 ms)"))  # fmt: skip
    finally:
        for p in reversed(procs):
            p.stop()
    return rows


def bench_mdns_rss(layout: Layout, tmp: Path, env: dict[str, str], sim: SimProc) -> list[Row]:
    """For reference: stafd with mDNS browsing on (zeroconf in the process)."""
    sub = tmp / "mdns"
    sub.mkdir()
    shutil.copy(tmp / "sys.conf", sub / "sys.conf")
    argv = daemon_argv(layout, "stafd", sub, stafd_conf(sim, 1, zeroconf=True), None)
    proc = Proc([*argv, "--mdns-interfaces", "127.0.0.1"], env)
    try:
        proc.log.wait_for(lambda ln: " ready " in ln, timeout=60)
        time.sleep(2.0)
        mb = proc.rss_kb() / 1024
    finally:
        proc.stop()
    return [Row("stafd: RSS with mDNS browsing on (zeroconf=enabled)", text=f"{mb:.1f} MB",
                note="zeroconf runs in stafd; upstream uses a separate avahi-daemon")]  # fmt: skip


# --- driver --------------------------------------------------------------------------------


def run(layout: Layout, runs: int, idle_s: float, memory_only: bool = False) -> list[Row]:
    from stas.dbus.testbus import private_bus

    rows: list[Row] = []
    for prog in () if memory_only else ("stafd", "stacd"):
        try:
            rows += bench_imports(layout, prog, runs)
        except Exception as exc:
            rows.append(failed(f"{prog}: imports", exc))
    if shutil.which("valgrind") and not memory_only:
        try:
            rows += bench_instructions(layout)
        except Exception as exc:
            rows.append(failed("imports, instructions", exc))
    policies: Sequence[Path] = ()
    if layout.libdir:
        policies = sorted((Path(layout.libdir).parents[1] / "share/dbus-1/system.d").glob("*.conf"))
    with tempfile.TemporaryDirectory(prefix="stas-startup-") as name, \
            private_bus(system_like=bool(policies), includes=policies) as address:  # fmt: skip
        tmp = Path(name)
        harness.write_identity(tmp)
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        env["DBUS_SYSTEM_BUS_ADDRESS"] = address
        plans = [
            (f"{p}: start-up", lambda p=p: bench_start(layout, tmp, env, address, sims(1), p, runs))
            for p in (() if memory_only else ("stafd", "stacd"))
        ]
        sims_cache: dict[int, SimProc] = {}

        def sims(subsystems: int) -> SimProc:
            if subsystems not in sims_cache:
                sims_cache[subsystems] = SimProc(
                    tmp, f"sim{subsystems}", harness.nvmet_conf(1, subsystems)
                )
            return sims_cache[subsystems]

        plans += [
            ("RSS, 3", lambda: bench_memory(layout, tmp, env, sims(3), 1, 3, 0)),
            ("RSS, 50", lambda: bench_memory(layout, tmp, env, sims(50), 1, 50, idle_s)),
            ("mDNS RSS", lambda: bench_mdns_rss(layout, tmp, env, sims(3))),
        ]
        try:
            for name_, fn in plans:
                try:
                    rows += fn()
                except Exception as exc:  # a benchmark that cannot run is reported, not raised
                    rows.append(failed(name_, exc))
                print(f"  ... {name_} done", file=sys.stderr, flush=True)
        finally:
            for s in sims_cache.values():
                s.stop()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 runs, 10 s idle window")
    ap.add_argument("--runs", type=int, default=None, help="runs per start-up figure (default 7)")
    ap.add_argument("--idle", type=float, default=None, help="idle window, s (default 60)")
    ap.add_argument("--layout", choices=("installed", "venv"), default="installed")
    ap.add_argument("--memory-only", action="store_true", help="RSS and idle CPU rows only")
    args = ap.parse_args(argv)
    runs = args.runs or (3 if args.quick else 7)
    idle = args.idle if args.idle is not None else (10.0 if args.quick else 60.0)
    layout = installed_layout() if args.layout == "installed" else venv_layout()
    load0 = os.getloadavg()
    rows = run(layout, runs, idle, args.memory_only)
    loads = " -> ".join("/".join(f"{x:.2f}" for x in la) for la in (load0, os.getloadavg()))
    print(f"{layout.name} layout, {' '.join(layout.argv)}; load average (1/5/15 min) {loads} "
          f"on {os.cpu_count()} CPUs")  # fmt: skip
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
