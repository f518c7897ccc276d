"""What the registry costs per connect: every connect writes its intent and its entry once,
and reads nothing back (issue 8: stacd's CPU per connect under emulation). The entries are
what libnvme writes either way (tests/coexist/test_registry.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio

from stas.coexist.registry import OWNER, Registry
from tests.helpers.connector import ConnectorHarness
from tests.helpers.entries import dc_tid, page

DC = dc_tid()
N = 12


class CountingRegistry(Registry):
    """The registry, with its calls counted."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.calls: Counter[str] = Counter()

    def owner(self, device: str) -> str | None:
        self.calls["owner"] += 1
        return super().owner(device)

    def claim(self, device: str, *, fresh: bool) -> bool:
        self.calls["claim"] += 1
        return super().claim(device, fresh=fresh)


def registry(tmp_path: Path) -> CountingRegistry:
    seq = tmp_path / "uevent_seqnum"
    seq.write_text("99\n")
    return CountingRegistry(tmp_path / "run" / "nvme" / "registry", seqnum_file=seq)


async def test_each_connect_is_claimed_once_and_nothing_is_read_back(
    autojump_clock, tmp_path
) -> None:
    """The old stacd claimed every connect twice: the intent's settle wrote the entry, then
    the core's claim on the 'connected' status read the owner back (N more claims, N reads)."""
    reg = registry(tmp_path)
    h = ConnectorHarness(registry=reg)
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(page(DC, *(f"vol{i}" for i in range(N))))
        await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked()
        assert len(h.connected()) == N
        n.cancel_scope.cancel()
    devices = set(h.kernel.controllers)
    assert {reg.owner(d) for d in devices} == {OWNER}
    reg.calls["owner"] -= N  # the reads just above
    assert reg.calls == Counter(claim=N, owner=0)
    assert reg.writes == 3 * N  # the intent, the entry's seqnum and owner
    assert sorted(p.name for p in reg.root.iterdir()) == sorted(devices)  # no temporaries
    assert list(reg.intents.iterdir()) == []  # every intent settled


def test_a_fresh_claim_over_an_entry_still_replaces_it_unless_ours(tmp_path: Path) -> None:
    """The fast path (create, no read) falls back to reading when an entry is there."""
    reg = registry(tmp_path)
    assert reg.claim("nvme1", fresh=True)
    before = (reg.root / "nvme1" / "seqnum").stat().st_ino
    assert reg.claim("nvme1", fresh=True)  # ours already: left as it is
    assert (reg.root / "nvme1" / "seqnum").stat().st_ino == before
    (reg.root / "nvme1" / "owner").write_text("discoverd\n")
    assert reg.claim("nvme1", fresh=True) and reg.owner("nvme1") == OWNER
    assert sorted(p.name for p in reg.root.iterdir()) == ["nvme1"]
