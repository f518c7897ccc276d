"""stacd's supervision tree (issue 10): a crash in any one actor restarts that actor (and what
depends on it) while the rest keeps serving; an IOC actor's crash loop is its own (failed,
retried later); nothing is disconnected or connected twice by a restart.

stacd runs in-process under MockClock with the fake kernel on a private dbus-daemon, beside
stafd's real D-Bus actor serving a hand-made snapshot (3 subsystems) and 2 configured
controllers; crashes are injected into each child of the tree.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import stas.actors.connector
import stas.stacd
from stas.dbus.idl import STACD
from stas.dbus.trio_client import open_stafd_client
from stas.logsetup import TronControl
from stas.messages import Tid
from stas.sdnotify import Notifier
from stas.stacd import Stacd, StacdOptions
from tests.helpers.config import host_files
from tests.helpers.dbus_actors import HOSTNQN, seed_dc, serve, snapshot
from tests.helpers.supervision import (
    CrashInjected,
    Faults,
    Injected,
    call_time_stopped,
    real_time_limit,
    until_reported,
)

HOSTID = "11111111-2222-4333-8444-555555555555"
IOCS = 5  # 2 configured + 3 from stafd's page
CONFIGURED_A = Tid("tcp", "192.0.2.10", "4420", "nqn.io.a", host_nqn=HOSTNQN)


class CrashableStacd(CrashInjected, Stacd):
    pass


def options(tmp: Path, bus: str) -> StacdOptions:
    sys_conf = host_files(tmp, HOSTNQN, HOSTID)
    (tmp / "stacd.conf").write_text(
        "[Controllers]\n"
        "controller=transport=tcp;traddr=192.0.2.10;trsvcid=4420;subsysnqn=nqn.io.a\n"
        "controller=transport=tcp;traddr=192.0.2.11;trsvcid=4420;subsysnqn=nqn.io.b\n"
    )
    return StacdOptions(str(tmp / "stacd.conf"), str(sys_conf), kernel="fake",
                        bus_address=bus)  # fmt: skip


@pytest.fixture(autouse=True)
def no_call_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stafd client's calls wait for their replies without a timeout: under the autojump
    clock a reply in flight on the real bus would otherwise time out at once."""
    real = stas.stacd.run_stafd_client

    async def client(send: Any, **kw: Any) -> None:
        await real(send, open_client=partial(open_stafd_client, timeout=None), **kw)

    monkeypatch.setattr(stas.stacd, "run_stafd_client", client)


@asynccontextmanager
async def running(tmp: Path, bus: str, faults: Faults) -> AsyncIterator[CrashableStacd]:
    daemon = CrashableStacd(options(tmp, bus), TronControl(logging.getLogger("test.sup")),
                            Notifier({}), faults=faults)  # fmt: skip
    async with real_time_limit("stacd's test"), trio.open_nursery() as nursery:
        await serve(nursery, bus, snapshot(seed_dc()))  # stafd, as far as stacd can tell
        nursery.start_soon(daemon.run)
        await until_connected(daemon, IOCS)
        yield daemon
        nursery.cancel_scope.cancel()


async def until_connected(daemon: Stacd, count: int) -> None:
    def ok(snap: Any) -> bool:
        return sum(1 for ioc in snap.iocs if ioc.connected) == count

    await daemon.published.wait_value(ok)
    while "stacd/watchdog" not in daemon.report.current.value:  # the whole tree is up
        await trio.sleep(0.01)


async def stacctl(bus: str, method: str, *args: Any) -> Any:
    return await call_time_stopped(STACD, bus, method, *args)


RESTARTED = {
    "stacd/connecting/connector": {
        "stacd/connecting/connector", "stacd/connecting/stafd client",
        "stacd/connecting/kernel events",
    },
    "stacd/connecting/stafd client": {
        "stacd/connecting/stafd client", "stacd/connecting/kernel events",
    },
    "stacd/connecting/kernel events": {"stacd/connecting/kernel events"},
    "stacd/dbus": {"stacd/dbus"},
}  # fmt: skip


@pytest.mark.parametrize("path", sorted(RESTARTED))
async def test_a_crashed_actor_is_restarted_and_the_rest_keeps_serving(
    path: str, autojump_clock: trio.testing.MockClock, bus_address: str, tmp_path: Path
) -> None:
    faults = Faults()
    async with running(tmp_path, bus_address, faults) as daemon:
        kernel = daemon.kernel
        before, connects = Counter(faults.starts), len(kernel.connect_log)
        assert set(before) == {*RESTARTED, "stacd/watchdog"}  # each child kind is covered
        iocs_before = daemon.published.value.iocs
        faults.crash(path)
        report = await until_reported(daemon, path, state="running", restarts="1")
        assert report["last error"] == f"RuntimeError: injected crash in {path}"
        await faults.until_restarted(before, RESTARTED[path])
        restarted = {p for p in faults.starts if faults.starts[p] != before[p]}
        assert restarted == RESTARTED[path]
        await until_connected(daemon, IOCS)
        (rows,) = await stacctl(bus_address, "list_controllers", True)
        assert len(rows) == IOCS and {r["connected"] for r in rows} == {"True"}
        assert len(kernel.connect_log) == connects  # nothing connected twice...
        assert kernel.disconnect_log == []  # ...nor torn down
        if path != "stacd/connecting/connector":  # the IOC actors were not touched
            assert daemon.published.value.iocs == iocs_before
        (info,) = await stacctl(bus_address, "process_info")
        status = json.loads(info)
        assert status["hostnqn"] == HOSTNQN and "terminator.audit timer" in status
        assert status["supervision"][path]["restarts"] == "1"


def ioc_path(tid: Tid) -> str:
    return "stacd/connecting/connector/ioc|" + "|".join(tid.dbus_args())


@pytest.fixture
def ioc_faults(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """IOC actors counted per TID; ``crash`` (an Event) fails the running one for TID A,
    ``always`` makes every new one for TID A fail at once."""
    state: dict[str, Any] = {"starts": Counter(), "crash": trio.Event(), "always": False}
    real = stas.actors.connector.run_ioc_actor

    async def actor(w: Any, *args: Any, **kw: Any) -> None:
        state["starts"][w.tid] += 1
        if w.tid == CONFIGURED_A and state["always"]:
            raise RuntimeError("IOC bug")

        async def bomb() -> None:
            await state["crash"].wait()
            raise Injected()

        try:
            async with trio.open_nursery() as nursery:
                if w.tid == CONFIGURED_A and not state["crash"].is_set():
                    nursery.start_soon(bomb)
                await real(w, *args, **kw)
        except BaseExceptionGroup as group:
            if group.subgroup(Injected) is not None:
                raise RuntimeError("injected IOC crash") from None
            raise

    monkeypatch.setattr(stas.actors.connector, "run_ioc_actor", actor)
    return state


async def test_one_ioc_crashing_is_restarted_alone(
    autojump_clock: trio.testing.MockClock, bus_address: str, tmp_path: Path,
    ioc_faults: dict[str, Any],
) -> None:  # fmt: skip
    async with running(tmp_path, bus_address, Faults()) as daemon:
        starts = Counter(ioc_faults["starts"])
        ioc_faults["crash"].set()
        await until_reported(daemon, ioc_path(CONFIGURED_A), state="running", restarts="1")
        await until_connected(daemon, IOCS)
        assert ioc_faults["starts"] == starts + Counter({CONFIGURED_A: 1})
        assert daemon.kernel.disconnect_log == []


async def test_an_ioc_in_a_crash_loop_is_failed_then_retried(
    autojump_clock: trio.testing.MockClock, bus_address: str, tmp_path: Path,
    ioc_faults: dict[str, Any],
) -> None:  # fmt: skip
    async with running(tmp_path, bus_address, Faults()) as daemon:
        ioc_faults["always"] = True
        ioc_faults["crash"].set()  # crashes now, and at every restart
        path = ioc_path(CONFIGURED_A)
        report = await until_reported(daemon, path, state="failed")
        assert report["last error"] == "RuntimeError: IOC bug"
        (info,) = await stacctl(bus_address, "process_info")
        assert json.loads(info)["supervision"][path]["state"] == "failed"
        (rows,) = await stacctl(bus_address, "list_controllers", True)
        assert len(rows) == IOCS  # stacd serves on; the others stay connected
        others = [r for r in rows if r["traddr"] != CONFIGURED_A.traddr]
        assert {r["connected"] for r in others} == {"True"}
        tries = ioc_faults["starts"][CONFIGURED_A]
        await trio.sleep(200)  # within the cool-off (300 s): left alone
        assert ioc_faults["starts"][CONFIGURED_A] == tries
        ioc_faults["always"] = False
        await until_reported(daemon, path, state="running")  # tried again after the cool-off
        await until_connected(daemon, IOCS)
        assert daemon.kernel.disconnect_log == []
