#!/usr/bin/env python3
"""Benchmarks on the real kernel beside nvme-cli (`make bench-kernel`: installs, then the VM).

Run on the host, this script installs the daemons as `make install` lays them out (launchers
in PREFIX/sbin with /usr/bin/python3, the package and its dependencies in PREFIX/lib/nvme-stas,
byte-compiled) into .build/bench-kernel-install, then boots the VM (nvmet-harness/vm/runner.py,
which shows the host's / read-only) and runs itself there. BENCH_LAYOUT=venv times the
editable .venv instead (slower start-up: pyenv's interpreter and the editable finder).

Every figure is measured from outside, by watching sysfs (what the kernel really has), so the
daemons, upstream nvme-stas 2.4.1 (bench/upstream_peer.py: Debian trixie's package unpacked,
run with libnvme 1.16) and nvme-cli are timed the same way, in the same boot. The VM's speed
swings 2x within a boot, so at each scale every peer runs once per round, round-robin (each
goes first in turn), after BENCH_WARMUP rounds (1) that are discarded, and the ratios of ours
to each peer are printed per round and as their median. systemd-udevd runs for the whole
benchmark, every peer alike (upstream hears AENs only through it). The figures:
- cold start to the discovery controller connected: stafd, upstream's stafd, `nvme discover -p`;
- scale (issue 8): 3, 50 and 200 subsystems (one null_blk namespace each), cold start to every
  I/O controller live: stafd + stacd, upstream's, `nvme connect-all`, and the kernel's floor (the
  same connects written to /dev/nvme-fabrics by a shell, one after another and all at once);
  the check fails (exit 1) when N subsystems cost stacd more than 1.25x the linear N/50 of its
  cost at 50 (200: 5x; quadratic would be 16x);
- the timeline of each peer's cold start at each scale: start -> each daemon's first log line
  -> its D-Bus name owned -> DC live -> first I/O controller live -> all live;
- our daemons' imports during a cold start (`python -X importtime`): total and top 10;
- stacd's sysfs opens per connect, counted by a Python audit hook in stacd (all its sysfs reads
  are Python's), or by ``strace -f`` with BENCH_STRACE=1 (C code too, far slower emulated);
- reactions with the daemons running: unlink -> the controller's device gone, re-link -> back,
  a new subsystem linked -> connected; and the scripted nvme-cli equivalent of the unlink;
- RSS of each daemon at every scale.
Medians with min-max over BENCH_RUNS rounds (3); BENCH_SCALES=3,50,200 chooses the scales;
BENCH_PEERS=ours (any of floor,cli,upstream,ours) runs only those, e.g. ours alone at 500;
BENCH_PARTS=floor measures the kernel floors alone. Under qemu software emulation everything
is slower than on hardware, every peer alike.

    .venv/bin/python bench/kernel_bench.py [--kernel 6.12] [--timeout S]   # on the host
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench import upstream_peer  # noqa: E402

PY = sys.executable
NVMET = [PY, str(ROOT / "nvmet-harness/nvmet.py")]
RUNNER = ROOT / "nvmet-harness/vm/runner.py"
SYS = Path("/sys/class/nvme")
ADDR = ["-t", "tcp", "-a", "::1", "-s", "8009"]
PEER_NAMES = ("floor", "cli", "upstream", "ours")  # BENCH_PEERS chooses among these
TMP = Path("/tmp/stas-bench")
LOGS = Path(os.environ.get("BENCH_LOGS", str(TMP)))  # daemons' output (runner.py --share DIR)
INSTALL_DIR = ROOT / ".build" / "bench-kernel-install"
INSTALL_PYTHON = "/usr/bin/python3"  # scripts/install.py's default for the launchers
PASSENV = (
    "BENCH_RUNS",
    "BENCH_SCALES",
    "BENCH_PARTS",
    "BENCH_LAYOUT",
    "BENCH_STRACE",
    "BENCH_PEERS",
    "BENCH_WARMUP",
)
BUS_NAMES = {"org.nvmexpress.staf": "stafd", "org.nvmexpress.stac": "stacd"}
LINEAR_BASE = 50  # stacd's cost at N subsystems is compared with its cost at 50 ...
LINEAR_SLACK = 1.25  # ... and may be at most 1.25x the linear N/50 (200: 5x, 500: 12.5x)
SEED = (
    "nqn.1988-11.com.dell:PowerSANxxx:01:20210225100113-454f73093ceb4847a7bdfc6e34ae8e28",
    "klingons",
    "starfleet",
)
AUDIT_WRAPPER = """
import atexit, sys
path, libdir = sys.argv.pop(1), sys.argv.pop(1)
sys.path.insert(0, libdir)
count = [0]
def hook(event, args):
    if event == "open" and str(args[0]).startswith("/sys/"):
        count[0] += 1
sys.addaudithook(hook)
atexit.register(lambda: open(path, "w").write(str(count[0])))
sys.argv[0] = "stacd"
from stas.main import stacd_main
sys.exit(stacd_main())
"""


# --- rows (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The BENCH_ variables, read once and checked (a bad value is named, not a traceback)."""

    runs: int = 3  # BENCH_RUNS: measured rounds per figure
    scales: tuple[int, ...] = (3, 50, 200)  # BENCH_SCALES
    parts: str = "all"  # BENCH_PARTS: "all", or "floor" for the kernel floors alone
    peers: tuple[str, ...] = PEER_NAMES  # BENCH_PEERS: which of floor, cli, upstream, ours
    warmup: int = 1  # BENCH_WARMUP: rounds run first at each scale and discarded


def settings(environ: Mapping[str, str]) -> Settings:
    """Settings from ``environ``; raises ValueError naming the variable and its bad value."""

    def number(name: str, text: str, least: int) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise ValueError(f"{name}={text!r}: expected a whole number >= {least}")
        return value

    runs = number("BENCH_RUNS", environ.get("BENCH_RUNS", "3"), 1)
    warmup = number("BENCH_WARMUP", environ.get("BENCH_WARMUP", "1"), 0)
    raw = environ.get("BENCH_SCALES", "3,50,200")
    scales = tuple(number("BENCH_SCALES", x.strip(), 1) for x in raw.split(","))
    if len(set(scales)) != len(scales):
        raise ValueError(f"BENCH_SCALES={raw!r}: a scale is listed twice")
    parts = environ.get("BENCH_PARTS", "all")
    if parts not in ("all", "floor"):
        raise ValueError(f"BENCH_PARTS={parts!r}: expected 'all' or 'floor'")
    raw = environ.get("BENCH_PEERS", ",".join(PEER_NAMES))
    peers = tuple(x.strip() for x in raw.split(",") if x.strip())
    bad = [p for p in peers if p not in PEER_NAMES]
    if bad or not peers:
        raise ValueError(
            f"BENCH_PEERS={raw!r}: {'unknown ' + ', '.join(bad) if bad else 'empty'}; "
            f"choose among {','.join(PEER_NAMES)}"
        )
    return Settings(runs, tuple(sorted(scales)), parts, peers, warmup)


def rotated(items: Sequence[str], k: int) -> list[str]:
    """``items`` starting at the k-th (round k of a round-robin: each goes first in turn)."""
    if not items:
        return []
    k %= len(items)
    return [*items[k:], *items[:k]]


def ratio_rows(rounds: Sequence[Mapping[str, float]]) -> list[tuple[str, str]]:
    """Per-round ratios of ours to each peer measured in that round, and their medians:
    (label, "1.10x, 1.25x; median 1.18x"). A round without both sides is left out."""
    out = []
    for peer, label in (
        ("serial", "serial floor"),
        ("cli", "nvme connect-all"),
        ("upstream", "upstream 2.4.1"),
    ):
        xs = [r["ours"] / r[peer] for r in rounds if r.get("ours") and r.get(peer)]
        if xs:
            each = ", ".join(f"{x:.2f}x" for x in xs)
            out.append((f"ours / {label}", f"{each}; median {statistics.median(xs):.2f}x"))
    return out


def linearity(
    costs: Mapping[int, float], base: int = LINEAR_BASE, slack: float = LINEAR_SLACK
) -> list[tuple[int, float, float, bool]]:
    """For each scale above ``base``: (n, cost(n) / cost(base), the limit, within it).

    Linear is n / base; the limit allows ``slack`` times that (200: 5x, 500: 12.5x), where
    a quadratic cost would be (n / base) ** 2."""
    if base not in costs or costs[base] <= 0:
        return []
    return [
        (n, costs[n] / costs[base], slack * n / base, costs[n] / costs[base] <= slack * n / base)
        for n in sorted(costs)
        if n > base
    ]


def fmt(xs: Sequence[float]) -> str:
    """Median (min-max), in ms under 10 s, else in s."""
    med, lo, hi = statistics.median(xs), min(xs), max(xs)
    if hi < 10:
        return f"{med * 1000:,.0f} ms ({lo * 1000:,.0f}-{hi * 1000:,.0f})"
    return f"{med:.1f} s ({lo:.1f}-{hi:.1f})"


def floor_row(serial: Sequence[float], parallel: Sequence[float]) -> str:
    """Serial and parallel floors with how much parallel writes gain (1.00x: none)."""
    if not serial or not parallel:
        return f"{fmt(serial) if serial else 'failed'} / {fmt(parallel) if parallel else 'failed'}"
    ratio = statistics.median(serial) / statistics.median(parallel)
    return f"{fmt(serial)} / {fmt(parallel)}, parallel {ratio:.2f}x as fast"


def connect_phase_row(runs: Sequence[Mapping[str, float]], n: int, floor: Sequence[float]) -> str:
    """stacd's connect phase (first I/O controller live -> all live) per controller beside the
    kernel's serial floor per controller: how far the connects themselves are from the floor,
    start-up left out."""
    spans = [r["all live"] - r["1st IOC live"] for r in runs if "1st IOC live" in r]
    if n < 2 or not spans:
        return "-"
    ours = statistics.median(spans) / (n - 1) * 1000
    if not floor:
        return f"{ours:,.0f} ms / -"
    return f"{ours:,.0f} ms / {statistics.median(floor) / n * 1000:,.0f} ms"


def timeline_row(runs: Sequence[Mapping[str, float]]) -> str:
    """Median time of each event over ``runs`` (each: event -> seconds since start).

    An event missing from a run (e.g. no log line) counts only the runs that saw it; an event
    no run saw shows as '-'."""

    def med(event: str) -> str:
        seen = [r[event] for r in runs if event in r]
        return f"{statistics.median(seen):.2f}" if seen else "-"

    return (
        f"first log line {med('stafd log')}/{med('stacd log')} s -> "
        f"D-Bus name {med('stafd D-Bus')}/{med('stacd D-Bus')} s -> "
        f"DC live {med('DC live')} s -> 1st IOC live {med('1st IOC live')} s -> "
        f"all live {med('all live')} s"
    )


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


@dataclass(frozen=True)
class Import:
    module: str
    self_us: int
    cumulative_us: int
    depth: int  # 0: imported by the program itself, not by another module


def parse_importtime(text: str) -> list[Import]:
    """The `-X importtime` lines of ``text`` (other lines, e.g. log lines, are skipped)."""
    out = []
    for line in text.splitlines():
        if m := _IMPORT_LINE.match(line):
            depth = (len(m[3]) - 1) // 2
            out.append(Import(m[4], int(m[1]), int(m[2]), depth))
    return out


def imports_row(imports: Sequence[Import], top: int = 10) -> str:
    """Total import time (the sum of self times), module count, and the ``top`` modules by
    cumulative time among those the program imported itself or their direct imports."""
    total = sum(i.self_us for i in imports) / 1e6
    ranked = sorted(imports, key=lambda i: i.cumulative_us, reverse=True)[:top]
    tops = ", ".join(f"{i.module} {i.cumulative_us / 1e6:.2f}" for i in ranked)
    return f"{total:.2f} s over {len(imports)} modules; top {top} (cumulative s): {tops}"


# --- measuring -------------------------------------------------------------------------------


def live(kind: str, *, any_state: bool = False) -> dict[str, str]:
    """subsysnqn -> device of every live controller of ``kind`` ('io' or 'discovery');
    ``any_state``: every controller that exists (an unlinked subsystem's controller leaves
    'live' at once, the target dropping it, but stays, reconnecting, until disconnected)."""
    out = {}
    for d in SYS.glob("nvme*"):
        try:
            if (d / "cntrltype").read_text().strip() == kind and (
                any_state or (d / "state").read_text().strip() == "live"
            ):
                out[(d / "subsysnqn").read_text().strip()] = d.name
        except OSError:
            pass
    return out


def io_live(n: int) -> Callable[[], bool]:
    """A cheap check: count directories first, read attributes only once enough exist."""
    return lambda: len(list(SYS.glob("nvme*"))) >= n and len(live("io")) >= n


class LiveCount:
    """Live controllers by kind, cheap enough to poll at 200: a device once seen live is not
    read again while it exists (a cold start only adds controllers)."""

    def __init__(self) -> None:
        self.up: dict[str, str] = {}  # device -> cntrltype, once live

    def poll(self) -> tuple[int, int]:
        """(discovery, io) controllers live now."""
        present = {d.name: d for d in SYS.glob("nvme*")}
        for name in set(self.up) - set(present):
            del self.up[name]
        for name, d in present.items():
            if name in self.up:
                continue
            try:
                if (d / "state").read_text().strip() == "live":
                    self.up[name] = (d / "cntrltype").read_text().strip()
            except OSError:
                pass
        io = sum(kind == "io" for kind in self.up.values())
        return len(self.up) - io, io


def wait(check: Callable[[], bool], timeout: float = 600, poll: float = 0.01) -> float:
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("timed out")
        time.sleep(poll)
    return time.perf_counter() - t0


def rss_mb(proc: subprocess.Popen) -> str:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return f"{int(line.split()[1]) // 1024} MB"
    return "?"


class BusWatch:
    """Stamps (time.monotonic()) when each daemon's D-Bus name gets an owner."""

    def __init__(self, address: str) -> None:
        from jeepney import MatchRule, message_bus
        from jeepney.io.blocking import open_dbus_connection

        self.conn = open_dbus_connection(bus=address)
        rule = MatchRule(
            type="signal",
            sender="org.freedesktop.DBus",
            member="NameOwnerChanged",
            interface="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
        )
        self.conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=10)
        self.owned: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.conn.receive(timeout=0.2)
            except TimeoutError:
                continue
            except Exception:  # the connection closed under us: done
                return
            name, _, owner = msg.body if len(msg.body) == 3 else (None, None, None)
            if name in BUS_NAMES and owner:
                self.owned.setdefault(BUS_NAMES[name], time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.close()


class Tap:
    """A daemon's merged stdout/stderr: the first line's arrival stamped, all kept for its log."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.first: float | None = None
        self.log = log
        self._thread = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        with open(self.log, "ab") as out:
            for raw in iter(stream.readline, b""):
                if self.first is None:
                    self.first = time.monotonic()
                out.write(raw)

    def join(self) -> None:
        self._thread.join(10)


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


def floor_script(n: int, *, parallel: bool = False, ident: str | None = None) -> str:
    """A shell script writing ``n`` connects to /dev/nvme-fabrics: one after another, or
    (``parallel``) all at once as background jobs, then ``wait``.

    The options are the ones a connect cannot do without, plus the host identity nvme-cli
    would send (``ident``; by default /etc/nvme's when it has one): the kernel's cost alone.
    """
    if ident is None:
        ident = ""
        nqn_file, id_file = Path("/etc/nvme/hostnqn"), Path("/etc/nvme/hostid")
        if nqn_file.exists() and id_file.exists():
            ident = f",hostnqn={nqn_file.read_text().strip()},hostid={id_file.read_text().strip()}"
    amp = " &" if parallel else ""
    lines = [
        f"echo 'transport=tcp,traddr=::1,trsvcid=8009,nqn={nqn}{ident}' > /dev/nvme-fabrics{amp}"
        for nqn in names_of(n)
    ]
    return "\n".join(lines + (["wait"] if parallel else [])) + "\n"


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


@dataclass(frozen=True)
class Layout:
    """How the daemons are started: ``launcher[prog]`` run directly (its #! line), or under
    ``python`` with interpreter options (importtime); ``libdir`` goes first on sys.path."""

    name: str
    python: str
    libdir: str
    launcher: Mapping[str, str]
    env_drop: tuple[str, ...]  # variables a user's daemon would not have
    flags: tuple[str, ...] = ()  # the launchers' own interpreter options (#! line), e.g. -S

    def argv(self, prog: str, *xopts: str) -> list[str]:
        if xopts:
            return [self.python, *self.flags, *xopts, self.launcher[prog]]
        return [self.launcher[prog]]

    def describe(self) -> str:
        return f"{self.name}: {self.launcher['stafd']}, {self.launcher['stacd']} ({self.python})"


def installed_layout(prefix: Path = INSTALL_DIR / "usr") -> Layout:
    sbin = prefix / "sbin"
    if not (sbin / "stacd").exists():
        raise SystemExit(
            f"no installed daemons in {sbin}: run bench/kernel_bench.py on the host "
            "(make bench-kernel), which installs them before booting the VM"
        )
    return Layout(
        "installed",
        INSTALL_PYTHON,
        str(prefix / "lib" / "nvme-stas"),
        {p: str(sbin / p) for p in ("stafd", "stacd")},
        ("PYTHONPYCACHEPREFIX", "PYTHONPATH", "VIRTUAL_ENV"),
        shebang_flags((sbin / "stafd").read_text(errors="replace").partition("\n")[0]),
    )


def shebang_flags(line: str) -> tuple[str, ...]:
    """The interpreter options of a #! line ('#!/usr/bin/python3 -S' -> ('-S',)): timing a
    launcher under `python -X importtime` must keep them (-S: no `site`, no sitecustomize)."""
    if not line.startswith("#!"):
        return ()
    return tuple(line[2:].split()[1:])


def venv_layout() -> Layout:
    bindir = ROOT / ".venv" / "bin"
    return Layout(
        "venv",
        str(bindir / "python"),
        str(ROOT),
        {p: str(bindir / p) for p in ("stafd", "stacd")},
        (),
    )


class Bench:
    """Drives the VM's measurements; the daemons of a ``peer`` ('ours' or 'upstream') are
    started by ``argv(prog, peer=...)`` and never both peers' at once (same D-Bus names)."""

    def __init__(self, env: dict[str, str], layout: Layout, bus: str, cfg: Settings) -> None:
        self.env = env
        self.layout = layout
        self.bus = bus
        self.cfg = cfg
        self.daemon_env = {k: v for k, v in env.items() if k not in layout.env_drop}
        self.upstream_env = upstream_peer.env(env, TMP / "upstream-run")
        self.args = {
            "stafd": ["-f", str(TMP / "stafd.conf"), "--state-dir", str(TMP)],
            "stacd": ["-f", str(TMP / "stacd.conf")],
        }
        self.upstream_args = {
            "stafd": ["-f", str(TMP / "stafd.conf")],
            "stacd": ["-f", str(TMP / "stacd.conf")],
        }
        self.rows: list[tuple[str, str, str]] = []
        self.medians: dict[int, dict[str, float]] = {}  # n -> peer -> median cold start
        self.failed: list[str] = []

    def has(self, peer: str) -> bool:
        return peer in self.cfg.peers

    def argv(self, prog: str, *xopts: str, peer: str = "ours") -> list[str]:
        if peer == "upstream":
            return upstream_peer.argv(prog, self.layout.libdir, *self.upstream_args[prog])
        return [*self.layout.argv(prog, *xopts), *self.args[prog]]

    def envof(self, peer: str) -> dict[str, str]:
        return self.upstream_env if peer == "upstream" else self.daemon_env

    def shown(self, prog: str, peer: str = "ours") -> str:
        return " ".join(self.argv(prog, peer=peer))

    def row(self, what: str, value: str, command: str) -> None:
        self.rows.append((what, value, command))
        print(f"  {what}: {value}", flush=True)

    def daemon(self, prog: str, *xopts: str, peer: str = "ours") -> subprocess.Popen:
        log = f"upstream-{prog}" if peer == "upstream" else prog
        return start(self.argv(prog, *xopts, peer=peer), self.envof(peer), log)

    def cold(self, peer: str = "ours") -> None:
        """Forget what the last run connected (ours: its JSON; upstream: its pickle)."""
        (TMP / "last-known-config.json").unlink(missing_ok=True)
        (TMP / "upstream-run" / "last-known-config.pickle").unlink(missing_ok=True)

    def discovery(self) -> None:
        """Cold start -> DC live, the peers interleaved round by round."""
        kinds = [
            k
            for k, on in (
                ("cli", self.has("cli")),
                ("upstream", self.has("upstream")),
                ("ours", self.has("ours")),
            )
            if on
        ]
        got: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(self.cfg.warmup + self.cfg.runs):
            for kind in rotated(kinds, r):
                reset()
                self.cold()
                t0 = time.perf_counter()
                if kind == "cli":
                    run("nvme", "discover", "-p", *ADDR)
                    wait(lambda: bool(live("discovery")))
                    took = time.perf_counter() - t0
                else:
                    stafd = self.daemon("stafd", peer=kind)
                    wait(lambda: bool(live("discovery")))
                    took = time.perf_counter() - t0
                    stop(stafd)
                if r >= self.cfg.warmup:
                    got[kind].append(took)
        shown = {
            "cli": ("nvme-cli", "nvme discover -p " + " ".join(ADDR)),
            "upstream": ("upstream 2.4.1 stafd", self.shown("stafd", "upstream")),
            "ours": ("stafd", self.shown("stafd")),
        }
        for kind in kinds:
            label, command = shown[kind]
            self.row(f"cold start -> DC live: {label}", fmt(got[kind]), command)

    def floor(self, n: int, script: Path) -> float | None:
        """Seconds from running ``script`` to n I/O controllers live (None: they never were)."""
        reset()
        t0 = time.perf_counter()
        subprocess.run(["sh", str(script)], capture_output=True)
        try:
            wait(io_live(n), 60 + n)
        except RuntimeError:
            print(f"  ! {script}: only {len(live('io'))} of {n} live", flush=True)
            return None
        return time.perf_counter() - t0

    def floor_scripts(self, n: int) -> tuple[Path, Path]:
        serial_sh, parallel_sh = TMP / f"floor-{n}.sh", TMP / f"floor-{n}-parallel.sh"
        serial_sh.write_text(floor_script(n))
        parallel_sh.write_text(floor_script(n, parallel=True))
        return serial_sh, parallel_sh

    def floors(self, n: int) -> list[float]:
        """The serial and parallel floors alone, interleaved (BENCH_PARTS=floor)."""
        serial_sh, parallel_sh = self.floor_scripts(n)
        serial: list[float] = []
        parallel: list[float] = []
        for r in range(self.cfg.warmup + self.cfg.runs):
            for script, samples in rotated([(serial_sh, serial), (parallel_sh, parallel)], r):
                if (t := self.floor(n, script)) is not None and r >= self.cfg.warmup:
                    samples.append(t)
        self.row(
            f"{n} subsystems: kernel floor serial / parallel (writes to /dev/nvme-fabrics)",
            floor_row(serial, parallel),
            f"sh {serial_sh} (one echo per subsystem) / sh {parallel_sh} (echo &, wait)",
        )
        return serial

    @contextmanager
    def watched(self) -> Iterator[BusWatch]:
        watch = BusWatch(self.bus)
        try:
            yield watch
        finally:
            watch.close()

    def cold_start(self, n: int, peer: str = "ours") -> tuple[dict[str, float], tuple[str, str]]:
        """One cold start of a peer's two daemons to n I/O controllers live: its timeline and
        RSS (1 s after all live)."""
        reset()
        self.cold(peer)
        events: dict[str, float] = {}
        count = LiveCount()
        log = "upstream-" if peer == "upstream" else ""
        with self.watched() as bus:
            t0 = time.monotonic()
            procs = {}
            taps = {}
            for prog in ("stafd", "stacd"):
                procs[prog] = subprocess.Popen(
                    self.argv(prog, peer=peer),
                    env=self.envof(peer),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                taps[prog] = Tap(procs[prog], LOGS / f"{log}{prog}.log")
            try:
                while True:
                    dc, io = count.poll()
                    now = time.monotonic() - t0
                    if dc:
                        events.setdefault("DC live", now)
                    if io:
                        events.setdefault("1st IOC live", now)
                    if io >= n:
                        events["all live"] = now
                        break
                    if now > 600 + 2 * n:
                        raise RuntimeError(
                            f"{peer} cold start: only {io} of {n} live after "
                            f"{now:.0f} s (logs: {LOGS}/{log}stacd.log)"
                        )
                    for prog, proc in procs.items():
                        if proc.poll() is not None:
                            raise RuntimeError(
                                f"{peer} {prog} exited ({proc.returncode}) with "
                                f"{io} of {n} live (log: {taps[prog].log})"
                            )
                    time.sleep(0.01)
                time.sleep(1)
                rss = (rss_mb(procs["stafd"]), rss_mb(procs["stacd"]))
            finally:
                stop(*(p for p in (procs["stacd"], procs["stafd"]) if p.poll() is None))
            for prog, tap in taps.items():
                tap.join()
                if tap.first is not None:
                    events[f"{prog} log"] = tap.first - t0
                if prog in bus.owned:
                    events[f"{prog} D-Bus"] = bus.owned[prog] - t0
        return events, rss

    def connect_all(self, n: int) -> float:
        reset()
        t0 = time.perf_counter()
        run("nvme", "connect-all", *ADDR)
        wait(io_live(n))
        return time.perf_counter() - t0

    def scale(self, n: int) -> float | None:
        """Cold start -> n I/O controllers live, every peer once per round, round-robin, after
        the warm-up rounds (discarded): the VM's speed swings 2x within a boot, so only
        figures taken in the same round are compared. Returns stacd's median (None: not run)."""
        run(*NVMET, "create", "-f", str(write_target(n)))
        serial_sh, parallel_sh = self.floor_scripts(n)
        kinds = [
            k
            for k, on in (
                ("serial", self.has("floor")),
                ("parallel", self.has("floor")),
                ("cli", self.has("cli")),
                ("upstream", self.has("upstream")),
                ("ours", self.has("ours")),
            )
            if on
        ]
        rounds: list[dict[str, float]] = []
        timelines: dict[str, list[dict[str, float]]] = {"upstream": [], "ours": []}
        rss: dict[str, tuple[str, str]] = {}
        for r in range(self.cfg.warmup + self.cfg.runs):
            got: dict[str, float] = {}
            for kind in rotated(kinds, r):
                if kind in ("serial", "parallel"):
                    took = self.floor(n, serial_sh if kind == "serial" else parallel_sh)
                    if took is not None:
                        got[kind] = took
                elif kind == "cli":
                    got[kind] = self.connect_all(n)
                else:
                    events, rss[kind] = self.cold_start(n, kind)
                    got[kind] = events["all live"]
                    if r >= self.cfg.warmup:
                        timelines[kind].append(events)
            what = (
                "warm-up (discarded)" if r < self.cfg.warmup else f"round {r - self.cfg.warmup + 1}"
            )
            print(
                f"  {n} subsystems, {what}: " + ", ".join(f"{k} {v:.1f} s" for k, v in got.items()),
                flush=True,
            )
            if r >= self.cfg.warmup:
                rounds.append(got)
        self.scale_rows(n, rounds, timelines, rss, serial_sh, parallel_sh)
        if self.has("ours"):
            if n == min(self.cfg.scales):
                self.interpreter()
                self.imports(n)
            self.opens(n)
        reset()
        run(*NVMET, "clean")
        return self.medians[n].get("ours")

    def scale_rows(
        self,
        n: int,
        rounds: Sequence[Mapping[str, float]],
        timelines: Mapping[str, Sequence[Mapping[str, float]]],
        rss: Mapping[str, tuple[str, str]],
        serial_sh: Path,
        parallel_sh: Path,
    ) -> None:
        samples = {
            k: [r[k] for r in rounds if k in r]
            for k in ("serial", "parallel", "cli", "upstream", "ours")
        }
        self.medians[n] = {k: statistics.median(v) for k, v in samples.items() if v}
        if self.has("floor"):
            self.row(
                f"{n} subsystems: kernel floor serial / parallel (writes to /dev/nvme-fabrics)",
                floor_row(samples["serial"], samples["parallel"]),
                f"sh {serial_sh} (one echo per subsystem) / sh {parallel_sh} (echo &, wait)",
            )
        shown = {
            "cli": ("nvme-cli", "nvme connect-all " + " ".join(ADDR)),
            "upstream": (
                "upstream 2.4.1",
                f"{self.shown('stafd', 'upstream')} & {self.shown('stacd', 'upstream')}",
            ),
            "ours": ("stafd + stacd", f"{self.shown('stafd')} & {self.shown('stacd')}"),
        }
        for kind in ("cli", "upstream", "ours"):
            if samples[kind]:
                label, command = shown[kind]
                self.row(
                    f"{n} subsystems: cold start -> all live: {label}", fmt(samples[kind]), command
                )
                self.row(
                    f"{n} subsystems: per controller: {label}",
                    f"{statistics.median(samples[kind]) / n * 1000:,.0f} ms",
                    "",
                )
        for peer in ("upstream", "ours"):
            if timelines[peer]:
                label = shown[peer][0]
                self.row(
                    f"{n} subsystems: timeline {label} (medians)", timeline_row(timelines[peer]), ""
                )
                self.row(
                    f"{n} subsystems: connect phase per controller: {label} / serial floor",
                    connect_phase_row(timelines[peer], n, samples["serial"]),
                    "1st IOC live -> all live, / (n - 1)",
                )
            if peer in rss:
                self.row(
                    f"{n} subsystems: RSS stafd / stacd: {shown[peer][0]} "
                    "(last round, 1 s after all live)",
                    f"{rss[peer][0]} / {rss[peer][1]}",
                    "",
                )
        for label, value in ratio_rows(rounds):
            self.row(f"{n} subsystems: {label}, per round", value, "cold start -> all live")

    def interpreter(self) -> None:
        """What any process of this layout pays before the daemon's own code: the interpreter's
        start-up, and trio (the largest dependency) imported alone."""
        trio = f"import sys; sys.path.insert(0, {self.layout.libdir!r}); import trio"
        for what, code in (("start-up", "pass"), ("import trio", trio)):
            argv = [self.layout.python, "-c", code]
            took = []
            for _ in range(max(self.cfg.runs, 3)):
                t0 = time.perf_counter()
                subprocess.run(argv, env=self.daemon_env, check=True)
                took.append(time.perf_counter() - t0)
            self.row(
                f"interpreter {what} ({self.layout.name} layout)",
                fmt(took),
                f"{self.layout.python} -c {code!r}",
            )

    def imports(self, n: int) -> None:
        """Both daemons under `-X importtime` in one cold start to n live (imports as the
        cold start really does them, the two processes sharing the VM's CPUs)."""
        reset()
        self.cold()
        for prog in ("stafd", "stacd"):
            (LOGS / f"{prog}-importtime.log").unlink(missing_ok=True)
        procs = [
            start(self.argv(p, "-X", "importtime"), self.daemon_env, f"{p}-importtime")
            for p in ("stafd", "stacd")
        ]
        wait(io_live(n))
        time.sleep(1)
        stop(*reversed(procs))
        for prog in ("stafd", "stacd"):
            found = parse_importtime((LOGS / f"{prog}-importtime.log").read_text(errors="replace"))
            self.row(
                f"{prog} imports in the VM (-X importtime, cold start to {n} live)",
                imports_row(found),
                " ".join(self.argv(prog, "-X", "importtime")),
            )

    def opens(self, n: int) -> None:
        """stacd's opens of /sys files during one cold start to n live, per connect."""
        reset()
        self.cold()
        out = TMP / f"opens-{n}"
        out.unlink(missing_ok=True)
        if os.environ.get("BENCH_STRACE") == "1" and shutil.which("strace"):  # slow under TCG
            how = "strace -f -e trace=open,openat"
            argv = [
                "strace",
                "-f",
                "-qq",
                "-e",
                "trace=open,openat",
                "-o",
                str(out),
                *self.argv("stacd"),
            ]
        else:
            how = "audit hook"
            argv = [
                self.layout.python,
                "-c",
                AUDIT_WRAPPER,
                str(out),
                self.layout.libdir,
                *self.args["stacd"],
            ]
        shown = " ".join(argv) if argv[0] == "strace" else f"{self.shown('stacd')} (audit hook)"
        stafd, stacd = self.daemon("stafd"), start(argv, self.daemon_env, "stacd")
        wait(io_live(n))
        time.sleep(1)
        stop(stacd, stafd)
        text = out.read_text()
        if how == "audit hook":
            total = int(text or 0)
        else:
            total = sum('"/sys/' in line for line in text.splitlines())
        self.row(
            f"{n} subsystems: stacd sysfs opens (cold start, {how})",
            f"{total:,} = {total / n:.1f} per connect",
            shown,
        )

    def react(self, peer: str) -> tuple[list[float], list[float], list[float]]:
        """A peer's daemons running with 3 live: unlink -> gone, re-link -> live, a new
        subsystem linked -> live, each round once."""
        reset()
        self.cold(peer)
        stafd, stacd = self.daemon("stafd", peer=peer), self.daemon("stacd", peer=peer)
        gone: list[float] = []
        back: list[float] = []
        new: list[float] = []
        try:
            wait(io_live(3), 300)
            for r in range(self.cfg.warmup + self.cfg.runs):
                run(*NVMET, "unlink", "-p", "1", "-s", "klingons")
                g = wait(lambda: "klingons" not in live("io", any_state=True), 60, 0.002)
                run(*NVMET, "link", "-p", "1", "-s", "klingons")
                b = wait(lambda: "klingons" in live("io"), 60, 0.002)
                run(*NVMET, "link", "-p", "1", "-s", "romulans")
                w = wait(lambda: "romulans" in live("io"), 60, 0.002)
                run(*NVMET, "unlink", "-p", "1", "-s", "romulans")
                wait(lambda: "romulans" not in live("io", any_state=True))
                if r >= self.cfg.warmup:
                    gone.append(g)
                    back.append(b)
                    new.append(w)
        except RuntimeError as e:
            print(f"  ! {peer} reactions: {e}", flush=True)
            subprocess.run([*NVMET, "link", "-p", "1", "-s", "klingons"], capture_output=True)
        finally:
            stop(stacd, stafd)
        return gone, back, new

    def react_cli(self) -> list[float]:
        """The scripted nvme-cli equivalent of noticing an unlink: discover, diff, disconnect."""
        took = []
        for r in range(self.cfg.warmup + self.cfg.runs):
            reset()
            run("nvme", "connect-all", *ADDR)
            wait(io_live(3))
            run(*NVMET, "unlink", "-p", "1", "-s", "klingons")
            t0 = time.perf_counter()
            out = subprocess.run(["nvme", "discover", *ADDR], capture_output=True, text=True)
            if "klingons" not in out.stdout:
                run("nvme", "disconnect", "-n", "klingons")
            wait(lambda: "klingons" not in live("io", any_state=True), 60, 0.002)
            if r >= self.cfg.warmup:
                took.append(time.perf_counter() - t0)
            run(*NVMET, "link", "-p", "1", "-s", "klingons")
        return took

    def reactions(self) -> None:
        run(*NVMET, "create", "-f", str(write_target(3, spare=True)))
        after = "(after nvmet.py returns; gone: the device removed)"
        for peer, label in (("upstream", "upstream 2.4.1"), ("ours", "stacd")):
            if not self.has(peer):
                continue
            gone, back, new = self.react(peer)
            for what, xs, cmd in (
                ("unlink -> gone", gone, "unlink -p 1 -s klingons"),
                ("re-link -> live", back, "link -p 1 -s klingons"),
                ("new subsystem -> live", new, "link -p 1 -s romulans"),
            ):
                self.row(f"{what}: {label} {after}", fmt(xs) if xs else "failed", f"nvmet.py {cmd}")
        if self.has("cli"):
            self.row(
                "unlink -> gone: scripted nvme-cli",
                fmt(self.react_cli()),
                "nvme discover; nvme disconnect -n klingons",
            )
        reset()
        run(*NVMET, "clean")

    def linearity(self) -> None:
        """Each controller beyond the smallest scale, per peer (what does not depend on the
        count, process start-up and the DC, left out), and stacd's linearity check."""
        base = min(self.medians)
        for n, meds in sorted(self.medians.items()):
            if n == base:
                continue
            parts = [
                f"{label} {(meds[k] - self.medians[base][k]) / (n - base) * 1000:,.0f} ms"
                for k, label in (("cli", "nvme-cli"), ("upstream", "upstream"), ("ours", "stacd"))
                if k in meds and k in self.medians[base]
            ]
            self.row(f"{n} subsystems: each controller beyond {base}", " / ".join(parts), "")
        costs = {n: m["ours"] for n, m in self.medians.items() if "ours" in m}
        for n, ratio, limit, ok in linearity(costs):
            verdict = "PASS" if ok else "FAIL"
            self.row(
                f"linearity: stacd {n} / {LINEAR_BASE} subsystems "
                f"(linear {n / LINEAR_BASE:g}x, limit {limit:g}x)",
                f"{ratio:.2f}x {verdict}",
                "",
            )
            if not ok:
                self.failed.append(
                    f"stacd at {n} subsystems costs {ratio:.1f}x its "
                    f"{LINEAR_BASE} figure (limit {limit:g}x)"
                )


# --- host: install, then the VM ----------------------------------------------------------------


def install(dest: Path = INSTALL_DIR) -> Path:
    """`make install` into ``dest`` on the host (bench/install_layout.py); the prefix."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.install_layout import install_into

    try:
        return install_into(dest, INSTALL_PYTHON)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def vm_command(kernel: str, timeout: float, environ: Mapping[str, str]) -> list[str]:
    """runner.py's command line that runs this script in the VM, passing the BENCH_ settings."""
    cmd = [PY, str(RUNNER), "--kernel", kernel, "--timeout", f"{timeout:g}"]
    for name in PASSENV:
        if name in environ:
            cmd += ["-e", name]
    return [*cmd, "--", PY, str(Path(__file__).resolve())]


def host_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Install, then run the kernel benchmark in the VM.")
    p.add_argument("--kernel", default="6.1", help="Debian kernel series for runner.py (6.1)")
    p.add_argument("--timeout", type=float, default=3 * 3600, help="seconds for the VM run")
    args = p.parse_args(argv)
    try:
        cfg = settings(os.environ)
    except ValueError as e:
        print(f"kernel_bench: {e}", file=sys.stderr)
        return 2
    prefix = INSTALL_DIR / "usr"
    if os.environ.get("BENCH_LAYOUT", "installed") == "installed":
        prefix = install()
    if "upstream" in cfg.peers:
        try:
            upstream_peer.prepare(str(prefix / "lib" / "nvme-stas"))
        except upstream_peer.UpstreamError as e:
            print(
                f"upstream nvme-stas {upstream_peer.VERSION} will not be measured: {e}",
                file=sys.stderr,
                flush=True,
            )
    return subprocess.run(vm_command(args.kernel, args.timeout, os.environ)).returncode


# --- in the VM ---------------------------------------------------------------------------------


@contextmanager
def udevd() -> Iterator[str]:
    """systemd-udevd for the whole run, every peer alike (upstream hears AENs only through its
    re-broadcast uevents); yields what runs, for the report ('' when it cannot)."""
    argv = upstream_peer.udevd_argv()
    if not Path(argv[0]).exists():
        yield ""
        return
    upstream_peer.mask_rules()
    with open(LOGS / "udevd.log", "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out)
    try:
        wait(lambda: Path("/run/udev/control").exists() or proc.poll() is not None, 60)
        if proc.poll() is not None:
            print(f"  ! udevd exited ({proc.returncode}): see {LOGS}/udevd.log", flush=True)
            yield ""
        else:
            yield f"{argv[0]} (udev {Path(argv[0]).resolve().parent.parent.name}), pid {proc.pid}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def vm_main() -> int:
    sys.path.insert(0, str(ROOT))
    from stas.dbus.testbus import private_bus

    try:
        cfg = settings(os.environ)
    except ValueError as e:
        print(f"kernel_bench: {e}", file=sys.stderr)
        return 2
    layout = venv_layout() if os.environ.get("BENCH_LAYOUT") == "venv" else installed_layout()
    if "upstream" in cfg.peers and (why := upstream_peer.missing_reason(layout.libdir)):
        print(f"upstream not measured: {why}", flush=True)
        cfg = replace(cfg, peers=tuple(p for p in cfg.peers if p != "upstream"))
    TMP.mkdir(exist_ok=True)
    LOGS.mkdir(exist_ok=True)
    (TMP / "upstream-run").mkdir(exist_ok=True)
    (TMP / "stafd.conf").write_text(
        "[Service Discovery]\nzeroconf=disabled\n[Controllers]\n"
        "controller=transport=tcp;traddr=::1;trsvcid=8009\n"
        "[Discovery controller connection management]\npersistent-connections=false\n"
    )
    (TMP / "stacd.conf").write_text("")
    with private_bus() as address, udevd() as udev:
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
        env.pop("NOTIFY_SOCKET", None)
        bench = Bench(env, layout, address, cfg)
        head = (
            f"kernel {os.uname().release}; layout timed: {layout.describe()}\n"
            f"rounds per figure: {cfg.runs} (+{cfg.warmup} warm-up, discarded); scales: "
            f"{','.join(map(str, cfg.scales))}; parts: {cfg.parts}; peers: {','.join(cfg.peers)}\n"
            f"udevd for every peer: {udev or 'not running'}"
        )
        print(head, flush=True)
        if cfg.parts == "floor":
            for n in cfg.scales:
                run(*NVMET, "create", "-f", str(write_target(n)))
                bench.floors(n)
                reset()
                run(*NVMET, "clean")
        else:
            run(*NVMET, "create", "-f", str(write_target(3)))
            bench.discovery()
            reset()
            run(*NVMET, "clean")
            for n in cfg.scales:
                bench.scale(n)
            bench.linearity()
            bench.reactions()
    width = max(len(r[0]) for r in bench.rows)
    print(f"\n{head}")
    for what, value, command in bench.rows:
        print(f"{what.ljust(width)}  {value}" + (f"   [{command}]" if command else ""))
    for problem in bench.failed:
        print(f"FAIL: {problem}")
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(vm_main() if os.environ.get("STAS_IN_VM") == "1" else host_main())
