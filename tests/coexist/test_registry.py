"""libnvme's ownership registry under a temporary root: claim, adopt, release, decisions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from stas.coexist.registry import OWNER, Registry, may_claim, may_disconnect
from tests.coexist.conftest import put


def test_absence_means_unowned(reg: Registry) -> None:
    assert reg.owner("nvme3") is None  # not even the root exists
    (reg.root / "nvme3").mkdir(parents=True)
    assert reg.owner("nvme3") is None  # a directory without owner
    put(reg, "nvme4", "discoverd")
    assert reg.owner("nvme4") == "discoverd"


def test_a_fresh_connect_creates_the_registry_with_libnvme_modes(reg: Registry) -> None:
    old = os.umask(0o077)  # a tight umask must not make the registry private
    try:
        assert reg.claim("nvme1", fresh=True)
    finally:
        os.umask(old)
    entry = reg.root / "nvme1"
    assert (entry / "owner").read_text() == "stas\n"
    assert (entry / "seqnum").read_text() == "4242\n"
    for d in (reg.root, entry):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
    for f in ("owner", "seqnum"):
        assert stat.S_IMODE((entry / f).stat().st_mode) == 0o644
    assert sorted(p.name for p in reg.root.iterdir()) == ["nvme1"]  # no temporaries left


def test_a_fresh_connect_replaces_a_stale_entry_of_a_recycled_name(reg: Registry) -> None:
    put(reg, "nvme2", "discoverd")
    (reg.root / "nvme2" / "note").write_text("old controller\n")
    assert reg.claim("nvme2", fresh=True)
    assert reg.owner("nvme2") == OWNER
    assert not (reg.root / "nvme2" / "note").exists()
    assert sorted(p.name for p in reg.root.iterdir()) == ["nvme2"]


def test_adoption_claims_only_what_nobody_owns(reg: Registry) -> None:
    put(reg, "nvme5", "nbft")
    assert not reg.claim("nvme5", fresh=False)
    assert reg.owner("nvme5") == "nbft"
    assert reg.claim("nvme6", fresh=False)
    assert reg.owner("nvme6") == OWNER
    (reg.root / "nvme7").mkdir()
    (reg.root / "nvme7" / "note").write_text("x\n")
    assert reg.claim("nvme7", fresh=False)  # an entry without owner: ours, its note kept
    assert reg.owner("nvme7") == OWNER and (reg.root / "nvme7" / "note").exists()


def test_release_drops_only_our_own_entry(reg: Registry) -> None:
    reg.claim("nvme1", fresh=True)
    put(reg, "nvme2", "discoverd")
    reg.release("nvme1")
    reg.release("nvme2")
    assert reg.owner("nvme1") is None and reg.owner("nvme2") == "discoverd"
    assert sorted(p.name for p in reg.root.iterdir()) == ["nvme2"]


@pytest.mark.parametrize("device", ["../etc", "nvme1/..", "sda", "nvme", "nvme1n1"])
def test_only_controller_names_reach_the_file_system(reg: Registry, device: str) -> None:
    assert reg.owner(device) is None
    assert not reg.claim(device, fresh=True)
    assert not reg.root.exists()


def test_a_registry_that_cannot_be_written_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    reg = Registry(tmp_path / "file" / "registry")  # below a file: ENOTDIR
    assert not reg.claim("nvme1", fresh=True)
    assert not reg.claim("nvme2", fresh=True)
    warnings = [r.getMessage() for r in caplog.records if "cannot record" in r.getMessage()]
    assert len(warnings) == 1 and "nvme1" in warnings[0]


def test_decisions() -> None:
    assert may_disconnect(None) and may_disconnect("stas")
    assert not may_disconnect("discoverd") and not may_disconnect("nbft")
    assert may_claim(None) and not may_claim("stas") and not may_claim("autoconnect")
