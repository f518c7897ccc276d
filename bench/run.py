#!/usr/bin/env python3
"""Benchmarks (not tests): speed and memory figures, compared with their targets.

Each benchmark prints one row: name, median (min-max, n), target, PASS/MISS (a MISS is
reported, never raised). Everything runs against the simulator on loopback, so the figures
are comparable between machines of this kind; the kernel comparisons (nvme-cli) run in the
VM (bench/kernel_bench.py). ``BENCH_QUICK=1`` (or ``--quick``) runs every benchmark small,
as a CI smoke test of the benchmarks themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "nvmet-harness"))
sys.path.insert(0, str(ROOT))

from nvmet_config import parse_nvmet_conf  # noqa: E402
from sim_server import open_simulator  # noqa: E402

from bench.report import Row, failed, table  # noqa: E402
from stas.nvme.host_ops import HostIdentity  # noqa: E402
from stas.nvme.logpage import DiscoveryLogPage  # noqa: E402
from stas.nvme.session import DiscoverySession, SessionOptions  # noqa: E402

HOST = HostIdentity(
    hostnqn="nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000b1",
    hostid=bytes(16),
)


def conf_text(subsystems: int) -> str:
    subs = ", ".join(
        f"{{'subsysnqn': 'nqn.2026-01.io.bench:sub{i:04d}', 'port': 1, 'namespaces': [1]}}"
        for i in range(subsystems)
    )
    return (
        "{'ports': [{'id': 1, 'traddr': '::1', 'trsvcid': 8009, 'trtype': 'tcp'}],"
        f" 'subsystems': [{subs}]}}"
    )


def summary(samples: list[float], unit: str = "ms", scale: float = 1000.0) -> str:
    med = statistics.median(samples) * scale
    lo, hi = min(samples) * scale, max(samples) * scale
    return f"{med:.1f} {unit} (min {lo:.1f}, max {hi:.1f}, n={len(samples)})"


def bench_decode_1000(runs: int) -> list[float]:
    from bench.micro import log_page

    data = log_page(1000)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        DiscoveryLogPage.decode(data)
        samples.append(time.perf_counter() - t0)
    return samples


async def _session_latency(subsystems: int, runs: int) -> list[float]:
    conf = parse_nvmet_conf(conf_text(subsystems))
    samples = []
    async with open_simulator(conf, ephemeral=True) as sim:
        host, port = sim.endpoint(1)
        for _ in range(runs):
            t0 = time.perf_counter()
            async with DiscoverySession.open(
                host, port, host=HOST, options=SessionOptions(kato_ms=0)
            ) as session:
                page = await session.get_log_page()
            samples.append(time.perf_counter() - t0)
            assert len(page.entries) == subsystems
    return samples


async def _aen_to_page(runs: int) -> list[float]:
    conf = parse_nvmet_conf(conf_text(3))
    samples = []
    async with open_simulator(conf, ephemeral=True) as sim:
        host, port = sim.endpoint(1)
        opts = SessionOptions(persistent=True)
        async with DiscoverySession.open(host, port, host=HOST, options=opts) as session:
            aens = session.aens()
            await session.get_log_page()
            nqn = "nqn.2026-01.io.bench:sub0000"
            for i in range(runs):
                t0 = time.perf_counter()
                await (sim.unlink(1, nqn) if i % 2 == 0 else sim.link(1, nqn))
                await aens.__anext__()
                await session.get_log_page()
                samples.append(time.perf_counter() - t0)
    return samples


def bench_cold_discover(runs: int) -> list[float]:
    """A whole `python -m stas.nvme.discover` process, like timing `nvme discover`."""

    async def serve(ready: Callable[[int], None]) -> None:
        conf = parse_nvmet_conf(conf_text(3))
        async with open_simulator(conf, ephemeral=True) as sim:
            ready(sim.endpoint(1)[1])
            await trio.sleep_forever()

    samples: list[float] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port_box: list[int] = []
            nursery.start_soon(serve, port_box.append)
            while not port_box:
                await trio.sleep(0.01)
            argv = [sys.executable, "-m", "stas.nvme.discover", "-a", "::1", "-s", str(port_box[0])]
            for _ in range(runs):
                t0 = time.perf_counter()
                await trio.run_process(argv, capture_stdout=True)
                samples.append(time.perf_counter() - t0)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return samples


def bench_import(module: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        samples.append(time.perf_counter() - t0)
    return samples


def bench_stafctl_ls(runs: int) -> list[float]:
    """`stafctl -v` process time (imports + argument parsing), the CLI start-up cost."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "stas.ctl.stafctl", "-v"], capture_output=True)
        samples.append(time.perf_counter() - t0)
    return samples


def bench_daemons(runs: int) -> list[Row]:
    """stafd and stacd (fake kernel) on a private bus: `stafctl ls` time and each daemon's RSS."""
    from stas.dbus.testbus import private_bus

    out: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, private_bus() as address:
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
        sim = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "nvmet-harness/simulator.py"),
                "serve",
                "-f",
                str(ROOT / "nvmet-harness/nvmet.conf"),
                "--ephemeral",
                "--control",
                f"{tmp}/s.sock",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        port = sim.stdout.readline().decode().split("]:", 1)[1].split(" ", 1)[0]
        Path(tmp, "stafd.conf").write_text(
            "[Service Discovery]\nzeroconf=disabled\n[Controllers]\n"
            f"controller=transport=tcp;traddr=localhost;trsvcid={port}\n"
        )
        Path(tmp, "stacd.conf").write_text("")
        common = ["--sys-conf", f"{tmp}/sys.conf"]
        stafd = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stas.main",
                "-f",
                f"{tmp}/stafd.conf",
                "--state-dir",
                tmp,
                *common,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stacd = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stas.stacd",
                "-f",
                f"{tmp}/stacd.conf",
                "--kernel",
                "fake",
                *common,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ls = [sys.executable, "-m", "stas.ctl.stafctl", "ls"]
            deadline = time.monotonic() + 20
            while b"::1" not in subprocess.run(ls, env=env, capture_output=True).stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError("stafd did not come up")
                time.sleep(0.05)
            time.sleep(1.0)  # let stacd connect its three controllers
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter()
                subprocess.run(ls, env=env, capture_output=True, check=True)
                samples.append(time.perf_counter() - t0)
            out.append(Row("`stafctl ls` (a whole process, D-Bus call included)", samples))
            for name, proc in (("stafd", stafd), ("stacd", stacd)):
                rss = next(
                    ln
                    for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                    if ln.startswith("VmRSS")
                )
                text = rss.split(":")[1].strip()
                out.append(Row(f"{name} RSS (1 DC, 3 I/O controllers)", text=text))
        finally:
            for p in (stacd, stafd, sim):
                p.terminate()
                p.wait(10)
    return out


def _run(rows: list[Row], name: str, fn: Callable[[], list[Row]]) -> None:
    """Append a benchmark's rows; one that cannot run is a MISS row, and the rest go on."""
    try:
        rows.extend(fn())
    except Exception as exc:
        rows.append(failed(name, exc))


def main() -> int:
    from bench import daemons, micro

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    quick = args.quick
    n = args.runs or (3 if quick else 15)
    rows: list[Row] = []
    _run(
        rows,
        "interpreter",
        lambda: [Row("python -c pass (interpreter start)", bench_import("sys", n))],
    )
    _run(rows, "decode 1000", lambda: [Row("decode a 1000-entry log page", bench_decode_1000(n))])
    _run(rows, "(1) codec", lambda: micro.bench_codec(n))
    _run(
        rows,
        "sessions",
        lambda: [
            Row("discovery session, 3 entries (in process)", trio.run(_session_latency, 3, n)),
            Row(
                "discovery session, 1000 entries (in process)",
                trio.run(_session_latency, 1000, max(3, n // 3)),
            ),
            Row("unlink -> AEN -> new log page in hand", trio.run(_aen_to_page, n)),
        ],
    )
    _run(
        rows,
        "cold discover",
        lambda: [
            Row(
                "cold `python -m stas.nvme.discover` (3 entries)",
                bench_cold_discover(max(3, n // 3)),
            ),
            Row("`stafctl -v` start-up", bench_stafctl_ls(n)),
        ],
    )
    _run(rows, "daemons", lambda: bench_daemons(n))
    print("  ... in-process benchmarks done", file=sys.stderr, flush=True)
    rows += daemons.run_all(quick)
    _run(
        rows,
        "(5) uevent storm",
        lambda: micro.bench_uevent_storm(10_000 if quick else 100_000, n // 3 or 1),
    )
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(table(rows))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "0")
    with tempfile.TemporaryDirectory():
        sys.exit(main())
