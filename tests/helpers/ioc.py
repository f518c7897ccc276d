"""One I/O controller actor under test: started in a nursery on a FakeKernel, its statuses
collected and its connect attempts timed. One harness for tests/actors/test_ioc*.py."""

from __future__ import annotations

import math
from typing import Any

import trio
import trio.testing

from stas.actors.ioc import IocEvent, IocSettings, Mailbox, run_ioc_actor
from stas.kernel.api import ConnectRequest, KernelController
from stas.kernel.fake import FakeKernel
from stas.messages import IocStatus, IocWanted, Tid
from tests.helpers.channels import pending
from tests.helpers.entries import HOSTNQN

TID = Tid("tcp", "10.0.0.9", "4420", "klingons", "", "", HOSTNQN)
WANTED = IocWanted(TID, "discovered")
REQUEST = ConnectRequest("tcp", "10.0.0.9", "4420", "klingons", HOSTNQN)
NO_JITTER = IocSettings(jitter=0.0)


class Run:
    """One actor in a nursery: its statuses, its event channel, and the connect times.

    ``mailbox``: the actor reads its events from it (as the connector wires it) rather than
    from a memory channel; ``events`` is then the mailbox itself."""

    def __init__(self, kernel: FakeKernel | None = None, *, mailbox: Mailbox | None = None) -> None:
        self.kernel = kernel or FakeKernel()
        self.updates_send, self.updates = trio.open_memory_channel[Any](math.inf)
        self.events: trio.MemorySendChannel[IocEvent] | Mailbox
        self.events_recv: trio.MemoryReceiveChannel[IocEvent] | Mailbox
        if mailbox is None:
            self.events, self.events_recv = trio.open_memory_channel[IocEvent](math.inf)
        else:
            self.events = self.events_recv = mailbox
        self.statuses: list[IocStatus] = []
        self.times: list[float] = []
        orig = self.kernel.connect

        async def timed(req: ConnectRequest) -> KernelController:
            self.times.append(trio.current_time())
            return await orig(req)

        self.kernel.connect = timed  # type: ignore[method-assign]

    def start(
        self,
        nursery: trio.Nursery,
        wanted: IocWanted = WANTED,
        settings: IocSettings = NO_JITTER,
        **kw: Any,
    ) -> None:
        nursery.start_soon(
            lambda: run_ioc_actor(
                wanted,
                self.updates_send,
                kernel=self.kernel,
                request=REQUEST,
                settings=settings,
                events=self.events_recv,
                **kw,
            )
        )

    async def settle(self) -> IocStatus:
        """Once every task is blocked: the statuses published since, the last one returned."""
        await trio.testing.wait_all_tasks_blocked()
        self.statuses.extend(update.status for update in pending(self.updates))
        return self.statuses[-1]
