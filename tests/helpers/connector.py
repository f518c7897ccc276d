"""The connector as stacd wires it, for Trio tests: the fake kernel's uevents forwarded to its
inbox, its published snapshot at hand. One harness for every connector test folder."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from trio_util import AsyncValue

from stas.actors.connector import Connector
from stas.actors.ioc import IocSettings
from stas.config import ServiceConfig
from stas.kernel.api import KernelController
from stas.kernel.fake import FakeKernel
from stas.messages import StacdSnapshot
from tests.helpers.config import stacd_config
from tests.helpers.entries import HOSTID, HOSTNQN


def external(kernel: FakeKernel, nqn: str, traddr: str = "::1") -> KernelController:
    """An I/O controller someone else connected: ``nqn`` at ``traddr`` port 4420 (TCP), our
    host NQN."""
    return kernel.add_external(
        transport="tcp", traddr=traddr, trsvcid="4420", subsysnqn=nqn, hostnqn=HOSTNQN,
        cntrltype="io",
    )  # fmt: skip


class ConnectorHarness:
    """``Connector(**connector_kw)`` on ``kernel`` (a fresh fake by default), no retry jitter;
    ``uevents=False`` leaves the kernel's events unread (as if the monitor were stuck)."""

    def __init__(
        self,
        config: ServiceConfig | None = None,
        kernel: FakeKernel | None = None,
        *,
        uevents: bool = True,
        inbox: int = 100_000,
        **connector_kw: Any,
    ) -> None:
        self.kernel = kernel or FakeKernel()
        self.published = AsyncValue(StacdSnapshot())
        self.send, self.receive = trio.open_memory_channel[object](inbox)
        self.uevents = uevents
        self.connector = Connector(
            config=config or stacd_config(),
            host_nqn=HOSTNQN,
            hostid=HOSTID,
            kernel=self.kernel,
            published=self.published,
            settings=IocSettings(jitter=0.0),
            **connector_kw,
        )

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self.connector.run, self.receive)
        if self.uevents:

            async def forward() -> None:
                async for ev in self.kernel.events:
                    await self.send.send(ev)

            nursery.start_soon(forward)

    async def put(self, *msgs: object) -> None:
        """Each message into the connector's inbox, then wait until everything settled."""
        for m in msgs:
            await self.send.send(m)
        await trio.testing.wait_all_tasks_blocked()

    def connected(self) -> set[str]:
        return {s.tid.subsysnqn for s in self.published.value.iocs if s.connected}

    def device(self, nqn: str) -> str:
        return next(s.device for s in self.published.value.iocs if s.tid.subsysnqn == nqn)

    def shown(self) -> dict[str, str]:
        """``stacctl ls``'s view: subsystem -> device, connected ones only."""
        return {s.tid.subsysnqn: s.device for s in self.published.value.iocs if s.connected}
