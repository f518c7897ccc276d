"""The kernel DC backend's event routing and connect requests (the rest runs in the VM)."""

from __future__ import annotations

import trio

from stas.actors.dc_backend import ConnectionLostEvent, LogPageChangedEvent, ReconnectedEvent
from stas.actors.dc_kernel import KernelBackend, UeventHub
from stas.kernel.api import KernelController, Uevent
from stas.kernel.fake import FakeKernel
from stas.messages import KernelResync, Tid
from stas.nvme.host_ops import HostIdentity

HOST = HostIdentity(
    hostnqn="nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10",
    hostid=bytes(range(16)),
)
DC = Tid("tcp", "::1", "8009", "nqn.2014-08.org.nvmexpress.discovery", "", "", HOST.hostnqn)


def drain(ch: trio.MemoryReceiveChannel) -> list:
    out = []
    while True:
        try:
            out.append(ch.receive_nowait())
        except trio.WouldBlock:
            return out


def test_hub_routes_events_to_the_owner_only() -> None:
    hub = UeventHub()
    mine, other = hub.subscribe("nvme0"), hub.subscribe("nvme5")
    path = "/devices/virtual/nvme-fabrics/ctl/"
    hub.dispatch(Uevent("change", path + "nvme0", "nvme", {"NVME_AEN": "0x70f002"}))
    hub.dispatch(Uevent("change", path + "nvme0", "nvme", {"NVME_AEN": "0x10000"}))  # not ours
    hub.dispatch(Uevent("change", path + "nvme0", "nvme", {"NVME_EVENT": "rediscover"}))
    hub.dispatch(Uevent("remove", path + "nvme0", "nvme"))
    assert drain(mine) == [
        LogPageChangedEvent(),
        ReconnectedEvent(),
        ConnectionLostEvent("kernel removed nvme0"),
    ]
    assert hub.reconnected == {"nvme0"}
    assert drain(other) == []
    hub.dispatch(KernelResync((KernelController(device="nvme0"),)))
    assert drain(mine) == [LogPageChangedEvent()]  # events may have been lost: refetch
    assert drain(other) == [ConnectionLostEvent("nvme5 is gone (resync)")]


def test_connect_request_is_a_persistent_discovery_connect() -> None:
    backend = KernelBackend(FakeKernel(), HOST, UeventHub())
    req = backend.request(DC, {"kato": "30", "hdr-digest": "true"})
    assert req.discovery and req.kato == 30 and req.hdr_digest
    assert req.hostid == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert "discovery" in req.option_string().split(",")


async def test_open_adopts_an_existing_discovery_controller() -> None:
    kernel = FakeKernel()
    existing = kernel.add_external(
        transport="tcp",
        traddr="::1",
        trsvcid="8009",
        subsysnqn=DC.subsysnqn,
        cntrltype="discovery",
        hostnqn=HOST.hostnqn,
    )
    backend = KernelBackend(kernel, HOST, UeventHub())
    ctrl = await backend._open(DC, {})
    assert ctrl.device == existing.device and kernel.connect_log == []
