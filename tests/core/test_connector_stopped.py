"""A stopped actor's last word (``IocStopped``): a connect that succeeded as the actor was
being stopped is never lost, whatever the core knew of it."""

from __future__ import annotations

import pytest

from stas.actors.connector_core import STOPPED_REASON, handle
from stas.actors.connector_model import (
    Claim,
    Disconnect,
    IocFellBehind,
    IocStopped,
    StopIoc,
    TellIoc,
)
from stas.actors.ioc import KernelFound
from stas.messages import DcLogPages
from tests.core.test_connector_core import DC1, connected, kernel_io, state
from tests.helpers.effects import of
from tests.helpers.entries import dlpe, tid

NO_DISCONNECT = "[I/O controller connection management]\ndisconnect-scope=no-disconnect\n"


def dropped(text: str = ""):
    """``b`` was listed, its actor started (still connecting), then the page dropped it."""
    st = state(text)
    handle(st, DcLogPages(DC1, (dlpe("a"), dlpe("b"))))
    _, fx = handle(st, DcLogPages(DC1, (dlpe("a"),)))
    assert of(StopIoc, fx) == [StopIoc(tid("b"), known=None)]  # the core knew no device
    return st


@pytest.mark.parametrize("adopted", [False, True])
def test_a_device_the_core_never_heard_of_is_claimed_and_disconnected(adopted: bool) -> None:
    st = dropped()
    _, fx = handle(st, IocStopped(tid("b"), kernel_io("b", "nvme7"), adopted, None))
    assert fx == [
        Claim("nvme7", fresh=not adopted),  # as its 'connected' status would have claimed it
        Disconnect("nvme7", tid("b"), STOPPED_REASON),
    ]
    assert "nvme7" not in st.owner and "nvme7" not in st.index.by_device


def test_the_scope_keeps_it_claimed_and_indexed() -> None:
    st = dropped(NO_DISCONNECT)
    _, fx = handle(st, IocStopped(tid("b"), kernel_io("b", "nvme7"), False, None))
    assert fx == [Claim("nvme7", fresh=True)]
    assert "nvme7" in st.index.by_device and "nvme7" not in st.owner


def test_a_device_decided_about_at_the_stop_is_not_decided_again() -> None:
    st = state()
    handle(st, DcLogPages(DC1, (dlpe("a"), dlpe("b"))))
    connected(st, "b", "nvme3")
    _, fx = handle(st, DcLogPages(DC1, (dlpe("a"),)))
    assert of(StopIoc, fx) == [StopIoc(tid("b"), known="nvme3")]
    assert len(of(Disconnect, fx)) == 1
    _, fx = handle(st, IocStopped(tid("b"), kernel_io("b", "nvme3"), False, "nvme3"))
    assert fx == []


def test_a_device_another_actor_holds_is_left_to_it() -> None:
    st = dropped()
    connected(st, "a", "nvme1")
    _, fx = handle(st, IocStopped(tid("b"), kernel_io("b", "nvme1"), False, None))
    assert fx == [] and st.owner["nvme1"] == tid("a")


def test_a_restarted_actor_adopts_what_its_predecessor_connected() -> None:
    """A restart stops and starts in one message: the last word comes after the new start."""
    st = state()
    handle(st, DcLogPages(DC1, (dlpe("a"),)))
    _, fx = handle(st, IocFellBehind(tid("a")))
    assert of(StopIoc, fx) == [StopIoc(tid("a"), known=None)]
    ctrl = kernel_io("a", "nvme5")
    _, fx = handle(st, IocStopped(tid("a"), ctrl, False, None))
    assert fx == [Claim("nvme5", fresh=True), TellIoc(tid("a"), KernelFound(ctrl))]
    assert st.owner["nvme5"] == tid("a") and st.index.by_device["nvme5"] == ctrl
