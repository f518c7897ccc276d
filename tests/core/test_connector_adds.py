"""A controller's 'add' uevent while stacd's own connect to its address is in the kernel's
hands is that connect's: its sysfs read waits for the connect's answer, which holds the
controller already (issue 8: one sysfs read of the new device per connect, not two). Any
'add' that cannot be one of ours is read as before, at once or when the connects end."""

from __future__ import annotations

import attrs
import trio
import trio.testing

from stas.actors.connector_core import ConnectorState, handle
from stas.actors.connector_model import IocMade, ReadController
from stas.kernel.api import ConnectRequest, KernelController, Uevent
from stas.kernel.fake import FakeKernel
from stas.messages import DcLogPages, IocUpdate, KernelResync
from tests.helpers.config import stacd_config
from tests.helpers.connector import ConnectorHarness
from tests.helpers.entries import HOSTID, HOSTNQN, dc_tid, dlpe, page, tid

DC = dc_tid()


def state() -> ConnectorState:
    return ConnectorState(config=stacd_config(), host_nqn=HOSTNQN, hostid=HOSTID)


def add(device: str, traddr: str = "::1", trsvcid: str = "4420") -> Uevent:
    """The kernel's 'add' for a fabrics controller (its NVME_TR* variables)."""
    env = {"NVME_TRTYPE": "tcp", "NVME_TRADDR": traddr, "NVME_TRSVCID": trsvcid}
    return Uevent("add", f"/devices/virtual/nvme-fabrics/ctl/{device}", "nvme", env)


def remove(device: str) -> Uevent:
    return Uevent("remove", f"/devices/virtual/nvme-fabrics/ctl/{device}", "nvme", {})


def made(nqn: str, device: str) -> KernelController:
    return KernelController(
        device, "tcp", "::1", "4420", nqn, hostnqn=HOSTNQN, cntrltype="io", state="live"
    )


def status(st: ConnectorState, nqn: str, **changes: object) -> IocUpdate:
    a = st.actors[tid(nqn)]
    return IocUpdate(attrs.evolve(a.status, **changes), a.generation)  # type: ignore[arg-type]


def connecting(st: ConnectorState, *nqns: str) -> None:
    for nqn in nqns:
        assert handle(st, status(st, nqn, state="connecting", connect_attempts=1))[1] == []


def connected(st: ConnectorState, nqn: str, device: str) -> list:
    update = status(st, nqn, state="connected", connected=True, device=device)
    return handle(st, IocMade(update, made(nqn, device)))[1]


def reads(effects: list) -> list[str]:
    return [e.device for e in effects if isinstance(e, ReadController)]


def started(*nqns: str) -> ConnectorState:
    st = state()
    handle(st, DcLogPages(DC, tuple(dlpe(n) for n in nqns)))
    return st


def test_the_add_of_our_connect_is_not_read_the_connect_answer_is_indexed() -> None:
    """The old connector read sysfs for every 'add': here, the connect's own answer."""
    st = started("a")
    connecting(st, "a")
    assert reads(handle(st, add("nvme3"))[1]) == []
    assert reads(connected(st, "a", "nvme3")) == []
    assert st.index.by_device["nvme3"] == made("a", "nvme3")
    assert st.unread == {} and st.connecting == {}


def test_an_add_while_nothing_of_ours_connects_there_is_read_at_once() -> None:
    st = started("a")
    assert reads(handle(st, add("nvme3"))[1]) == ["nvme3"]  # nothing connecting
    connecting(st, "a")
    assert reads(handle(st, add("nvme4", traddr="::9"))[1]) == ["nvme4"]  # another address


def test_more_adds_than_connects_are_read_and_an_unclaimed_one_when_the_connects_end() -> None:
    """Two adds, one connect of ours: the second is read at once; the connect made the
    second, so the first (nvme-cli's, say) is read once no connect is left to claim it."""
    st = started("a")
    connecting(st, "a")
    assert reads(handle(st, add("nvme1"))[1]) == []
    assert reads(handle(st, add("nvme2"))[1]) == ["nvme2"]
    assert reads(connected(st, "a", "nvme2")) == ["nvme1"]
    assert st.unread == {}


def test_a_failed_connect_has_the_add_it_left_read() -> None:
    st = started("a", "b")
    connecting(st, "a", "b")
    assert reads(handle(st, add("nvme1"))[1]) == []
    assert reads(handle(st, add("nvme2"))[1]) == []
    assert reads(handle(st, status(st, "b", state="backoff"))[1]) == ["nvme1", "nvme2"]
    assert st.unread == {} and st.connecting == {("tcp", "::1", "4420"): 1}  # a's


def test_a_removed_or_resynced_add_is_never_read() -> None:
    st = started("a", "b")
    connecting(st, "a", "b")
    handle(st, add("nvme1"))
    handle(st, remove("nvme1"))
    assert reads(handle(st, status(st, "a", state="backoff"))[1]) == []
    handle(st, add("nvme2"))
    handle(st, KernelResync(()))
    assert st.unread == {}
    assert reads(handle(st, status(st, "b", state="backoff"))[1]) == []


def test_a_stopped_connecting_actor_no_longer_counts() -> None:
    st = started("a")
    connecting(st, "a")
    handle(st, add("nvme1"))
    assert reads(handle(st, DcLogPages(DC, ()))[1]) == ["nvme1"]  # a no longer wanted
    assert st.connecting == {}


# --- through the shell, on the fake kernel ----------------------------------------------------


class SlowKernel(FakeKernel):
    """A connect's 'add' goes out long before the connect answers, as on a real kernel
    (device_add early in the controller's set-up); sysfs reads are counted."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def connect(self, req: ConnectRequest) -> KernelController:
        ctrl = await super().connect(req)
        await trio.sleep(0.2)
        return ctrl

    async def controller(self, device: str) -> KernelController | None:
        self.reads.append(device)
        return await super().controller(device)


async def test_connects_cost_no_sysfs_read_for_their_adds(autojump_clock) -> None:
    kernel = SlowKernel()
    h = ConnectorHarness(kernel=kernel)
    nqns = [f"vol{i}" for i in range(20)]
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC, *nqns))
        await trio.sleep(5)
        await trio.testing.wait_all_tasks_blocked()
        assert h.connected() == set(nqns)
        assert kernel.reads == []  # the old connector read each of the 20 devices
        index = h.connector.state.index.by_device
        assert set(index) == set(kernel.controllers)
        kernel.add_external(
            transport="tcp", traddr="::1", trsvcid="4420", subsysnqn="cli", hostnqn=HOSTNQN
        )
        await trio.testing.wait_all_tasks_blocked()
        (cli,) = kernel.reads  # another's controller is read as before
        assert index[cli].subsysnqn == "cli"
        n.cancel_scope.cancel()
