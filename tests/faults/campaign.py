#!/usr/bin/env python3
"""The fault campaign (`make faults`): each hostile discovery controller against a real stafd.

For every fault, a fresh stafd (userspace backend) runs on a private dbus-daemon with two
discovery controllers: a healthy witness and the faulty one (the simulator with its fault
switches, behind the hostile proxy that counts connect attempts and adds stream faults).
During a fixed window the campaign records what stafd logged about the faulty DC, how often
it connected, its RSS before and after, `stafctl ls` latency (a whole process, every second),
and whether a change on the witness still reached D-Bus. It prints a markdown table and
writes it to .build/faults.md. It reports; it asserts nothing (tests/faults/ does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import attrs
import trio

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT, ROOT / "nvmet-harness"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from nvmet_config import parse_nvmet_conf  # noqa: E402
from sim_faults import Faults  # noqa: E402
from sim_hostile import open_hostile_proxy  # noqa: E402
from sim_server import open_simulator  # noqa: E402

from bench import harness  # noqa: E402

WITNESS_NEW = "nqn.2026-01.io.faults:witness-new"


def conf(prefix: str, count: int, extra: str = "") -> str:
    subs = [f"{{'subsysnqn': '{prefix}-{i}', 'port': 1, 'namespaces': [1]}}" for i in range(count)]
    if extra:
        subs.append(f"{{'subsysnqn': '{extra}', 'port': 1, 'namespaces': [1]}}")
    return (
        "{'ports': [{'id': 1, 'traddr': '::1', 'trsvcid': 8009, 'trtype': 'tcp'}],"
        f" 'subsystems': [{', '.join(subs)}]}}"
    )


@attrs.frozen
class Fault:
    name: str
    faults: Faults = attrs.field(factory=Faults)
    mode: str = "pass"  # sim_hostile mode
    dctype: str = "ddc"
    params: str = ""  # extra controller= parameters for the faulty DC
    referrals: str = ""  # "", "self", "loop", "fanout"
    storm_per_s: int = 0
    closed_port: bool = False


FAULTS = (
    Fault("connection refused (accept, close)", faults=Faults(refuse=True)),
    Fault("port closed (ECONNREFUSED)", closed_port=True),
    Fault("dropped mid-log-page", mode="drop-mid-log-page"),
    Fault("reset (RST) mid-PDU", mode="reset-mid-pdu"),
    Fault("accepts, never answers", mode="never-answer"),
    Fault("keep-alive never answered (kato=2)", mode="ka-unanswered", params=";kato=2"),
    Fault("bad header digests", mode="bad-digest", params=";hdr-digest=true"),
    Fault("GENCTR moves on every read", faults=Faults(genctr_bump_on_read=10**9)),
    Fault("corrupt log page (RECFMT 7)", faults=Faults(corrupt_log_page=True)),
    Fault("NUMREC 2^64-1, short page", mode="numrec=18446744073709551615"),
    Fault("NUMREC 100,000 (over the cap)", mode="numrec=100000"),
    Fault("CDC rejects DIM", mode="dim-reject", dctype="cdc"),
    Fault("referral to itself", referrals="self"),
    Fault("referral loop A->B->A", referrals="loop"),
    Fault("1,000-referral fan-out", referrals="fanout"),
    Fault("AEN storm (1,000 changes/s)", storm_per_s=1000),
)


@attrs.define
class Result:
    fault: str
    logged: str = ""
    log_lines: int = 0
    attempts: int | None = None
    rss: tuple[int, int] = (0, 0)
    ls_ms: list[float] = attrs.Factory(list)
    witness_ms: float | None = None
    dcs_listed: int = 0
    alive: bool = True
    error: str = ""

    def row(self, window: float) -> str:
        ls = (
            f"{statistics.median(self.ls_ms):.0f} / {max(self.ls_ms):.0f} ms"
            if self.ls_ms
            else "no answer"
        )
        served = "no" if self.witness_ms is None else f"yes ({self.witness_ms:.0f} ms)"
        attempts = "-" if self.attempts is None else str(self.attempts)
        rss = f"{self.rss[0] / 1024:.0f} -> {self.rss[1] / 1024:.0f} MB"
        logged = (self.logged or "(nothing naming the DC)").replace("|", "\\|")
        if self.error:
            logged = f"campaign error: {self.error}"
        if not self.alive:
            logged = "stafd DIED; " + logged
        return (
            f"| {self.fault} | {logged} ({self.log_lines} lines) | {attempts} "
            f"| {rss} | {ls} | {served} | {self.dcs_listed} |"
        )


HEADER = (
    "| fault | what stafd logged about the DC (first warning; lines naming it) "
    "| connect attempts (whole run) | stafd RSS before -> after | `stafctl ls` median / max "
    "| witness DC served (change -> D-Bus) | DCs in `stafctl ls` |\n"
    "|---|---|---|---|---|---|---|"
)


def _pick_line(lines: list[str]) -> str:
    """The line an operator would read: the first warning or error, else the first line."""
    for level in ("ERROR", "WARNING"):
        for line in lines:
            if f" {level} " in line:
                return line.split(f" {level} ", 1)[1][:200]
    return lines[0].split(": ", 1)[-1][:200] if lines else ""


async def _timed_ctl(env: dict[str, str], *args: str) -> tuple[float, str | None]:
    seconds, out = await trio.to_thread.run_sync(lambda: harness.ctl(env, "stafctl", *args))
    return seconds, out.stdout if out.returncode == 0 else None


async def _subnqns(env: dict[str, str]) -> set[str]:
    _, out = await _timed_ctl(env, "--json", "adlp")
    try:
        return {e["subnqn"] for dc in json.loads(out or "[]") for e in dc["log-pages"]}
    except (ValueError, KeyError, TypeError):
        return set()


async def run_fault(fault: Fault, tmp: Path, env: dict[str, str], window: float) -> Result:
    res = Result(fault.name)
    async with AsyncExitStack() as stack:
        witness = await stack.enter_async_context(
            open_simulator(parse_nvmet_conf(conf("witness", 2, WITNESS_NEW)), ephemeral=True)
        )
        await witness.unlink(1, WITNESS_NEW)
        proxy = None
        if fault.closed_port:
            listener = trio.socket.socket(trio.socket.AF_INET6)
            await listener.bind(("::1", 0))
            port = listener.getsockname()[1]
            listener.close()  # nothing listens there now: connects get ECONNREFUSED
        else:
            sim = await stack.enter_async_context(
                open_simulator(
                    parse_nvmet_conf(conf("faulty", 3)),
                    ephemeral=True,
                    faults=fault.faults,
                    dctype=fault.dctype,
                )
            )
            proxy = await stack.enter_async_context(open_hostile_proxy(sim.endpoint(1), fault.mode))
            port = proxy.port
            await _referrals(fault, sim, port, stack)
        lines = "".join(
            f"controller=transport=tcp;traddr=::1;trsvcid={p}{extra}\n"
            for p, extra in ((witness.endpoint(1)[1], ""), (port, fault.params))
        )
        stafd = await trio.to_thread.run_sync(
            lambda: harness.stafd(
                tmp, env, "[Service Discovery]\nzeroconf=disabled\n[Controllers]\n" + lines
            )
        )
        try:
            with trio.move_on_after(30):
                while not {"witness-0", "witness-1"} <= await _subnqns(env):
                    await trio.sleep(0.1)
            res.rss = (stafd.rss_kb(), 0)
            async with trio.open_nursery() as nursery:
                if fault.storm_per_s:
                    nursery.start_soon(_storm, sim, fault.storm_per_s)
                nursery.start_soon(_probe_ls, env, res)
                await trio.sleep(window / 2)
                t0 = time.monotonic()
                await witness.link(1, WITNESS_NEW)
                with trio.move_on_after(window / 2):
                    while WITNESS_NEW not in await _subnqns(env):
                        await trio.sleep(0.02)
                    res.witness_ms = (time.monotonic() - t0) * 1000
                await trio.sleep(max(0.0, window / 2 - (time.monotonic() - t0)))
                nursery.cancel_scope.cancel()
            res.alive = stafd.alive()
            res.rss = (res.rss[0], stafd.rss_kb() if res.alive else 0)
            _, out = await _timed_ctl(env, "--json", "ls")
            res.dcs_listed = len(json.loads(out)) if out else 0
            if proxy is not None:
                res.attempts = proxy.accepted
            named = stafd.log.matching(lambda ln: f", {port}," in ln or f":{port}" in ln)
            res.log_lines = len(named)
            res.logged = _pick_line(named)
        finally:
            await trio.to_thread.run_sync(stafd.stop)
    return res


async def _referrals(fault: Fault, sim, port: int, stack: AsyncExitStack) -> None:
    if fault.referrals == "self":
        sim.model.add_referral(1, "::1", port)
    elif fault.referrals == "loop":
        other = await stack.enter_async_context(
            open_simulator(parse_nvmet_conf(conf("loop-b", 1)), ephemeral=True)
        )
        b_proxy = await stack.enter_async_context(open_hostile_proxy(other.endpoint(1)))
        sim.model.add_referral(1, "::1", b_proxy.port)  # A -> B
        other.model.add_referral(1, "::1", port)  # B -> A
    elif fault.referrals == "fanout":
        for i in range(1000):
            sim.model.add_referral(1, "::1", 20000 + i)  # nothing listens there


async def _storm(sim, per_s: int) -> None:
    """Real GENCTR changes, each one an AEN to every connected host."""
    while True:
        for _ in range(per_s // 100):
            sim.model.bump()
        await trio.sleep(0.01)


async def _probe_ls(env: dict[str, str], res: Result) -> None:
    while True:
        seconds, out = await _timed_ctl(env, "ls")
        if out is not None:
            res.ls_ms.append(seconds * 1000)
        await trio.sleep(1.0)


async def campaign(
    window: float, only: Callable[[Fault], bool], report: Callable[[str], None]
) -> list[Result]:
    import os

    from stas.dbus.testbus import private_bus

    results = []
    for fault in FAULTS:
        if not only(fault):
            continue
        with tempfile.TemporaryDirectory(prefix="stas-faults-") as tmp, private_bus() as address:
            path = Path(tmp)
            harness.write_identity(path)
            env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
            env.pop("NOTIFY_SOCKET", None)
            try:
                res = await run_fault(fault, path, env, window)
            except Exception as exc:  # one broken scenario must not hide the others
                res = Result(fault.name, error=f"{type(exc).__name__}: {exc}")
        results.append(res)
        report(res.row(window))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=10.0, help="seconds per fault (10)")
    ap.add_argument("-k", default="", help="only faults whose name contains this")
    ap.add_argument("-o", "--output", default=str(ROOT / ".build" / "faults.md"))
    ap.add_argument(
        "--readme", action="store_true", help="also put the table into README.md (its markers)"
    )
    args = ap.parse_args(argv)
    print(HEADER, flush=True)
    results = trio.run(
        campaign,
        args.window,
        lambda f: args.k.lower() in f.name.lower(),
        lambda row: print(row, flush=True),
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(r.row(args.window) for r in results)
    out.write_text(
        "# Fault campaign (`make faults`)\n\n"
        f"stafd (userspace backend) with a healthy witness DC and one faulty DC, "
        f"{args.window:.0f} s per fault.\n\n{HEADER}\n{body}\n"
    )
    print(f"\nwritten to {out}")
    if args.readme and not args.k:
        update_readme(ROOT / "README.md", f"{HEADER}\n{body}\n")
        print("README.md: the fault table updated")
    return 0


BEGIN, END = "<!-- faults table: begin (make faults) -->", "<!-- faults table: end -->"


def update_readme(readme: Path, table: str) -> None:
    """Replace what stands between the markers; the README's own words stay as they are."""
    text = readme.read_text()
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{readme}: no faults markers ({BEGIN} ... {END})")
    readme.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
