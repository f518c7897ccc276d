"""stafd's supervision tree (issue 10): a crash in any one actor restarts that actor (and what
depends on it) while the rest keeps serving; a DC's crash loop marks that DC failed and is
retried later; a crash loop of the tree ends stafd with one line.

stafd runs in-process under MockClock on a private dbus-daemon, with in-memory DCs, a fake
mDNS browser and uevent monitor; crashes are injected into each child of the tree.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import stas.actors.mdns
import stas.actors.uevents
import stas.stafd
from stas.actors.dc_backend import ConnectionLostEvent, DcConnection, DcEvent
from stas.actors.dc_kernel import UeventHub
from stas.actors.tree import Tree
from stas.dbus.idl import STAFD
from stas.logsetup import TronControl
from stas.messages import MdnsServiceUp, Tid
from stas.nvme.logpage import DiscoveryLogPage, LogPageEntry
from stas.sdnotify import Notifier
from stas.stafd import Stafd, StafdOptions, run_stafd
from tests.helpers.config import host_files
from tests.helpers.supervision import (
    CrashInjected,
    Faults,
    Injected,
    call_time_stopped,
    real_time_limit,
    until_reported,
)

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:5e0ba5e1-cafe-4e11-8b1e-000000000001"
HOSTID = "5e0ba5e1-cafe-4e11-8b1e-000000000001"
DISC = "nqn.2014-08.org.nvmexpress.discovery"
DC1 = Tid("tcp", "192.0.2.1", "8009", DISC, host_nqn=HOSTNQN)
DC2 = Tid("tcp", "192.0.2.2", "8009", DISC, host_nqn=HOSTNQN)
ANNOUNCED = Tid("tcp", "192.0.2.3", "8009", DISC)  # found by the (fake) mDNS browser
DC3 = attrs.evolve(ANNOUNCED, host_nqn=HOSTNQN)


def entry(subnqn: str) -> LogPageEntry:
    return LogPageEntry(trtype=3, adrfam=1, subtype=2, treq=0, portid=1, cntlid=0xFFFF,
                        asqsz=32, eflags=0, trsvcid="4420", subnqn=subnqn,
                        traddr="192.0.2.20")  # fmt: skip


class Conn:
    def __init__(self, tid: Tid) -> None:
        self.device, self.cntrltype, self.dctype = "nvme?", "discovery", "ddc"
        self.registered = True
        self.page = DiscoveryLogPage(genctr=1, entries=(entry(f"nqn.io.{tid.traddr}"),))
        self.send, self.recv = trio.open_memory_channel[DcEvent](8)

    async def get_log_page(self) -> DiscoveryLogPage:
        await trio.lowlevel.checkpoint()
        return self.page

    def events(self) -> trio.MemoryReceiveChannel[DcEvent]:
        return self.recv


@attrs.define
class Backend:
    """DCs that connect at once and serve one page each; ``broken`` ones crash the actor."""

    connects: Counter[Tid] = attrs.Factory(Counter)
    broken: set[Tid] = attrs.Factory(set)
    conns: dict[Tid, Conn] = attrs.Factory(dict)
    host: Any = None  # a reload gives the userspace backend the new identity

    def connect(
        self, tid: Tid, params: Mapping[str, str], **_: Any
    ) -> AbstractAsyncContextManager[DcConnection]:
        return self._connect(tid)

    @asynccontextmanager
    async def _connect(self, tid: Tid) -> AsyncIterator[DcConnection]:
        self.connects[tid] += 1
        await trio.lowlevel.checkpoint()
        if tid in self.broken:
            raise AssertionError(f"bug while connecting to {tid.traddr}")  # not a peer error
        self.conns[tid] = Conn(tid)
        yield self.conns[tid]


class CrashableStafd(CrashInjected, Stafd):
    pass


def options(tmp: Path, zeroconf: bool = True) -> StafdOptions:
    sys_conf = host_files(tmp, HOSTNQN, HOSTID)
    (tmp / "stafd.conf").write_text(
        f"[Service Discovery]\nzeroconf={'enabled' if zeroconf else 'disabled'}\n"
        "[Controllers]\ncontroller=transport=tcp;traddr=192.0.2.1\n"
        "controller=transport=tcp;traddr=192.0.2.2\n"
    )
    (tmp / "state").mkdir(exist_ok=True)
    return StafdOptions(str(tmp / "stafd.conf"), str(sys_conf), str(tmp / "state"),
                        nbft_dir=None, nvme_dir=None)  # fmt: skip


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A fake mDNS browser (announces DC3) and uevent monitor, counting their starts."""
    seen = SimpleNamespace(mdns=0, monitor=0, resyncs=0)

    async def browser(send: Any, *, task_status: Any, **_: Any) -> None:
        seen.mdns += 1
        task_status.started(SimpleNamespace(snapshot=lambda: {"services": 1}))
        await send.send(MdnsServiceUp("dc3._nvme-disc._tcp.local.", ANNOUNCED))
        await trio.sleep_forever()

    async def monitor(send: Any, *, resync: Any, task_status: Any, **_: Any) -> None:
        seen.monitor += 1
        task_status.started()
        await resync()
        seen.resyncs += 1
        await trio.sleep_forever()

    monkeypatch.setattr(stas.actors.mdns, "run_mdns_browser", browser)
    monkeypatch.setattr(stas.actors.uevents, "run_uevent_monitor", monitor)
    return seen


@asynccontextmanager
async def running(
    tmp: Path, bus: str, faults: Faults, *, zeroconf: bool = True
) -> AsyncIterator[CrashableStafd]:
    daemon = CrashableStafd(attrs.evolve(options(tmp, zeroconf), bus_address=bus),
                       TronControl(logging.getLogger("test.sup")), Notifier({}),
                       faults=faults)  # fmt: skip
    daemon.backend = Backend()
    daemon.hub = UeventHub()  # the kernel backend's uevent subtree, with a fake kernel
    daemon.kernel = SimpleNamespace(list_controllers=lambda: _none())
    async with real_time_limit("stafd's test"), trio.open_nursery() as nursery:
        nursery.start_soon(daemon.run)
        while daemon.root is None:  # the whole tree started (D-Bus name owned)
            await trio.sleep(0.01)
        await until_dcs(daemon, {DC1, DC2} | ({DC3} if zeroconf else set()))
        yield daemon
        nursery.cancel_scope.cancel()


async def _none() -> list[Any]:
    return []


async def until_dcs(daemon: Stafd, tids: set[Tid], state: str = "connected") -> None:
    def ok(snap: Any) -> bool:
        states = {dc.tid: dc.state for dc in snap.dcs}
        return all(states.get(t) == state for t in tids)

    await daemon.published.wait_value(ok)


async def dbus(bus: str, method: str, *args: Any) -> Any:
    return await call_time_stopped(STAFD, bus, method, *args)


async def dc_rows(bus: str) -> dict[str, dict[str, str]]:
    (rows,) = await dbus(bus, "list_controllers", True)
    return {r["traddr"]: r for r in rows}


# what a crash of each child restarts (rest_for_one inside "uevents" and "discovery")
RESTARTED = {
    "stafd/uevents/hub": {"stafd/uevents/hub", "stafd/uevents/monitor"},
    "stafd/uevents/monitor": {"stafd/uevents/monitor"},
    "stafd/discovery/finder": {"stafd/discovery/finder", "stafd/discovery/mdns"},
    "stafd/discovery/mdns": {"stafd/discovery/mdns"},
    "stafd/dbus": {"stafd/dbus"},
}


@pytest.mark.parametrize("path", sorted(RESTARTED))
async def test_a_crashed_actor_is_restarted_and_the_rest_keeps_serving(
    path: str, autojump_clock: trio.testing.MockClock, bus_address: str, tmp_path: Path,
    fakes: SimpleNamespace,
) -> None:  # fmt: skip
    faults = Faults()
    async with running(tmp_path, bus_address, faults) as daemon:
        backend = daemon.backend
        before, connects = Counter(faults.starts), Counter(backend.connects)
        assert set(before) == {*RESTARTED, "stafd/watchdog"}  # each child kind is covered
        faults.crash(path)
        report = await until_reported(daemon, path, state="running", restarts="1")
        assert report["last error"] == f"RuntimeError: injected crash in {path}"
        await faults.until_restarted(before, RESTARTED[path])
        assert await dbus(bus_address, "process_info")  # D-Bus answers (again)
        restarted = {p for p in faults.starts if faults.starts[p] != before[p]}
        assert restarted == RESTARTED[path]
        assert all(faults.starts[p] == before[p] + 1 for p in restarted)
        await until_dcs(daemon, {DC1, DC2, DC3})
        rows = await dc_rows(bus_address)
        assert {r["state"] for r in rows.values()} == {"connected"}
        assert {k: r["log page entries"] for k, r in rows.items()} == {
            "192.0.2.1": "1", "192.0.2.2": "1", "192.0.2.3": "1"}  # fmt: skip
        if path == "stafd/discovery/finder":  # its DC actors went with it, pages kept
            assert backend.connects == connects + Counter({DC1: 1, DC2: 1, DC3: 1})
        else:  # the DCs were not touched
            assert backend.connects == connects
        (info,) = await dbus(bus_address, "process_info")
        status = json.loads(info)
        assert status["hostnqn"] == HOSTNQN and "avahi" in status  # upstream's keys intact
        assert status["supervision"][path]["restarts"] == "1"
        assert status["supervision"]["stafd"]["state"] == "running"
    if path == "stafd/uevents/hub":
        assert fakes.resyncs == 2  # the monitor restarted with it resynced the DCs


async def test_one_dc_crashing_is_restarted_alone(
    autojump_clock: trio.testing.MockClock, bus_address: str, tmp_path: Path,
    fakes: SimpleNamespace, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    crash_dc1 = trio.Event()
    real = stas.stafd.run_dc_actor

    async def dc_actor(wanted: Any, updates: Any, **kw: Any) -> None:
        async def bomb() -> None:
            await crash_dc1.wait()
            raise Injected()

        try:
            async with trio.open_nursery() as nursery:
                if wanted.tid == DC1 and not crash_dc1.is_set():
                    nursery.start_soon(bomb)
                await real(wanted, updates, **kw)
        except BaseExceptionGroup as group:
            if group.subgroup(Injected) is not None:
                raise RuntimeError("injected DC crash") from None
            raise

    monkeypatch.setattr(stas.stafd, "run_dc_actor", dc_actor)
    async with running(tmp_path, bus_address, Faults()) as daemon:
        connects = Counter(daemon.backend.connects)
        crash_dc1.set()
        await until_reported(daemon, f"stafd/discovery/finder/{dc_name(DC1)}", state="running",
                             restarts="1")  # fmt: skip
        await until_dcs(daemon, {DC1, DC2, DC3})
        assert daemon.backend.connects == connects + Counter({DC1: 1})
        rows = await dc_rows(bus_address)
        assert rows["192.0.2.1"]["state"] == "connected"


def dc_name(tid: Tid) -> str:
    return "dc|" + "|".join(tid.as_dict().values())


async def test_a_dc_in_a_crash_loop_is_failed_on_dbus_then_retried(
    autojump_clock: trio.testing.MockClock, bus_address: str, tmp_path: Path,
    fakes: SimpleNamespace,
) -> None:  # fmt: skip
    async with running(tmp_path, bus_address, Faults(), zeroconf=False) as daemon:
        backend = daemon.backend
        backend.broken.add(DC1)
        backend.connects.clear()
        backend.conns[DC1].send.send_nowait(ConnectionLostEvent("test"))  # reconnect: crash
        path = f"stafd/discovery/finder/{dc_name(DC1)}"
        report = await until_reported(daemon, path, state="failed")
        assert report["last error"] == "AssertionError: bug while connecting to 192.0.2.1"
        rows = await dc_rows(bus_address)
        assert rows["192.0.2.1"]["state"] == "failed"
        assert rows["192.0.2.1"]["last error"].startswith("internal error: AssertionError")
        assert rows["192.0.2.1"]["log page entries"] == "1"  # its cached page stays for stacd
        assert rows["192.0.2.2"]["state"] == "connected"  # the other DC is untouched
        tries = backend.connects[DC1]
        assert tries == 6 and backend.connects[DC2] == 0  # intensity 5: the 6th crash is a loop
        (info,) = await dbus(bus_address, "process_info")
        assert json.loads(info)["supervision"][path]["state"] == "failed"
        await trio.sleep(200)  # the cool-off (300 s) is not over: left alone
        assert backend.connects[DC1] == tries
        backend.broken.clear()
        await until_dcs(daemon, {DC1})  # tried again after the cool-off: back
        assert (await dc_rows(bus_address))["192.0.2.1"]["state"] == "connected"
        assert (await until_reported(daemon, path, state="running"))["restarts"] == "6"


def test_a_crash_loop_of_the_tree_ends_stafd_with_one_line(
    bus_address: str, tmp_path: Path, fakes: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """The finder crashes at every start: its subtree gives up, the root restarts it, and
    after the root's own intensity stafd exits 1 with one line. Meanwhile D-Bus showed it."""
    seen: list[dict[str, Any]] = []
    starts = 0

    class BrokenFinder(stas.stafd.Finder):
        async def run(self, inbox: Any, inbox_send: Any, *, task_status: Any) -> None:
            nonlocal starts
            starts += 1
            task_status.started()
            if starts == 12:  # part way: what does `stafctl status` say?
                (info,) = await dbus(bus_address, "process_info")
                seen.append(json.loads(info)["supervision"])
            raise ValueError("finder bug")

    monkeypatch.setattr(stas.stafd, "Finder", BrokenFinder)
    caplog.set_level(logging.INFO)
    opts = attrs.evolve(options(tmp_path, zeroconf=False), bus_address=bus_address)
    rc = run_stafd(opts, TronControl(logging.getLogger("test.sup")),
                   clock=trio.testing.MockClock(autojump_threshold=0))  # fmt: skip
    assert rc == 1
    assert starts == 24  # 4 rounds of the subtree's 6 crashes (root: at most 3 restarts)
    (status,) = seen
    assert status["stafd/discovery/finder"]["last error"] == "ValueError: finder bug"
    assert status["stafd/discovery"]["restarts"] == "1"  # the root restarted the subtree once
    assert status["stafd/dbus"]["state"] == "running"
    last = [r for r in caplog.records if r.name == "stafd" and r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in last] == [
        "stafd: 4 restarts within 120 s (the last: discovery failed with GaveUp: "
        "stafd/discovery: 6 restarts within 60 s (the last: finder failed with ValueError: "
        "finder bug); giving up); giving up"
    ]


async def test_a_reload_switching_zeroconf_restarts_the_browser_on_purpose(
    autojump_clock: trio.testing.MockClock, bus_address: str, tmp_path: Path,
    fakes: SimpleNamespace,
) -> None:  # fmt: skip
    faults = Faults()
    async with running(tmp_path, bus_address, faults) as daemon:
        assert fakes.mdns == 1 and daemon.mdns_snapshot() == {"services": 1}
        conf = Path(daemon.opts.conf_file)
        conf.write_text(conf.read_text().replace("zeroconf=enabled", "zeroconf=disabled"))
        before = Counter(faults.starts)
        os.kill(os.getpid(), signal.SIGHUP)
        await faults.until_restarted(before, {"stafd/discovery/mdns"})
        assert fakes.mdns == 1 and daemon.mdns_snapshot() == {}  # idle: no browser
        conf.write_text(conf.read_text().replace("zeroconf=disabled", "zeroconf=enabled"))
        os.kill(os.getpid(), signal.SIGHUP)
        await until_dcs(daemon, {DC1, DC2, DC3})
        assert fakes.mdns == 2
        report = daemon.report.as_dict()
        assert report["stafd/discovery/mdns"]["restarts"] == "0"  # not crashes
        assert report["stafd/discovery/finder"]["restarts"] == "0"


def test_readme_pictures_every_node_of_both_trees(tmp_path: Path) -> None:
    """README's layout picture names each node of the real trees, with its strategy."""
    from stas.stacd import Stacd, StacdOptions

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("| Path | What |", 1)[0]
    tron = TronControl(logging.getLogger("test.sup"))
    stafd = Stafd(options(tmp_path), tron, Notifier({}))
    stafd.hub = UeventHub()  # the kernel backend's subtree too
    (tmp_path / "stacd.conf").write_text("")
    stacd = Stacd(StacdOptions(str(tmp_path / "stacd.conf"), str(tmp_path / "sys.conf"),
                               kernel="fake"), tron, Notifier({}))  # fmt: skip

    def nodes(tree: Tree) -> list[tuple[str, str]]:
        out = [(tree.name, tree.strategy.value)]
        for child in tree.children:
            out += nodes(child) if isinstance(child, Tree) else [(child.name, "")]
        return out

    for name, strategy in nodes(stafd.supervision_tree()) + nodes(stacd.supervision_tree()):
        line = next((ln for ln in layout.splitlines() if f" {name} " in f" {ln} "), None)
        assert line is not None, f"README's layout does not show {name!r}"
        assert strategy in line, f"README's layout does not say {name!r} is {strategy}"
