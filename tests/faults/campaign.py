#!/usr/bin/env python3
"""The fault campaign (`make faults`): each hostile discovery controller against a real stafd.

For every fault, a fresh stafd (userspace backend) runs on a private dbus-daemon with two
discovery controllers: a healthy witness and the faulty one (the simulator with its fault
switches, behind the hostile proxy that counts connect attempts and adds stream faults), and
a stacd on the fake kernel (``$STAS_FAKE_KERNEL_FILE``: its journal of connects and
disconnects is read afterwards) turns both DCs' pages into I/O controllers.
During a fixed window the campaign records what stafd logged about the faulty DC, how often
it connected, its RSS before and after, `stafctl ls` latency (a whole process, every second),
whether a change on the witness still reached D-Bus and stacd, and whether stacd
disconnected an I/O controller no log page dropped (no fault here drops one).

The rows are kept as JSON (.build/faults-userspace.json); the real-kernel rows of
`make faults-kernel` (nvmet-harness/faults_kernel.py in the VM, .build/faults-kernel/rows.json)
are merged with them into one table, each row saying where it ran: printed, written to
.build/faults.md and, with --readme, into README.md between its markers. It reports; it
asserts nothing (tests/faults/ does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

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


USERSPACE_WHERE = "stafd userspace backend + stacd fake kernel, loopback simulator"


@attrs.define
class Result:
    fault: str
    logged: str = ""
    log_lines: int = 0
    attempts: int | None = None
    rss: tuple[int, int] = (0, 0)
    ls_ms: list[float] = attrs.Factory(list)
    witness_ms: float | None = None
    witness_connect_ms: float | None = None
    dcs_listed: int = 0
    alive: bool = True
    error: str = ""
    io: IoJournal | None = None

    def as_row(self) -> dict[str, Any]:
        """The shape every row of the table has, wherever it ran (see ``render_row``)."""
        served = "no" if self.witness_ms is None else f"{self.witness_ms:.0f} ms"
        to_stacd = "no" if self.witness_connect_ms is None else f"{self.witness_connect_ms:.0f} ms"
        figures = [
            f"{'-' if self.attempts is None else self.attempts} connects",
            f"stafd RSS {self.rss[0] / 1024:.0f} -> {self.rss[1] / 1024:.0f} MB",
            f"witness change seen by `stafctl adlp` {served}, connected by stacd {to_stacd}",
            f"{self.dcs_listed} DCs listed",
        ]
        if self.io is not None:
            figures.append(f"stacd: {self.io.live} I/O controllers")
        error = self.error or ("" if self.alive else "stafd DIED")
        return {
            "fault": self.fault,
            "where": USERSPACE_WHERE,
            "logged": self.logged,
            "log_lines": self.log_lines,
            "ls_ms": self.ls_ms,
            "figures": "; ".join(figures),
            "lost": [] if self.io is None else self.io.lost,
            "kept": 0 if self.io is None else self.io.live,
            "most_per_subsystem": 1 if self.io is None else self.io.most,
            "error": error,
        }


@attrs.frozen
class IoJournal:
    """What the fake kernel's journal says stacd did to the I/O controllers."""

    live: int  # I/O controllers at the end
    lost: list[str]  # subsystems disconnected (no fault here drops a log page entry)
    most: int  # most controllers live at once for one subsystem (2: connected twice)
    added_at: dict[str, float]  # subsysnqn -> wall-clock time of its last connect

    @classmethod
    def read(cls, path: Path) -> IoJournal:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls(0, [], 0, {})
        live: dict[str, int] = {}
        lost: list[str] = []
        most = 0
        added_at: dict[str, float] = {}
        for rec in doc.get("journal", []):
            if rec.get("cntrltype") != "io":
                continue
            nqn = rec["subsysnqn"]
            if rec["action"] == "add":
                live[nqn] = live.get(nqn, 0) + 1
                most = max(most, live[nqn])
                added_at[nqn] = rec["t"]
            else:
                live[nqn] = live.get(nqn, 0) - 1
                lost.append(nqn)
        return cls(sum(v for v in live.values() if v > 0), sorted(lost), most, added_at)


HEADER = (
    "| fault | where (daemons, backend) | what was logged about the DC (first warning; "
    "lines naming it) | `stafctl ls` median / max | figures | I/O controllers lost |\n"
    "|---|---|---|---|---|---|"
)


def render_row(row: dict[str, Any]) -> str:
    """One markdown row from a row dict (this campaign's or faults_kernel.py's)."""
    ls = row.get("ls_ms") or []
    latency = f"{statistics.median(ls):.0f} / {max(ls):.0f} ms" if ls else "no answer"
    if row.get("ls_note"):
        latency += f" ({row['ls_note']})"
    logged = (row.get("logged") or "(nothing naming the DC)").replace("|", "\\|")
    logged = f"{logged} ({row.get('log_lines', 0)} lines)"
    if row.get("error"):
        logged = f"campaign error: {row['error']}; {logged}"
    lost = row.get("lost") or []
    verdict = f"{len(lost)} of {row.get('kept', 0)}"
    if lost:
        verdict += f" ({', '.join(lost)})"
    if row.get("most_per_subsystem", 1) > 1:
        verdict += "; one subsystem connected twice"
    figures = str(row.get("figures", "")).replace("|", "\\|")
    return f"| {row['fault']} | {row['where']} | {logged} | {latency} | {figures} | {verdict} |"


def render_table(rows: list[dict[str, Any]], kept: Sequence[str] = ()) -> str:
    """The header, ``rows`` rendered, then ``kept`` markdown lines as they were."""
    return "\n".join([HEADER, *(render_row(r) for r in rows), *kept]) + "\n"


def readme_rows(readme: Path, where: Callable[[str], bool]) -> list[str]:
    """The README table's current lines whose second cell (where it ran) passes ``where``."""
    try:
        text = readme.read_text()
    except OSError:
        return []
    _, _, rest = text.partition(BEGIN)
    table, _, _ = rest.partition(END)
    out = []
    for line in table.splitlines()[3:]:  # after the blank line, the header and its rule
        parts = line.replace("\\|", "\0").split("|")
        if len(parts) > 2 and where(parts[2]):
            out.append(line)
    return out


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
        kernel_file = tmp / "kernel.json"
        stacd_env = dict(env, STAS_FAKE_KERNEL_FILE=str(kernel_file))
        stacd = await trio.to_thread.run_sync(lambda: harness.stacd(tmp, stacd_env))
        try:
            with trio.move_on_after(30):
                while not {"witness-0", "witness-1"} <= await _subnqns(env):
                    await trio.sleep(0.1)
                while not {"witness-0", "witness-1"} <= IoJournal.read(kernel_file).added_at.keys():
                    await trio.sleep(0.1)
            res.rss = (stafd.rss_kb(), 0)
            async with trio.open_nursery() as nursery:
                if fault.storm_per_s:
                    nursery.start_soon(_storm, sim, fault.storm_per_s)
                nursery.start_soon(_probe_ls, env, res)
                await trio.sleep(window / 2)
                t0, wall0 = time.monotonic(), time.time()
                await witness.link(1, WITNESS_NEW)
                with trio.move_on_after(window / 2):
                    while WITNESS_NEW not in await _subnqns(env):
                        await trio.sleep(0.02)
                    res.witness_ms = (time.monotonic() - t0) * 1000
                    while WITNESS_NEW not in IoJournal.read(kernel_file).added_at:
                        await trio.sleep(0.02)
                    added = IoJournal.read(kernel_file).added_at[WITNESS_NEW]
                    res.witness_connect_ms = (added - wall0) * 1000
                await trio.sleep(max(0.0, window / 2 - (time.monotonic() - t0)))
                nursery.cancel_scope.cancel()
            res.alive = stafd.alive()
            if not stacd.alive():
                tail = " / ".join(stacd.log.matching(lambda ln: True)[-2:])
                res.error = f"stacd DIED: {tail[:300]}"
            res.rss = (res.rss[0], stafd.rss_kb() if stafd.alive() else 0)
            _, out = await _timed_ctl(env, "--json", "ls")
            res.dcs_listed = len(json.loads(out)) if out else 0
            if proxy is not None:
                res.attempts = proxy.accepted
            named = stafd.log.matching(lambda ln: f", {port}," in ln or f":{port}" in ln)
            res.log_lines = len(named)
            res.logged = _pick_line(named)
            res.io = IoJournal.read(kernel_file)
        finally:
            await trio.to_thread.run_sync(stacd.stop)
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
) -> list[dict[str, Any]]:
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
        results.append(res.as_row())
        report(render_row(results[-1]))
    return results


BUILD = ROOT / ".build"
USERSPACE_ROWS = BUILD / "faults-userspace.json"
KERNEL_ROWS = BUILD / "faults-kernel" / "rows.json"  # written in the VM by faults_kernel.py


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Rows saved by an earlier run; none when the file is missing or unreadable."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    rows = doc.get("rows") if isinstance(doc, dict) else doc
    return [r for r in rows or [] if isinstance(r, dict) and "fault" in r and "where" in r]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=10.0, help="seconds per fault (10)")
    ap.add_argument("-k", default="", help="only faults whose name contains this")
    ap.add_argument("-o", "--output", default=str(BUILD / "faults.md"))
    ap.add_argument(
        "--readme", action="store_true", help="also put the table into README.md (its markers)"
    )
    ap.add_argument(
        "--merge-only",
        action="store_true",
        help="run nothing: merge the saved loopback and real-kernel rows into the table",
    )
    args = ap.parse_args(argv)
    if args.merge_only:
        ours = load_rows(USERSPACE_ROWS)
    else:
        print(HEADER, flush=True)
        ours = trio.run(
            campaign,
            args.window,
            lambda f: args.k.lower() in f.name.lower(),
            lambda row: print(row, flush=True),
        )
        if not args.k:
            USERSPACE_ROWS.parent.mkdir(parents=True, exist_ok=True)
            USERSPACE_ROWS.write_text(json.dumps({"rows": ours}, indent=1))
    kernel = load_rows(KERNEL_ROWS)
    readme = ROOT / "README.md"
    # a source with no saved rows keeps the README's current rows from it
    keep_loopback = [] if ours else readme_rows(readme, lambda where: "loopback" in where)
    keep_kernel = [] if kernel else readme_rows(readme, lambda where: "real kernel" in where)
    table = render_table([*ours, *kernel], keep_loopback + keep_kernel)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Fault campaign (`make faults`, `make faults-kernel`)\n\n"
        f"{len(ours)} loopback rows ({args.window:.0f} s per fault), "
        f"{len(kernel)} real-kernel rows (and {len(keep_loopback) + len(keep_kernel)} kept "
        f"from README.md).\n\n{table}"
    )
    print(f"\n{len(ours)} loopback and {len(kernel)} real-kernel rows written to {out}")
    if args.readme and not args.k:
        update_readme(readme, table)
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
