"""stafd honours /etc/nvme's exclusion list: a listed discovery controller is never connected,
the list is read by stafd's own config loader, and the match is logged once."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import trio

from stas.coexist.exclusions import Exclusions, parse_exclusions
from stas.stafd import StafdOptions, load_config
from tests.helpers.config import stafd_config
from tests.helpers.finder import FinderHarness, ctrls, tid


def exclusions(text: str) -> Exclusions:
    entries, notes = parse_exclusions(text, "exclusions.conf")
    assert notes == []
    return Exclusions(tuple(entries), "")


async def test_finder_never_starts_a_dc_on_the_exclusion_list(autojump_clock, caplog) -> None:
    config = stafd_config(ctrls("10.0.0.1", "10.0.0.2"))
    listed = exclusions("[exclusions]\nexclusion = transport=tcp;traddr=10.0.0.2\n")
    h = FinderHarness(attrs.evolve(config, nvme_exclusions=listed))
    with caplog.at_level(logging.INFO, logger="stas.coexist"):
        async with trio.open_nursery() as n:
            await h.start(n)
            assert h.running == {tid("10.0.0.1")}
            assert h.published_tids() == {tid("10.0.0.1")}
            n.cancel_scope.cancel()
    notes = [r.getMessage() for r in caplog.records if "exclusion list" in r.getMessage()]
    assert len(notes) == 1 and "discovery controller" in notes[0] and "10.0.0.2" in notes[0]


def test_stafd_loads_the_list_from_its_nvme_dir(tmp_path: Path) -> None:
    (tmp_path / "stafd.conf").write_text(ctrls("10.0.0.1", "10.0.0.2"))
    (tmp_path / "nvme").mkdir()
    (tmp_path / "nvme" / "exclusions.conf").write_text(
        "[exclusions]\nexclusion = traddr=10.0.0.2\n"
    )
    opts = StafdOptions(
        conf_file=str(tmp_path / "stafd.conf"),
        sys_conf=str(tmp_path / "sys.conf"),
        state_dir=str(tmp_path / "state"),
        nvme_dir=str(tmp_path / "nvme"),
    )
    config, _ = load_config(opts)
    assert config.nvme_excluded(tid("10.0.0.2"), "discovery controller")
    assert not config.nvme_excluded(tid("10.0.0.1"), "discovery controller")
    unread, _ = load_config(attrs.evolve(opts, nvme_dir=None))
    assert unread.nvme_exclusions is None
