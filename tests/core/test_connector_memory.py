"""What the connector core keeps per I/O controller (benchmark 4: 10,000 of them in stacd).

Measured as the test_dlpe_memory tests do: tracemalloc, or the sizes of the distinct objects
the state holds; each bound fails on the code before the cut it guards."""

from __future__ import annotations

import sys

from stas.actors.connector_core import ConnectorState, handle
from stas.actors.connector_model import StartIoc, TellIoc
from stas.actors.ioc import WantedChanged
from stas.messages import DcLogPages, DcRemoved
from tests.helpers.connector import stacd_config
from tests.helpers.entries import HOSTID, HOSTNQN, dc_tid, dlpe, tid

DC1, DC2, DC3 = dc_tid("::1"), dc_tid("::2"), dc_tid("::3")


def state() -> ConnectorState:
    return ConnectorState(config=stacd_config(), host_nqn=HOSTNQN, hostid=HOSTID)


def test_the_dcs_listing_a_controller_cost_it_no_object_of_its_own() -> None:
    """20 DCs x 100 controllers: every controller of a DC shares one listing (a dict of its
    own each was 232 B, 2.4 MB at 10,000)."""
    st = state()
    dcs = [dc_tid(f"::{n + 1:x}") for n in range(20)]
    for d, dc in enumerate(dcs):
        page = tuple(
            dlpe(f"nqn.2026-01.io.t:dc{d}-s{s}", eflags=str(4 * (s % 2))) for s in range(100)
        )
        handle(st, DcLogPages(dc, page))
    assert len(st.listing) == 2000
    distinct = {id(v): v for v in st.listing.values()}.values()
    kept = sum(sys.getsizeof(v) + sum(sys.getsizeof(p) for p in v) for v in distinct)
    assert kept / len(st.listing) < 16, f"{kept / len(st.listing):.0f} B per controller"


def test_a_controller_two_dcs_list_follows_both_and_ncc_holds_only_while_both_say_so() -> None:
    st = state()
    handle(st, DcLogPages(DC1, (dlpe("a", eflags="4"), dlpe("b"))))
    handle(st, DcLogPages(DC2, (dlpe("a", eflags="4"),)))
    w = st.actors[tid("a")].wanted
    assert (w.dcs, w.ncc) == ((DC1, DC2), True)
    _, fx = handle(st, DcLogPages(DC2, (dlpe("a"),)))  # DC2 no longer says NCC
    told = [e.event for e in fx if isinstance(e, TellIoc)]
    assert len(told) == 1 and isinstance(told[0], WantedChanged)
    assert (told[0].wanted.dcs, told[0].wanted.ncc) == ((DC1, DC2), False)
    assert st.listing[tid("a")] == ((DC1, True), (DC2, False))
    _, fx = handle(st, DcRemoved(DC1))  # DC2 alone lists it: still wanted, b is not
    assert st.actors[tid("a")].wanted.dcs == (DC2,) and tid("b") not in st.actors
    assert st.listing[tid("a")] == ((DC2, False),) and tid("b") not in st.listing
    _, fx = handle(st, DcLogPages(DC3, (dlpe("a"),)))
    assert st.actors[tid("a")].wanted.dcs == (DC2, DC3)
    assert not [e for e in fx if isinstance(e, StartIoc)]  # never restarted
