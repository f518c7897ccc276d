"""udev-rule=disabled: the shadow of nvme-cli's autoconnect rule in a temporary rules dir."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from stas.coexist.udev_rule import MARKER, RULE_NAME, UdevRuleShadow, is_ours


@pytest.fixture
def shadow(tmp_path: Path) -> UdevRuleShadow:
    return UdevRuleShadow(tmp_path / "run" / "udev" / "rules.d", tmp_path / "etc")


def test_disabled_writes_the_shadow_and_enabled_removes_it(shadow: UdevRuleShadow) -> None:
    shadow.apply(enabled=False)
    text = shadow.path.read_text()
    assert shadow.path.name == RULE_NAME and text.startswith(MARKER + "\n")
    assert "NVME_AEN" not in text and 'SUBSYSTEM=="fc"' in text  # FC discovery kept
    assert stat.S_IMODE(shadow.path.stat().st_mode) == 0o644
    assert [p.name for p in shadow.path.parent.iterdir()] == [RULE_NAME]  # no temporaries
    shadow.apply(enabled=True)
    assert not shadow.path.exists()


def test_a_stale_shadow_from_a_crash_is_cleaned_or_refreshed(shadow: UdevRuleShadow) -> None:
    shadow.path.parent.mkdir(parents=True)
    shadow.path.write_text(MARKER + "\n# an older version\n")
    UdevRuleShadow(shadow.path.parent).apply(enabled=False)
    assert "FC discovery" in shadow.path.read_text()
    UdevRuleShadow(shadow.path.parent).apply(enabled=True)
    assert not shadow.path.exists()


def test_a_file_we_did_not_write_is_never_touched(
    shadow: UdevRuleShadow, caplog: pytest.LogCaptureFixture
) -> None:
    shadow.path.parent.mkdir(parents=True)
    mine = "# the administrator's own rule\n"
    shadow.path.write_text(mine)
    assert not shadow.install()
    assert not shadow.install()
    assert not shadow.remove()
    shadow.apply(enabled=True)
    assert shadow.path.read_text() == mine
    warnings = [r.getMessage() for r in caplog.records if "not written by stacd" in r.getMessage()]
    assert len(warnings) == 1


def test_a_file_appearing_between_check_and_write_is_not_clobbered(
    shadow: UdevRuleShadow, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stas.coexist.udev_rule as mod

    real_link = mod.os.link

    def racing_link(src: str, dst: object) -> None:
        Path(str(dst)).write_text("# someone else, just now\n")
        real_link(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(mod.os, "link", racing_link)
    assert not shadow.install()
    assert shadow.path.read_text() == "# someone else, just now\n"
    assert [p.name for p in shadow.path.parent.iterdir()] == [RULE_NAME]


def test_an_unwritable_rules_dir_is_reported_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    s = UdevRuleShadow(tmp_path / "file" / "rules.d")
    assert not s.install()
    assert any("cannot write" in r.getMessage() for r in caplog.records)


def test_is_ours_needs_the_marker_as_first_line(tmp_path: Path) -> None:
    p = tmp_path / "r"
    assert not is_ours(p)
    p.write_text("# hello\n" + MARKER + "\n")
    assert not is_ours(p)
    p.write_text(MARKER + "\n")
    assert is_ours(p)


def test_an_etc_override_is_mentioned(
    shadow: UdevRuleShadow, caplog: pytest.LogCaptureFixture
) -> None:
    shadow.etc_path.parent.mkdir(parents=True)
    shadow.etc_path.write_text("# admin\n")
    caplog.set_level("INFO", "stas.coexist")
    assert shadow.install()
    assert any("has no effect" in r.getMessage() for r in caplog.records)
