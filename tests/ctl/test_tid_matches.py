"""One rule for "the DC these 7 strings name": stafd's lookups (find_by_tid) and stafctl's
check of a name it was given (stas.constants.tid_matches)."""

from __future__ import annotations

import attrs
import pytest

from stas.actors.daemon_dbus import find_by_tid
from stas.constants import tid_matches
from stas.messages import Tid

DC = ("tcp", "::1", "8009", "nqn.2014-08.org.nvmexpress.discovery", "", "", "nqn.host")


@pytest.mark.parametrize(
    ("wanted", "matches"),
    [
        (DC, True),
        ((*DC[:2], "", *DC[3:]), True),  # '' trsvcid: tcp's default port 8009
        ((*DC[:6], ""), True),  # '' host NQN: any
        ((*DC[:6], "nqn.other"), False),
        ((*DC[:2], "4420", *DC[3:]), False),
        (("rdma", *DC[1:2], "", *DC[3:]), False),  # rdma's default is 4420
        ((*DC[:4], "::9", *DC[5:]), False),
    ],
)
def test_what_seven_strings_name(wanted: tuple[str, ...], matches: bool) -> None:
    assert tid_matches(DC, wanted) is matches


def test_stafd_looks_dcs_up_by_the_same_rule() -> None:
    @attrs.frozen
    class Item:
        tid: Tid

    items = [Item(Tid(*DC[:6], "nqn.a")), Item(Tid(*DC))]
    assert find_by_tid(items, (*DC[:2], "", *DC[3:])) is items[1]
    assert find_by_tid(items, (*DC[:6], "")) is items[0]  # the first, any host NQN
    assert find_by_tid(items, (*DC[:6], "nqn.b")) is None
