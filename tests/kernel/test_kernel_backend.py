"""The kernel backend on the real kernel (VM only): libnvme connects, sysfs, uevents, and the
stacd connector adopting after a restart."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import trio
import trio.testing
from test_nvmet_kernel import nvmet, ok
from trio_util import AsyncValue

from stas.actors.connector import Connector
from stas.actors.ioc import IocSettings
from stas.actors.uevents import UeventMonitor, open_uevent_socket
from stas.config import parse_service_config
from stas.kernel.api import ConnectRequest, KernelError, Uevent
from stas.kernel.libnvme_kernel import LibnvmeKernel
from stas.messages import DcLogPages, StacdSnapshot
from tests.helpers.entries import HOSTID, HOSTNQN, WK, dc_tid, dlpe
from tests.helpers.sim import SEED_SUBSYSTEMS

SEED = set(SEED_SUBSYSTEMS)
DC = dc_tid()


def req(nqn: str, **kw) -> ConnectRequest:
    return ConnectRequest(
        transport="tcp",
        traddr="::1",
        trsvcid="8009",
        subsysnqn=nqn,
        hostnqn=HOSTNQN,
        hostid=HOSTID,
        **kw,
    )


def dlpes() -> tuple[dict[str, str], ...]:
    return tuple(dlpe(n, trsvcid="8009") for n in sorted(SEED))


@pytest.mark.usefixtures("target")
async def test_connect_list_disconnect_and_uevents() -> None:
    kernel = LibnvmeKernel()
    assert "host_iface" in kernel.capabilities()
    events: list[Uevent] = []
    send, receive = trio.open_memory_channel(1000)

    async def resync():
        return await kernel.list_controllers()

    async with trio.open_nursery() as nursery:
        await nursery.start(UeventMonitor(send, resync).serve, open_uevent_socket())
        async with trio.open_nursery() as connects:  # parallel, bounded connects
            for nqn in SEED:
                connects.start_soon(kernel.connect, req(nqn))
        ctrls = [c for c in await kernel.list_controllers() if c.is_io_controller]
        assert {c.subsysnqn for c in ctrls} == SEED
        assert {(c.traddr, c.trsvcid, c.hostnqn) for c in ctrls} == {("::1", "8009", HOSTNQN)}
        with pytest.raises(KernelError):
            await kernel.connect(req("klingons"))  # the kernel refuses a duplicate
        dc = await kernel.connect(req(WK, discovery=True, kato=30))
        assert dc.is_discovery_controller
        ok(nvmet("unlink", "-p", "1", "-s", "klingons"))
        victim = next(c for c in ctrls if c.subsysnqn == "starfleet")
        await kernel.disconnect(victim.device)
        with trio.fail_after(20):
            while not (
                any(e.action == "remove" and e.device == victim.device for e in events)
                and any(e.aen == 0x70F002 and e.device == dc.device for e in events)
            ):
                msg = await receive.receive()
                if isinstance(msg, Uevent):
                    events.append(msg)
        nursery.cancel_scope.cancel()
    assert victim.device not in {c.device for c in await kernel.list_controllers()}
    with pytest.raises(KernelError) as info:
        await kernel.disconnect("nvme999")
    assert info.value.errno == errno.ENODEV  # same as the fake kernel


@pytest.mark.usefixtures("target")
async def test_connector_connects_then_adopts_after_restart() -> None:
    kernel = LibnvmeKernel()
    config, _ = parse_service_config("", "stacd")

    async def run_connector() -> tuple[StacdSnapshot, int]:
        published = AsyncValue(StacdSnapshot())
        send, receive = trio.open_memory_channel(1000)
        connector = Connector(
            config=config,
            host_nqn=HOSTNQN,
            hostid=HOSTID,
            kernel=kernel,
            published=published,
            settings=IocSettings(jitter=0),
        )
        calls = 0
        orig = kernel.connect

        async def counting(r):
            nonlocal calls
            calls += 1
            return await orig(r)

        kernel.connect = counting  # type: ignore[method-assign]
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(connector.run, receive, send)
                await send.send(DcLogPages(DC, dlpes()))
                with trio.fail_after(30):
                    while sum(s.connected for s in published.value.iocs) < 3:
                        await published.wait_transition()
                nursery.cancel_scope.cancel()
        finally:
            kernel.connect = orig  # type: ignore[method-assign]
        return published.value, calls

    first, calls = await run_connector()
    assert calls == 3 and {s.tid.subsysnqn for s in first.iocs} == SEED
    devices = {c.device for c in await kernel.list_controllers()}
    assert {s.device for s in first.iocs} <= devices and Path("/sys/class/nvme").exists()
    second, calls = await run_connector()  # "restarted" stacd: adopts, connects nothing
    assert calls == 0 and all(s.adopted for s in second.iocs)
    assert {s.device for s in second.iocs} == {s.device for s in first.iocs}


@pytest.mark.usefixtures("target")
async def test_options_libnvme_drops_go_through_dev_nvme_fabrics() -> None:
    """libnvme 1.16's bindings ignore queue_size: such connects write /dev/nvme-fabrics."""
    kernel = LibnvmeKernel()
    ctrl = await kernel.connect(req("starfleet", queue_size=32, kato=15))
    assert ctrl.is_io_controller and ctrl.subsysnqn == "starfleet"
    sqsize = Path(f"/sys/class/nvme/{ctrl.device}/sqsize").read_text().strip()
    assert int(sqsize) <= 32  # the kernel took our queue size (0's based: 31)
    await kernel.disconnect(ctrl.device)
    assert ctrl.device not in {c.device for c in await kernel.list_controllers()}
