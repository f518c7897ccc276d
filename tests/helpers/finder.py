"""stafd's finder under test: fake DC actors that record their starts and stops and never
connect by themselves; stafd.conf controller lines and DC Tids as the finder tests write
them. Used by tests/actors/test_finder.py and tests/coexist."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from trio_util import AsyncValue

from stas.actors.finder import Finder
from stas.config import ServiceConfig
from stas.messages import DcStatus, StafdSnapshot, Tid
from stas.state import StateStore
from tests.helpers.entries import HOSTNQN, dc_tid


def ctrls(*addrs: str, extra: str = "") -> str:
    """A [Controllers] section with one TCP discovery controller per address, then ``extra``."""
    return (
        "[Controllers]\n" + "".join(f"controller=transport=tcp;traddr={a}\n" for a in addrs) + extra
    )


def tid(addr: str, port: str = "8009", iface: str = "") -> Tid:
    return dc_tid(addr, port, host_iface=iface)


async def refuse_all(addr: str, port: int, iface: str) -> None:
    raise OSError("refused")


class FinderHarness:
    """A finder with fake DC actors that record starts/stops and never connect by themselves."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        store: StateStore | None = None,
        probe: Any = None,
        resolver: Any = None,
        cleanup: float = 0.0,
    ) -> None:
        self.started: list[tuple[Tid, str, DcStatus | None]] = []
        self.wanted: dict[Tid, object] = {}
        self.stopped: list[Tid] = []
        self.published = AsyncValue(StafdSnapshot())
        self.send, self.receive = trio.open_memory_channel[Any](10_000)

        async def factory(wanted: Any, updates: Any, initial: DcStatus | None) -> None:
            self.started.append((wanted.tid, wanted.origin, initial))
            self.wanted[wanted.tid] = wanted
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(cleanup)  # e.g. a DIM deregistration (up to 10 s)
                self.stopped.append(wanted.tid)

        self.finder = Finder(
            config=config,
            host_nqn=HOSTNQN,
            dc_factory=factory,
            published=self.published,
            state_store=store,
            resolver=resolver,
            probe=probe or refuse_all,
        )

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self.finder.run, self.receive, self.send)
        await trio.testing.wait_all_tasks_blocked()

    async def put(self, *msgs: object) -> None:
        """Each message into the finder's inbox, then wait until everything settled."""
        for m in msgs:
            await self.send.send(m)
        await trio.testing.wait_all_tasks_blocked()

    @property
    def running(self) -> set[Tid]:
        return set(self.finder.running)

    def origin(self, t: Tid) -> str:
        return self.finder.running[t].origin

    def published_tids(self) -> set[Tid]:
        return {dc.tid for dc in self.published.value.dcs}
