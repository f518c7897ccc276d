"""FakeKernel: behaves like the kernel where stacd can tell (names, EALREADY, uevents)."""

from __future__ import annotations

import errno

import pytest
import trio

from stas.kernel.api import KernelError, Uevent
from stas.kernel.fake import FakeKernel
from tests.helpers.kernel import drain, req

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"


async def test_names_are_allocated_lowest_free_first() -> None:
    k = FakeKernel()
    a = await k.connect(req(subsysnqn="a"))
    b = await k.connect(req(subsysnqn="b"))
    c = await k.connect(req(subsysnqn="c"))
    assert [a.device, b.device, c.device] == ["nvme0", "nvme1", "nvme2"]
    await k.disconnect("nvme1")
    await k.disconnect("nvme0")
    assert (await k.connect(req(subsysnqn="d"))).device == "nvme0"
    assert (await k.connect(req(subsysnqn="e"))).device == "nvme1"
    assert (await k.connect(req(subsysnqn="f"))).device == "nvme3"
    assert [c.device for c in await k.list_controllers()] == ["nvme0", "nvme1", "nvme2", "nvme3"]


async def test_connect_records_and_describes_the_controller() -> None:
    k = FakeKernel()
    r = req(host_traddr="::1", host_iface="lo", kato=30)
    ctrl = await k.connect(r)
    assert k.connect_log == [r]
    assert (ctrl.transport, ctrl.traddr, ctrl.trsvcid, ctrl.subsysnqn) == (
        "tcp",
        "::1",
        "4420",
        "klingons",
    )
    assert (ctrl.hostnqn, ctrl.host_iface, ctrl.src_addr, ctrl.state) == (
        HOSTNQN,
        "lo",
        "::1",
        "live",
    )
    assert ctrl.is_io_controller and not ctrl.is_discovery_controller
    dc = await k.connect(req(trsvcid="8009", subsysnqn="nqn.2014-08.org.nvmexpress.discovery",
                             discovery=True))  # fmt: skip
    assert dc.is_discovery_controller and not dc.has_namespaces
    assert await k.controller(ctrl.device) == ctrl
    assert await k.controller("nvme99") is None


async def test_duplicate_connect_is_refused_unless_asked_for() -> None:
    k = FakeKernel()
    first = await k.connect(req())
    with pytest.raises(KernelError) as info:
        await k.connect(req())
    assert info.value.errno == errno.EALREADY
    assert "klingons" in str(info.value) and first.device in str(info.value)
    other_host = await k.connect(req(hostnqn="nqn.2014-08.org.example:other"))
    dup = await k.connect(req(duplicate_connect=True))
    # like the kernel (strcmp of traddr), another spelling of the address is another controller
    respelled = await k.connect(req(traddr="0:0::1"))
    assert [other_host.device, dup.device, respelled.device] == ["nvme1", "nvme2", "nvme3"]
    assert len(k.connect_log) == 5  # refused connects are recorded too


async def test_injected_failures() -> None:
    k = FakeKernel()
    k.fail_next(errno.EIO, n=2)
    for _ in range(2):
        with pytest.raises(KernelError) as info:
            await k.connect(req())
        assert info.value.errno == errno.EIO and "I/O error" in str(info.value)
    assert (await k.connect(req())).device == "nvme0"

    k.fail_traddr("10.0.0.5", n=1)
    ok = await k.connect(req(traddr="10.0.0.6"))  # other addresses are unaffected
    with pytest.raises(KernelError) as info:
        await k.connect(req(traddr="10.0.0.5"))
    assert info.value.errno == errno.ECONNREFUSED and "Connection refused" in str(info.value)
    assert (await k.connect(req(traddr="10.0.0.5"))).device == "nvme2"
    assert ok.device == "nvme1"

    k.fail_next(errno.ECONNREFUSED, when=lambda r: r.subsysnqn == "starfleet")
    other = await k.connect(req(subsysnqn="romulans"))  # not matching: not consumed
    with pytest.raises(KernelError) as info:
        await k.connect(req(subsysnqn="starfleet"))
    assert info.value.errno == errno.ECONNREFUSED
    assert (await k.connect(req(subsysnqn="starfleet"))).device == "nvme4"
    assert other.device == "nvme3"


async def test_disconnect_remove_and_external() -> None:
    k = FakeKernel()
    a = await k.connect(req())
    ext = k.add_external(transport="tcp", traddr="::1", trsvcid="4420", subsysnqn="starfleet",
                         hostnqn=HOSTNQN, cntrltype="io")  # fmt: skip
    assert ext.device == "nvme1" and k.connect_log == [req()]
    assert k.state() == {("klingons", "::1", "4420"), ("starfleet", "::1", "4420")}
    with pytest.raises(KernelError) as info:
        await k.disconnect("nvme7")
    assert info.value.errno == errno.ENODEV
    k.remove(ext.device)  # e.g. ctrl-loss-tmo expired
    await k.disconnect(a.device)
    assert k.disconnect_log == ["nvme7", "nvme0"] and k.controllers == {}
    with pytest.raises(KeyError, match="nvme1"):
        k.remove("nvme1")


async def test_uevents_for_every_change() -> None:
    k = FakeKernel()
    a = await k.connect(req())
    k.emit_aen(a.device)
    k.emit_aen(a.device, 0x70F003)
    k.emit_rediscover(a.device)
    k.remove(a.device)
    events = drain(k)
    assert [(e.action, e.device) for e in events] == [
        ("add", "nvme0"),
        ("change", "nvme0"),
        ("change", "nvme0"),
        ("change", "nvme0"),
        ("remove", "nvme0"),
    ]
    assert [e.aen for e in events] == [None, 0x70F002, 0x70F003, None, None]
    assert [e.nvme_event for e in events] == [None, None, None, "rediscover", None]
    assert events[0].subsystem == "nvme"
    assert events[0].devpath == "/devices/virtual/nvme-fabrics/ctl/nvme0"
    assert events[0].env["NVME_TRADDR"] == "::1" and events[0].env["NVME_TRSVCID"] == "4420"


def test_uevent_properties_tolerate_odd_values() -> None:
    assert Uevent("change", "/x/nvme3", env={"NVME_AEN": "zz"}).aen is None
    assert Uevent("change", "/x/nvme3", env={"NVME_AEN": "70f002"}).aen == 0x70F002
    assert Uevent("change", "/x/nvme3", env={"NVME_EVENT": ""}).nvme_event is None
    assert Uevent("add", "nvme3").device == "nvme3"


async def test_capabilities_and_delay(autojump_clock: trio.testing.MockClock) -> None:
    k = FakeKernel(capabilities=frozenset({"discovery"}))
    assert k.capabilities() == frozenset({"discovery"})
    k.delay = 5.0
    start = trio.current_time()
    await k.connect(req())
    assert trio.current_time() - start == pytest.approx(5.0)
