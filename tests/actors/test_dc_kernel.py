"""The kernel DC backend's event routing and connect requests (the rest runs in the VM)."""

from __future__ import annotations

import base64
import math

import trio

from stas.actors.dc import DcSettings, connection_params, run_dc_actor
from stas.actors.dc_backend import (
    ConnectionLostEvent,
    LogPageChangedEvent,
    ReconnectedEvent,
    pleo_from,
)
from stas.actors.dc_kernel import KernelBackend, UeventHub
from stas.config import ServiceConfig
from stas.kernel.api import KernelController, Uevent
from stas.kernel.fake import FakeKernel
from stas.messages import DcUpdate, DcWanted, KernelResync, Tid
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


# --- stafd.conf connection settings reach the kernel (issue 13 item 5, issue 9 item 3) ---------

HOST_KEY = "DHHC-1:00:" + base64.b64encode(bytes(32) + b"\x01\x02\x03\x04").decode() + ":"
CTRL_KEY = "DHHC-1:00:" + base64.b64encode(bytes(range(32)) + b"\x05\x06\x07\x08").decode() + ":"
OWN_KEY = "DHHC-1:00:" + base64.b64encode(bytes([7]) * 32 + b"\x09\x0a\x0b\x0c").decode() + ":"


def glob_config() -> ServiceConfig:
    return ServiceConfig(
        kato=7, hdr_digest=True, data_digest=True, queue_size=64, reconnect_delay=5,
        ctrl_loss_tmo=120, disable_sqflow=True, pleo=False,
    )  # fmt: skip


async def connect_through_actor(params: dict[str, str], connection: dict[str, str]) -> str:
    """Run the DC actor on the kernel backend until it connected; the option string it used."""
    kernel = FakeKernel()
    backend = KernelBackend(kernel, HOST, UeventHub())
    send, _recv = trio.open_memory_channel[DcUpdate](math.inf)
    settings = DcSettings(connection=connection, jitter=0.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_dc_actor(DcWanted(DC, "configured", params), send, backend=backend,
                                 settings=settings)
        )  # fmt: skip
        with trio.fail_after(5):
            while not kernel.connect_log:
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    return kernel.connect_log[0].option_string(redact=False)


def options_of(text: str) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in text.split(","))


async def test_global_settings_and_host_key_reach_the_kernel(autojump_clock) -> None:
    opts = options_of(
        await connect_through_actor({}, connection_params(glob_config(), host_key=HOST_KEY))
    )
    assert opts["keep_alive_tmo"] == "7"
    assert opts["queue_size"] == "64"
    assert opts["reconnect_delay"] == "5"
    assert opts["ctrl_loss_tmo"] == "120"
    assert {"hdr_digest", "data_digest", "disable_sqflow", "discovery"} <= opts.keys()
    assert opts["dhchap_secret"] == HOST_KEY


async def test_per_controller_settings_win_and_ctrl_secret_is_passed(autojump_clock) -> None:
    mine = {"kato": "9", "hdr-digest": "false", "dhchap-secret": OWN_KEY,
            "dhchap-ctrl-secret": CTRL_KEY}  # fmt: skip
    opts = options_of(
        await connect_through_actor(mine, connection_params(glob_config(), host_key=HOST_KEY))
    )
    assert opts["keep_alive_tmo"] == "9"
    assert "hdr_digest" not in opts and "data_digest" in opts
    assert opts["dhchap_secret"] == OWN_KEY
    assert opts["dhchap_ctrl_secret"] == CTRL_KEY


def test_connection_params_from_the_defaults() -> None:
    assert connection_params(ServiceConfig()) == {
        "kato": "30", "hdr-digest": "false", "data-digest": "false", "pleo": "enabled",
    }  # fmt: skip
    assert connection_params(glob_config())["pleo"] == "disabled"
    assert "dhchap-secret" not in connection_params(ServiceConfig(), host_key="")


def test_kernel_pleo_follows_global_pleo() -> None:
    backend = KernelBackend(FakeKernel(), HOST, UeventHub(), pleo=True)
    assert pleo_from(connection_params(glob_config()), backend.pleo_default) is False
