"""A connected IOC actor keeps no connect request: it is made again, from the configuration
in force, when the actor must connect again (benchmark 4: 10,000 requests were 2.4 MB)."""

from __future__ import annotations

import gc

import trio
import trio.testing

from stas.kernel.api import ConnectRequest
from stas.messages import StacdConfigChanged
from tests.helpers.connector import ConnectorHarness as Harness
from tests.helpers.connector import stacd_config as conf
from tests.helpers.entries import dc_tid, page

DC1 = dc_tid("::1")

NQNS = tuple(f"nqn.2026-01.io.t:s{i}" for i in range(50))


def live_requests() -> int:
    """Requests for this test's controllers still alive (other tests may keep their own)."""
    gc.collect()
    return sum(isinstance(o, ConnectRequest) and o.subsysnqn in NQNS for o in gc.get_objects())


async def test_connected_actors_hold_no_connect_request(autojump_clock) -> None:
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, *NQNS))
        assert h.connected() == set(NQNS)
        h.kernel.connect_log.clear()  # the fake kernel's record of them; the kernel keeps none
        assert live_requests() == 0
        n.cancel_scope.cancel()


async def test_a_removed_controller_reconnects_with_the_configuration_in_force(
    autojump_clock,
) -> None:
    """Connected, reconfigured (kato 7), then removed by the kernel: the reconnect is made
    with kato 7, without the connection being touched at the reload."""
    h = Harness()
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC1, "klingons", "starfleet"))
        assert h.connected() == {"klingons", "starfleet"}
        await h.put(StacdConfigChanged(conf("[Global]\nkato=7\n")))
        assert [r.kato for r in h.kernel.connect_log] == [None, None]  # nothing reconnected
        h.kernel.remove(h.device("klingons"))
        await trio.sleep(4)  # the fast retry
        await trio.testing.wait_all_tasks_blocked()
        assert h.connected() == {"klingons", "starfleet"}
        last = h.kernel.connect_log[-1]
        assert (last.subsysnqn, last.kato, len(h.kernel.connect_log)) == ("klingons", 7, 3)
        assert h.kernel.disconnect_log == []
        n.cancel_scope.cancel()
