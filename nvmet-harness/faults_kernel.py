#!/usr/bin/env python3
"""The fault campaign on the real kernel (`make faults-kernel`; run in the VM as root).

stafd with its kernel backend and stacd on the real nvme-tcp host, both on a private bus,
against the kernel's nvmet target (null_blk namespaces), one boot, one fault after another:
the DC's port removed (connects refused) and the DC gone for a minute, an unlink/link storm,
a namespace disabled under a live I/O controller, stafd SIGKILLed and restarted while stacd
runs (upstream's stacd disconnected everything then, PR #510), and stacd SIGKILLed at random
moments while the log page changes.

Everything is measured from outside, as an operator sees it: sysfs for what the kernel has
(sampled every 0.3 s, so a controller torn down and rebuilt shows up as a new device name),
`stafctl ls` as a whole process every 2 s, the daemons' own log lines. Each fault gives one
row (JSON, read by tests/faults/campaign.py): the line naming the DC, `stafctl ls` latency,
the time to recover, and how many controllers were lost. It asserts nothing beyond its exit
status (1 when a row lost a controller, connected one twice or could not run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "nvmet-harness"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench import harness  # noqa: E402

PY = sys.executable
NVMET = [PY, str(ROOT / "nvmet-harness/nvmet.py")]
CONFIGFS = Path("/sys/kernel/config/nvmet")
PORT = CONFIGFS / "ports" / "1"
SYS = Path("/sys/class/nvme")
TMP = Path("/tmp/stas-faults-kernel")
DELL = "nqn.1988-11.com.dell:PowerSANxxx:01:20210225100113-454f73093ceb4847a7bdfc6e34ae8e28"
LINKED = ("klingons", "starfleet", DELL)
SPARE = "romulans"  # unlinked at first: the storm links and unlinks it
WHERE = "stafd kernel backend + stacd, real kernel (Debian {kernel} VM, nvmet)"
RECONNECT_DELAY = 2  # [Global] reconnect-delay of both daemons: the kernel's retry pace
SETTLE = 120.0  # seconds to wait for convergence before calling a row failed


# --- what the kernel has ----------------------------------------------------------------------


def _attr(d: Path, name: str) -> str:
    try:
        return (d / name).read_text().strip()
    except OSError:
        return ""


def controllers(kind: str) -> list[tuple[str, str, str]]:
    """(subsysnqn, device, state) of every controller of ``kind`` ('io' or 'discovery')."""
    out = []
    for d in sorted(SYS.glob("nvme*")):
        if _attr(d, "cntrltype") == kind:
            out.append((_attr(d, "subsysnqn"), d.name, _attr(d, "state")))
    return out


def io_live() -> dict[str, str]:
    return {nqn: dev for nqn, dev, state in controllers("io") if state == "live"}


def dc_live() -> str:
    """The discovery controller's device when it is live, else ''."""
    return next((dev for _, dev, state in controllers("discovery") if state == "live"), "")


def has_namespace(dev: str) -> bool:
    return any((SYS / dev).glob(f"{dev}*n*")) or any((SYS / dev).glob("nvme*c*n*"))


def wait(
    what: str,
    check: Callable[[], object],
    timeout: float = SETTLE,
    explain: Callable[[], str] | None = None,
) -> float:
    """Seconds until ``check`` returns something true; fails naming the last value seen (or
    what ``explain`` says about the state then)."""
    t0 = time.monotonic()
    while not (value := check()):
        if time.monotonic() - t0 > timeout:
            seen = explain() if explain else repr(value)
            raise RuntimeError(f"no {what} within {timeout:.0f} s (then: {seen})")
        time.sleep(0.1)
    return time.monotonic() - t0


def io_view() -> dict[str, str]:
    """subsysnqn -> 'device state' of every I/O controller: what a failed wait shows."""
    return {nqn: f"{dev} {state}" for nqn, dev, state in controllers("io")}


def kernel_view(truth: set[str]) -> str:
    """The kernel against ``truth``, short: what a row that did not converge says."""
    io = io_view()
    extra = {n: v for n, v in io.items() if n not in truth}
    missing = sorted(n for n in truth if not io.get(n, "").endswith(" live"))
    parts = [f"not wanted but present: {extra}"] if extra else []
    parts += [f"wanted but not live: {missing}"] if missing else []
    parts += [] if dc_live() else ["the DC not live"]
    return "; ".join(parts) or "converged"


# --- the target ---------------------------------------------------------------------------------


def nvmet(*args: str) -> None:
    subprocess.run([*NVMET, *args], check=True, capture_output=True)


def write_target() -> Path:
    subs = [{"subsysnqn": n, "port": 1, "namespaces": [1]} for n in LINKED]
    subs.append({"subsysnqn": SPARE, "port": None, "namespaces": [1]})
    conf = {
        "ports": [{"id": 1, "adrfam": "ipv6", "traddr": "::1", "trsvcid": 8009, "trtype": "tcp"}],
        "subsystems": subs,
    }
    path = TMP / "nvmet.conf"
    path.write_text(repr(conf) + "\n")
    return path


def port_down() -> list[str]:
    """Remove port 1 (the DC's and the I/O controllers'): connects are refused until port_up.

    configfs wants the links gone first; the last one disables the port (its listener and
    every queue on it go at once), all in well under a millisecond.
    """
    linked = sorted(p.name for p in (PORT / "subsystems").iterdir())
    for name in linked:
        os.unlink(PORT / "subsystems" / name)
    os.rmdir(PORT)
    return linked


def port_up(linked: list[str]) -> None:
    os.mkdir(PORT)
    for attr, value in (("trtype", "tcp"), ("traddr", "::1"), ("trsvcid", "8009"),
                        ("adrfam", "ipv6")):  # fmt: skip
        (PORT / f"addr_{attr}").write_text(value)
    for name in linked:
        os.symlink(CONFIGFS / "subsystems" / name, PORT / "subsystems" / name)


def link(nqn: str) -> None:
    """What ``nvmet.py link`` does, in-process: a storm must not wait for a Python start-up."""
    os.symlink(CONFIGFS / "subsystems" / nqn, PORT / "subsystems" / nqn)


def unlink(nqn: str) -> None:
    os.unlink(PORT / "subsystems" / nqn)


def set_namespace(nqn: str, enabled: bool) -> None:
    (CONFIGFS / "subsystems" / nqn / "namespaces" / "1" / "enable").write_text(
        "1" if enabled else "0"
    )


# --- the daemons --------------------------------------------------------------------------------


class Daemons:
    """stafd (kernel backend) and stacd (real kernel) as processes; every one started is kept,
    so a row reads the lines of the processes that ran during it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.stafd_conf = (
            f"[Global]\ndc-backend=kernel\nreconnect-delay={RECONNECT_DELAY}\n"
            "[Service Discovery]\nzeroconf=disabled\n"
            "[Controllers]\ncontroller=transport=tcp;traddr=::1;trsvcid=8009\n"
        )
        (TMP / "stacd.conf").write_text(f"[Global]\nreconnect-delay={RECONNECT_DELAY}\n")
        self.all: list[tuple[str, harness.Proc]] = []
        self.stafd = self.start_stafd()
        self.stacd = self.start_stacd()

    def start_stafd(self) -> harness.Proc:
        self.stafd = harness.stafd(TMP, self.env, self.stafd_conf)
        self.all.append(("stafd", self.stafd))
        return self.stafd

    def start_stacd(self) -> harness.Proc:
        argv = [PY, "-m", "stas.stacd", "-f", str(TMP / "stacd.conf"),
                "--sys-conf", str(TMP / "sys.conf")]  # fmt: skip
        self.stacd = harness.Proc(argv, self.env)
        self.all.append(("stacd", self.stacd))
        return self.stacd

    def marks(self) -> dict[int, int]:
        return {id(p): p.log.mark() for _, p in self.all}

    def lines(self, name: str, since: dict[int, int], match: Callable[[str], bool]) -> list[str]:
        out: list[str] = []
        for n, p in self.all:
            if n == name:
                out += p.log.matching(match, since=since.get(id(p), 0))
        return out

    def kill(self, name: str) -> None:
        proc = self.stafd if name == "stafd" else self.stacd
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait(30)

    def stop(self) -> None:
        for _, p in self.all:
            p.stop(30)


def stafd_call(env: dict[str, str], method: str, *args: object) -> tuple[float, Any]:
    """(seconds, reply body) of one call into stafd from this process, connection included;
    the body is the error's text when the call failed. A whole `stafctl` process costs
    seconds of Python start-up under emulation, which would measure qemu, not stafd."""
    from stas.dbus.client import connect
    from stas.dbus.common import DBusError
    from stas.dbus.idl import STAFD

    t0 = time.perf_counter()
    try:
        with connect(STAFD, address=env["DBUS_SYSTEM_BUS_ADDRESS"], timeout=30) as staf:
            body: Any = staf.call(method, *args)
    except (DBusError, OSError) as exc:
        body = f"{type(exc).__name__}: {exc}"
    return time.perf_counter() - t0, body


def adlp_subnqns(env: dict[str, str]) -> set[str] | str:
    """The subsystems in stafd's cached pages, or why they could not be read."""
    _, body = stafd_call(env, "get_all_log_pages", False)
    if isinstance(body, str):
        return body
    pages = json.loads(body[0])  # nvmet lists its discovery subsystem too (subtype 'current')
    return {e["subnqn"] for dc in pages for e in dc["log-pages"] if e.get("subtype") == "nvme"}


# --- measuring during a row ----------------------------------------------------------------------


class Probe:
    """`stafctl ls` every 2 s, and sysfs every 0.3 s, in threads, for the length of a row."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.ls_ms: list[float] = []
        self.ls_failed = 0
        self.ls_errors: list[str] = []
        self.process_s: float | None = None  # one whole `stafctl ls` process
        self.stable: set[str] | None = None  # set by a fault that churns other subsystems
        self.progress = ""  # what a fault got through, shown if it fails half-way
        self.seen: dict[str, set[str]] = {}  # subsysnqn -> every device seen for it
        self.absent: dict[str, int] = {}  # subsysnqn -> samples with no controller at all
        self.most = 0  # most controllers seen at once for one subsystem
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._ls, self._sysfs)]

    def __enter__(self) -> Probe:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)

    def _ls(self) -> None:
        while not self._stop.is_set():
            seconds, body = stafd_call(self.env, "list_controllers", False)
            if isinstance(body, str):
                self.ls_failed += 1
                self.ls_errors.append(body)
            else:
                self.ls_ms.append(seconds * 1000)
            if self.process_s is None and len(self.ls_ms) >= 3:  # once, mid-fault
                seconds, out = harness.ctl(self.env, "stafctl", "ls")
                self.process_s = seconds if out.returncode == 0 else -1.0
            self._stop.wait(1.0)

    def _sysfs(self) -> None:
        while not self._stop.is_set():
            per: dict[str, list[str]] = {}
            for nqn, dev, _ in controllers("io"):
                per.setdefault(nqn, []).append(dev)
                self.seen.setdefault(nqn, set()).add(dev)
            for nqn in self.seen:
                if nqn not in per:
                    self.absent[nqn] = self.absent.get(nqn, 0) + 1
            self.most = max([self.most, *map(len, per.values())])
            self._stop.wait(0.3)

    def lost(self, stable: dict[str, str]) -> list[str]:
        """Stable subsystems whose controller vanished or was replaced by another device."""
        return sorted(
            n for n, dev in stable.items()
            if self.seen.get(n, set()) != {dev} or self.absent.get(n, 0)
        )  # fmt: skip


def pick(lines: list[str]) -> str:
    """The line an operator would read: the first warning or error, else the first line."""
    for level in ("ERROR", "WARNING"):
        for line in lines:
            if f" {level} " in line:
                return line.split(f" {level} ", 1)[1][:200]
    return lines[0].split(" INFO ", 1)[-1][:200] if lines else ""


# --- the faults ---------------------------------------------------------------------------------


class Campaign:
    def __init__(self, env: dict[str, str], kernel: str, out: Path) -> None:
        self.env = env
        self.where = WHERE.format(kernel=kernel)
        self.out = out  # rewritten after every row: a run cut short keeps what it measured
        self.d = Daemons(env)
        self.rows: list[dict[str, Any]] = []
        seed = int(os.environ.get("STAS_CRASH_SEED") or random.randrange(1 << 32))
        print(f"kill schedule seed {seed} (replay: STAS_CRASH_SEED={seed})", flush=True)
        self.rng = random.Random(seed)

    def converged(self, truth: set[str]) -> Callable[[], bool]:
        def check() -> bool:
            every = {n for n, _, _ in controllers("io")}
            return set(io_live()) == truth and every == truth and bool(dc_live())

        return check

    def settle(self, what: str, truth: set[str], timeout: float = SETTLE) -> float:
        """Seconds until the kernel has exactly ``truth`` live (and the DC); else say what
        differs."""
        truth = set(truth)
        return wait(what, self.converged(truth), timeout, lambda: kernel_view(truth))

    def row(self, fault: str, action: Callable[[Probe], dict[str, Any]],
            about: tuple[str, Callable[[str], bool]] | None = None) -> None:  # fmt: skip
        """Run one fault; ``about``: whose log and which lines the row quotes (default: stafd's
        lines naming the DC)."""
        print(f"== {fault}", flush=True)
        with contextlib.suppress(RuntimeError):  # a row that failed may leave things settling
            self.settle("a clean start", set(LINKED), 60)
        marks = self.d.marks()
        dc = dc_live()
        stable = io_live()
        res: dict[str, Any] = {"fault": fault, "where": self.where}
        with Probe(self.env) as probe:
            try:
                res.update(action(probe))
            except Exception as exc:  # one broken fault must not hide the others
                res["error"] = f"{type(exc).__name__}: {exc}"
                res["kernel_at_error"] = {"io": io_view(), "dc": dc_live() or "not live"}
                res["log_tails"] = {
                    name: self.d.lines(name, marks, lambda ln: True)[-20:]
                    for name in ("stafd", "stacd")
                }
        names = probe.stable if probe.stable is not None else set(stable)
        keep = {n: d for n, d in stable.items() if n in names}
        if res.get("error") and probe.progress:
            res.setdefault("figures", probe.progress)
        name, match = about or ("stafd", lambda ln: "8009" in ln or bool(dc and f"{dc}:" in ln))
        lines = self.d.lines(name, marks, match)
        disconnects = self.d.lines("stacd", marks, lambda ln: "; disconnecting" in ln)
        res.update(
            logged=pick(lines),
            log_lines=len(lines),
            ls_ms=probe.ls_ms,
            ls_failed=probe.ls_failed,
            ls_errors=probe.ls_errors[:3],
            ls_note=self.ls_note(probe),
            lost=probe.lost(keep),
            kept=len(keep),
            most_per_subsystem=probe.most,
            stacd_disconnects=len(disconnects),
        )
        res["ok"] = not res.get("error") and not res["lost"] and probe.most <= 1
        self.rows.append(res)
        self.save()
        ls = f"{statistics.median(probe.ls_ms):.0f} ms" if probe.ls_ms else "none"
        print(f"   {'ok' if res['ok'] else 'FAILED'}: {res.get('figures', '')} | "
              f"logged: {res['logged']} | ls median {ls} ({res['ls_note']}) | lost {res['lost']}"
              + (f" | {res['error']}" if res.get("error") else ""), flush=True)  # fmt: skip
        if res.get("error"):
            print(f"   kernel: {res['kernel_at_error']}; ls errors: {res['ls_errors']}")
            for name, tail in res["log_tails"].items():
                print(f"   --- {name} (last lines of the row)\n   " + "\n   ".join(tail))

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps({"where": self.where, "rows": self.rows}, indent=1))
        os.replace(tmp, self.out)

    @staticmethod
    def ls_note(probe: Probe) -> str:
        """What the latency cell adds: how it was measured, failures, one whole process."""
        note = "D-Bus list_controllers from a client process, every 1 s"
        if probe.ls_failed:
            note += f"; {probe.ls_failed} failed"
        if probe.process_s is not None:
            whole = "failed" if probe.process_s < 0 else f"{probe.process_s:.1f} s"
            note += f"; a whole `stafctl ls` under emulation: {whole}"
        return note

    # each fault returns {"figures": str, ...}; the row adds the common measurements

    def port_removed(self, seconds: float) -> Callable[[Probe], dict[str, Any]]:
        def action(probe: Probe) -> dict[str, Any]:
            linked = port_down()
            time.sleep(seconds)
            port_up(linked)
            t = self.settle("recovery", set(linked))
            pages = wait("stafd's pages", lambda: adlp_subnqns(self.env) == set(linked))
            return {"figures": f"port gone {seconds:.0f} s; recovered {t:.1f} s after it came "
                               f"back (all I/O controllers and the DC live), pages "
                               f"{pages:.1f} s later", "recover_s": t}  # fmt: skip

        return action

    def storm(self, probe: Probe, cycles: int) -> dict[str, Any]:
        probe.stable = set(LINKED)
        t0 = time.monotonic()
        for _ in range(cycles):
            link(SPARE)
            time.sleep(0.01)
            unlink(SPARE)
            time.sleep(0.01)
        link(SPARE)
        storm_s = time.monotonic() - t0
        truth = {*LINKED, SPARE}
        try:
            t = self.settle("convergence after the storm", truth)
            wait("stafd's pages", lambda: adlp_subnqns(self.env) == truth)
        finally:
            unlink(SPARE)  # the next rows start from the three linked subsystems
        self.settle("the spare gone again", set(LINKED))
        return {"figures": f"{2 * cycles + 1} link/unlink changes (AENs) in {storm_s:.1f} s; "
                           f"converged {t:.1f} s after the last one ({SPARE} connected once)",
                "recover_s": t}  # fmt: skip

    def namespace_removed(self, seconds: float) -> dict[str, Any]:
        dev = io_live()["klingons"]
        shown = has_namespace(dev)  # a block device under the controller (nvmeXcYnZ or nvmeXnZ)
        set_namespace("klingons", False)
        gone = wait("the namespace gone from the host", lambda: not has_namespace(dev), 60)
        time.sleep(seconds)
        set_namespace("klingons", True)
        back = wait("the namespace back", lambda: has_namespace(dev), 60) if shown else 0.0
        if io_live().get("klingons") != dev:
            raise RuntimeError(f"klingons' controller {dev} did not stay live")
        seen = (
            f"{dev}'s namespace gone from the host in {gone:.1f} s, back {back:.1f} s after "
            "re-enabling"
            if shown
            else f"no namespace block device under {dev} to watch"
        )
        return {"figures": f"{seen}; {dev} stayed live throughout", "recover_s": back}

    def stafd_killed(self, seconds: float) -> dict[str, Any]:
        since = self.d.stacd.log.mark()
        self.d.kill("stafd")
        away = self.d.stacd.log.wait_for(
            lambda ln: "stafd" in ln and "away" in ln, since=since, timeout=60
        )
        time.sleep(seconds)
        self.d.start_stafd()
        t = wait("stafd's pages again", lambda: adlp_subnqns(self.env) == set(LINKED))
        self.settle("convergence", set(LINKED))
        return {"figures": f"stafd down {seconds:.0f} s ({away[2].split(' INFO ', 1)[-1]}); "
                           f"restarted stafd served the pages in {t:.1f} s",
                "recover_s": t}  # fmt: skip

    def stacd_killed(self, probe: Probe, kills: int) -> dict[str, Any]:
        truth = set(LINKED)
        churn = "starfleet"
        probe.stable = truth - {churn}
        settle: list[float] = []
        steps: list[str] = []  # what happened, for a row that fails half-way

        def toggle() -> None:
            steps.append("unlink" if churn in truth else "link")
            (unlink if churn in truth else link)(churn)
            truth.symmetric_difference_update({churn})

        try:
            for _ in range(kills):
                toggle()
                pause = self.rng.uniform(0.0, 2.0)  # where the kill lands: mid-work or idle
                time.sleep(pause)
                self.d.kill("stacd")
                steps.append(f"SIGKILL after {pause:.1f} s")
                if self.rng.random() < 0.5:
                    toggle()  # the page changes while stacd is down
                t0 = time.monotonic()
                self.d.start_stacd()
                steps.append("restart")
                probe.progress = f"kill {len(settle) + 1} of {kills}; {churn}: {', '.join(steps)}"
                self.settle("convergence after restarting stacd", truth)
                settle.append(time.monotonic() - t0)
        finally:
            if churn not in truth:  # the next rows start from the three linked subsystems
                toggle()
        self.settle("convergence", truth)
        return {"figures": f"{kills} SIGKILLs of stacd while {churn} was linked/unlinked; "
                           f"restart to converged: max {max(settle):.1f} s, mean "
                           f"{statistics.mean(settle):.1f} s; nothing connected twice",
                "recover_s": max(settle)}  # fmt: skip

    def run(self) -> None:
        t = self.settle("first convergence", set(LINKED), 300)
        print(f"stafd + stacd converged on {sorted(io_live().items())} in {t:.1f} s", flush=True)
        self.row(
            "stafd SIGKILLed and restarted while stacd runs",
            lambda p: self.stafd_killed(15),
            ("stacd", lambda ln: "stafd" in ln),
        )
        self.row(
            "namespace disabled under a live I/O controller (10 s)",
            lambda p: self.namespace_removed(10),
            ("stacd", lambda ln: "klingons" in ln),
        )
        self.row("connection refused (port removed, 15 s)", self.port_removed(15))
        self.row("unlink/link storm (81 AENs)", lambda p: self.storm(p, 40))
        self.row(
            "SIGKILL of stacd at random moments while the log page changes (6)",
            lambda p: self.stacd_killed(p, 6),
            ("stacd", lambda ln: "adopting" in ln),
        )
        self.row("DC gone 60 s and back (port removed)", self.port_removed(60))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", required=True, help="JSON rows (a --share'd directory)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or not CONFIGFS.parent.is_dir():
        print(
            "faults_kernel: needs root and the kernel's nvmet (run it in the VM)", file=sys.stderr
        )
        return 1
    from stas.dbus.testbus import private_bus

    TMP.mkdir(exist_ok=True)
    harness.write_identity(TMP)
    nvmet("create", "-f", str(write_target()))
    kernel = os.environ.get("STAS_VM_KERNEL", os.uname().release)
    campaign = None
    try:
        with private_bus() as address:
            env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
            env.pop("NOTIFY_SOCKET", None)
            campaign = Campaign(env, kernel, Path(args.output))
            try:
                campaign.run()
            finally:
                campaign.d.stop()
    finally:
        subprocess.run(["nvme", "disconnect-all"], capture_output=True)
        subprocess.run([*NVMET, "clean"], capture_output=True)
        rows = campaign.rows if campaign else []
        print(f"{len(rows)} rows in {args.output}", flush=True)
        if campaign:
            for name, p in campaign.d.all:
                if "Traceback" in "\n".join(p.log.matching(lambda ln: True)):
                    print(f"--- {name} printed a traceback:", flush=True)
                    print("\n".join(ln for ln in p.log.matching(lambda ln: True)[-30:]))
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
