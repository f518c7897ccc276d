"""What a decoded log page keeps in memory: stafd caches every DC's page (issue 12 bench 4)."""

from __future__ import annotations

from stas.nvme.logpage import DiscoveryLogPage, Limits, LogPageEntry
from tests.helpers.memory import held_after


def entry(i: int, tsas: bytes = bytes(256)) -> LogPageEntry:
    return LogPageEntry(
        trtype=3, adrfam=2, subtype=2, treq=0, portid=1, cntlid=0xFFFF, asqsz=32, eflags=0,
        trsvcid="4420", subnqn=f"nqn.2026-01.io.t:s{i:05d}", traddr="::1", tsas=tsas,
    )  # fmt: skip


def test_all_zero_tsas_is_shared_and_others_are_kept() -> None:
    special = bytes([1]) + bytes(255)
    page = DiscoveryLogPage(7, (entry(0), entry(1), entry(2, special))).encode()
    got = DiscoveryLogPage.decode(page).entries
    assert got[0].tsas == got[1].tsas == bytes(256)
    assert got[0].tsas is got[1].tsas  # one copy, not one per entry
    assert got[2].tsas == special


def test_a_decoded_page_keeps_less_than_300_bytes_per_entry() -> None:
    """10,000 TCP entries: the records and their NQNs, not 256 zero bytes each (was 550 B)."""
    data = DiscoveryLogPage(1, tuple(entry(i) for i in range(10_000))).encode()
    limits = Limits(max_records=10_000, max_bytes=len(data))
    page, kept = held_after(lambda: DiscoveryLogPage.decode(data, limits=limits))
    assert len(page.entries) == 10_000
    assert kept / 10_000 < 300, f"{kept / 10_000:.0f} bytes per entry"
