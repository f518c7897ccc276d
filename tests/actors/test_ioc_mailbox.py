"""The IOC actor's mailbox (stas.actors.ioc.Mailbox) and what an idle actor holds in memory."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from stas.actors.ioc import DeviceRemoved, IocSettings, Mailbox, run_ioc_actor
from stas.kernel.api import ConnectRequest, KernelController
from stas.messages import IocWanted, Tid
from tests.helpers.channels import pending
from tests.helpers.entries import HOSTNQN
from tests.helpers.ioc import Run
from tests.helpers.memory import traced


def ev(n: int) -> DeviceRemoved:
    return DeviceRemoved(f"nvme{n}")


async def test_events_arrive_in_order_and_a_full_mailbox_refuses() -> None:
    box = Mailbox(3)
    for n in range(3):
        box.send_nowait(ev(n))
    with pytest.raises(trio.WouldBlock):
        box.send_nowait(ev(3))
    assert [await box.receive() for _ in range(3)] == [ev(0), ev(1), ev(2)]
    box.send_nowait(ev(4))  # room again
    assert await box.receive() == ev(4)


async def test_a_waiting_reader_gets_the_event_handed_over() -> None:
    box = Mailbox(1)
    got: list[object] = []

    async def reader() -> None:
        got.append(await box.receive())
        got.append(await box.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        box.send_nowait(ev(1))  # handed over, not queued: the mailbox stays empty
        box.send_nowait(ev(2))  # so this one fits even though size is 1
        await trio.testing.wait_all_tasks_blocked()
    assert got == [ev(1), ev(2)]


async def test_close_delivers_what_is_queued_then_end_of_channel() -> None:
    box = Mailbox(4)
    box.send_nowait(ev(1))
    box.close()
    with pytest.raises(trio.ClosedResourceError):
        box.send_nowait(ev(2))
    assert await box.receive() == ev(1)
    with pytest.raises(trio.EndOfChannel):
        await box.receive()


async def test_close_wakes_a_waiting_reader() -> None:
    box = Mailbox(1)
    ended = trio.Event()

    async def reader() -> None:
        with pytest.raises(trio.EndOfChannel):
            await box.receive()
        ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert ended.is_set()


async def test_a_cancelled_reader_leaves_the_mailbox_usable(autojump_clock) -> None:
    box = Mailbox(2)
    with trio.move_on_after(0.01):
        await box.receive()
    box.send_nowait(ev(1))  # queued, not handed to the task that gave up
    assert await box.receive() == ev(1)


async def test_a_reader_already_cancelled_is_cancelled_at_once_and_nothing_is_lost() -> None:
    """``receive`` parks without a checkpoint of its own: a pending cancel still ends it, and
    an event sent afterwards is queued for the next reader."""
    box = Mailbox(2)
    with trio.CancelScope() as scope:
        scope.cancel()
        await box.receive()
        raise AssertionError("not cancelled")  # pragma: no cover
    assert scope.cancelled_caught
    box.send_nowait(ev(1))
    assert await box.receive() == ev(1)


async def test_two_readers_at_once_is_an_error() -> None:
    box = Mailbox(1)

    async def reader() -> None:
        await box.receive()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await box.receive()
        nursery.cancel_scope.cancel()


async def test_the_task_that_awaits_is_the_one_woken() -> None:
    """``receive()`` made in one task and awaited in another: the awaiting task is the reader
    (not the one that called ``receive``), and it gets the event."""
    box = Mailbox(1)
    pending = box.receive()
    got: list[object] = []

    async def reader() -> None:
        got.append(await pending)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        box.send_nowait(ev(1))
    assert got == [ev(1)]


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        Mailbox(0)


async def test_an_actor_reads_its_mailbox(autojump_clock) -> None:
    """DeviceRemoved through a Mailbox: the actor reconnects after the fast retry (MockClock:
    with real time, a 3.0 s sleep raced the 3.0 s retry and failed under load)."""
    run = Run(mailbox=(box := Mailbox(4)))
    kernel = run.kernel
    async with trio.open_nursery() as nursery:
        run.start(nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert list(kernel.controllers) == ["nvme0"]
        kernel.remove("nvme0")
        box.send_nowait(DeviceRemoved("nvme0"))
        await trio.sleep(2.9)
        assert not kernel.controllers and len(kernel.connect_log) == 1
        await trio.sleep(0.2)  # past the fast retry (3 s)
        await trio.testing.wait_all_tasks_blocked()
        assert list(kernel.controllers) == ["nvme0"]
        assert len(kernel.connect_log) == 2
        nursery.cancel_scope.cancel()


class _StubKernel:
    """Connects at once to controllers made beforehand, so the kernel allocates nothing."""

    def __init__(self, controllers: list[KernelController]) -> None:
        self._ready = controllers

    async def connect(self, request: ConnectRequest) -> KernelController:
        await trio.lowlevel.checkpoint()
        return self._ready.pop()


def _idle_actor_bytes(actors: int, *, mailbox: Callable[[int], Any] = Mailbox) -> float:
    """Bytes each connected, idle IOC actor keeps: its task, frames, mailbox and status."""
    wanted = [
        IocWanted(Tid("tcp", "::1", "4420", f"nqn.2026-01.io.t:s{i}", host_nqn=HOSTNQN), "x")
        for i in range(actors)
    ]
    requests = [ConnectRequest("tcp", "::1", "4420", w.tid.subsysnqn, HOSTNQN) for w in wanted]
    kernel = _StubKernel([KernelController(device=f"nvme{i}") for i in range(actors)])
    rng = random.Random(1)  # shared, as the connector shares one (each is 2.5 KB)
    starts = [
        partial(run_ioc_actor, w, kernel=kernel, request=r, rng=rng)
        for w, r in zip(wanted, requests, strict=True)
    ]
    boxes: list[Any] = []
    measured: list[float] = []

    async def main() -> None:
        updates_send, updates = trio.open_memory_channel[object](math.inf)
        limiter = trio.CapacityLimiter(8)
        async with trio.open_nursery() as nursery:
            memory.mark(collect=True)
            for start in starts:  # the mailbox counts: the connector makes one per actor
                boxes.append(box := mailbox(16))
                nursery.start_soon(partial(start, updates_send, limiter=limiter, events=box))
            await trio.testing.wait_all_tasks_blocked()
            pending(updates)  # dropped: only what the actors hold counts
            measured.append(memory.held(collect=True) / actors)
            assert not kernel._ready  # every actor connected
            nursery.cancel_scope.cancel()

    with traced() as memory:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return measured[0]


def test_an_idle_connected_actor_stays_small() -> None:
    """10,000 of them run in stacd at benchmark 4's size (target < 100 MB in all): an idle
    actor may not hold a cancel scope, a channel pair or a wrapper frame, nor (connected,
    waiting for the kernel to remove its device) ``wait_event``'s and ``Mailbox.receive``'s
    frames or a bound abort method. Measured on CPython 3.11: 2.1 KB (2.54 KB with those
    frames; with a memory channel pair and the former actor: 6.3 KB)."""
    per_actor = _idle_actor_bytes(500)
    assert per_actor < 2300, f"{per_actor:.0f} bytes per idle actor"


async def test_the_mailbox_tells_what_the_actor_holds(autojump_clock) -> None:
    """``held``: set as the connect returns, cleared when the kernel removes the device."""
    run = Run(mailbox=(box := Mailbox(4)))
    kernel = run.kernel
    assert box.held is None
    async with trio.open_nursery() as nursery:
        run.start(nursery, settings=IocSettings(jitter=0.0, fast_retry=100.0))
        await trio.testing.wait_all_tasks_blocked()
        assert box.held == kernel.controllers["nvme0"] and not box.held_adopted
        kernel.remove("nvme0")
        box.send_nowait(DeviceRemoved("nvme0"))
        await trio.testing.wait_all_tasks_blocked()
        assert box.held is None
        nursery.cancel_scope.cancel()


async def test_a_stop_during_the_kernels_connect_waits_for_it_and_keeps_the_device(
    autojump_clock,
) -> None:
    """The connect is shielded: cancelled while the kernel works, the actor still ends with
    the device it made in ``held`` (the connector reads it), never with a device unrecorded."""
    run = Run(mailbox=(box := Mailbox(4)))
    kernel = run.kernel
    kernel.delay = 5.0
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            run.start(nursery)
            await trio.sleep(1.0)  # the kernel is connecting
            assert kernel.connect_log and not kernel.controllers
            scope.cancel()
    assert trio.current_time() == pytest.approx(5.0)  # the stop waited for the kernel
    assert list(kernel.controllers) == ["nvme0"]
    assert box.held == kernel.controllers["nvme0"] and not box.held_adopted
