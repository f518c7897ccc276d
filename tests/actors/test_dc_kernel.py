"""The kernel DC backend's event routing and connect requests (the rest runs in the VM)."""

from __future__ import annotations

import base64
import math

import attrs
import pytest
import trio
import trio.testing

from stas.actors.dc import DcSettings, connection_params, run_dc_actor
from stas.actors.dc_backend import (
    ConnectionLostEvent,
    LogPagesChangedEvent,
    ReconnectedEvent,
    pleo_from,
)
from stas.actors.dc_kernel import KernelBackend, UeventHub
from stas.config import ServiceConfig
from stas.kernel.api import KernelController, Uevent
from stas.kernel.fake import FakeKernel
from stas.messages import DcUpdate, DcWanted, KernelResync, Tid
from stas.nvme.host_ops import HostIdentity
from tests.helpers.channels import pending

HOST = HostIdentity(
    hostnqn="nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10",
    hostid=bytes(range(16)),
)
DC = Tid("tcp", "::1", "8009", "nqn.2014-08.org.nvmexpress.discovery", "", "", HOST.hostnqn)


async def test_hub_routes_events_to_the_owner_only() -> None:
    hub = UeventHub()
    send, receive = trio.open_memory_channel(10)
    path = "/devices/virtual/nvme-fabrics/ctl/"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run, receive)
        mine, other = await hub.subscribe("nvme0"), await hub.subscribe("nvme5")
        await trio.testing.wait_all_tasks_blocked()
        for msg in (
            Uevent("change", path + "nvme0", "nvme", {"NVME_AEN": "0x70f002"}),
            Uevent("change", path + "nvme0", "nvme", {"NVME_AEN": "0x10000"}),  # not ours
            Uevent("change", path + "nvme0", "nvme", {"NVME_EVENT": "rediscover"}),
            Uevent("remove", path + "nvme0", "nvme"),
        ):
            await send.send(msg)
        await trio.testing.wait_all_tasks_blocked()
        assert pending(mine) == [
            LogPagesChangedEvent(),
            ReconnectedEvent(),
            ConnectionLostEvent("kernel removed nvme0"),
        ]
        assert pending(other) == []
        await send.send(KernelResync((KernelController(device="nvme0"),)))
        await trio.testing.wait_all_tasks_blocked()
        assert pending(mine) == [LogPagesChangedEvent()]  # events may have been lost: refetch
        assert pending(other) == [ConnectionLostEvent("nvme5 is gone (resync)")]
        # an ended subscription gets nothing more, and a newer one of the device is kept
        hub.unsubscribe("nvme5", other)
        again = await hub.subscribe("nvme0")
        hub.unsubscribe("nvme0", mine)  # late: nvme0 has a newer subscriber already
        await trio.testing.wait_all_tasks_blocked()
        await send.send(Uevent("change", path + "nvme0", "nvme", {"NVME_AEN": "0x70f002"}))
        await trio.testing.wait_all_tasks_blocked()
        assert pending(again) == [LogPagesChangedEvent()]
        nursery.cancel_scope.cancel()


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


# --- one identity per DC: registered and deregistered under the same host NQN (issue 10) -------

OTHER = HostIdentity(
    hostnqn="nqn.2014-08.org.nvmexpress:uuid:99999999-5b0f-4c4e-9d0e-2e1c6a1b7f10",
    hostid=bytes(16),
)


@pytest.fixture
def dims(monkeypatch) -> list[tuple[str, str]]:
    """Admin commands answered in memory; the host NQN of every DIM command is recorded.

    Answered in the Trio thread, not a worker thread: an autojump clock (threshold 0) would
    otherwise run out a connection's timers (the deregistration's 10 s bound) while the
    worker thread was busy."""
    sent: list[tuple[str, str]] = []

    async def in_trio_thread(fn, *args, **_kw):  # trio.to_thread.run_sync, minus the thread
        await trio.lowlevel.checkpoint()
        return fn(*args)

    def admin(device, sqe, *, name, read_len=0, data=b""):
        if name == "DIM":
            nqn = next(h.hostnqn for h in (HOST, OTHER) if h.hostnqn.encode() in data)
            sent.append((device, nqn))
        return 0, bytes(read_len)

    monkeypatch.setattr("stas.actors.dc_kernel.admin_command", admin)
    monkeypatch.setattr(trio.to_thread, "run_sync", in_trio_thread)
    return sent


def cdc_kernel() -> tuple[FakeKernel, KernelController]:
    kernel = FakeKernel()
    ctrl = kernel.add_external(
        transport="tcp", traddr="::1", trsvcid="8009", subsysnqn=DC.subsysnqn,
        cntrltype="discovery", dctype="cdc", hostnqn=HOST.hostnqn,
    )  # fmt: skip
    return kernel, ctrl


async def test_a_reload_does_not_change_the_identity_a_connection_deregisters_with(dims) -> None:
    kernel, ctrl = cdc_kernel()
    backend = KernelBackend(kernel, HOST, UeventHub())
    tid = attrs.evolve(DC, host_nqn="")
    async with backend.connect(tid, {}, persistent=False):
        backend.identity = OTHER  # what stafd's reload does to the shared backend
    assert dims == [(ctrl.device, HOST.hostnqn), (ctrl.device, HOST.hostnqn)]


async def test_a_dc_actor_registers_and_deregisters_under_its_start_identity(
    dims, autojump_clock
) -> None:
    kernel, ctrl = cdc_kernel()
    backend = KernelBackend(kernel, OTHER, UeventHub())  # the backend's default is not used
    send, _recv = trio.open_memory_channel[DcUpdate](math.inf)
    settings = DcSettings(persistent=False, identity=HOST)
    wanted = DcWanted(attrs.evolve(DC, host_nqn=""), "configured")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_dc_actor(wanted, send, backend=backend, settings=settings))
        with trio.fail_after(60):
            while not dims:
                await trio.sleep(0.01)
        assert dims == [(ctrl.device, HOST.hostnqn)]
        backend.identity = OTHER
        nursery.cancel_scope.cancel()
    assert dims == [(ctrl.device, HOST.hostnqn), (ctrl.device, HOST.hostnqn)]
    assert kernel.disconnect_log == [ctrl.device]


async def test_a_rediscover_before_a_connection_does_not_make_it_register_twice(dims) -> None:
    kernel, ctrl = cdc_kernel()
    hub = UeventHub()
    backend = KernelBackend(kernel, HOST, hub)
    send, receive = trio.open_memory_channel(10)
    path = "/devices/virtual/nvme-fabrics/ctl/" + ctrl.device
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run, receive)
        # the kernel reconnected a controller nobody of ours holds (yet)
        await send.send(Uevent("change", path, "nvme", {"NVME_EVENT": "rediscover"}))
        await trio.testing.wait_all_tasks_blocked()
        async with backend.connect(DC, {}, persistent=True) as conn:
            await trio.testing.wait_all_tasks_blocked()
            await conn.get_log_page()
            assert dims == [(ctrl.device, HOST.hostnqn)], "registered once, at connect"
            # a rediscover while connected: registered again before the next read
            await send.send(Uevent("change", path, "nvme", {"NVME_EVENT": "rediscover"}))
            events = conn.events()
            assert await events.__anext__() == ReconnectedEvent()
            await conn.get_log_page()
            assert len(dims) == 2
        nursery.cancel_scope.cancel()
