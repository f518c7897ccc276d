"""Config templates: every option documented at its real default, and they parse cleanly."""

from pathlib import Path

import pytest

from stas.config import OPTIONS, parse_service_config
from stas.config.options import SECTION_DAEMONS

CONF = Path(__file__).resolve().parents[2] / "conf"
SHOWN_DEFAULT = {"zeroconf-connections-persistence": "72hours"}


def template_lines(daemon: str) -> list[str]:
    return (CONF / f"{daemon}.conf").read_text().splitlines()


@pytest.mark.parametrize("daemon", ["stafd", "stacd"])
def test_every_option_is_documented_at_its_default(daemon: str) -> None:
    lines = template_lines(daemon)
    for opt in OPTIONS:
        if daemon not in opt.defaults:
            assert not any(ln.startswith(f"#{opt.name}=") for ln in lines), opt.name
            continue
        shown = SHOWN_DEFAULT.get(opt.name, opt.default_text(daemon))
        expected = f"#{opt.name}=" + ("" if shown == "none" else shown)
        assert expected in lines, f"{daemon}.conf lacks {expected!r}"


@pytest.mark.parametrize("daemon", ["stafd", "stacd"])
def test_sections_are_the_daemons_own(daemon: str) -> None:
    sections = [ln.strip("[]") for ln in template_lines(daemon) if ln.startswith("[")]
    assert sections == [s for s, ds in SECTION_DAEMONS.items() if daemon in ds]


@pytest.mark.parametrize("daemon", ["stafd", "stacd"])
def test_template_parses_to_defaults_without_warnings(daemon: str) -> None:
    text = (CONF / f"{daemon}.conf").read_text()
    config, warnings = parse_service_config(text, daemon)
    assert warnings == []
    assert config == type(config).defaults(daemon)


@pytest.mark.parametrize("daemon", ["stafd", "stacd"])
def test_uncommenting_every_default_changes_nothing(daemon: str) -> None:
    text = "\n".join(
        ln[1:] if ln.startswith("#") and "=" in ln and not ln.startswith("# ") and
        not ln.endswith("=") else ln
        for ln in template_lines(daemon)
    )  # fmt: skip
    config, warnings = parse_service_config(text, daemon)
    assert warnings == []
    assert config == type(config).defaults(daemon)


def test_seed_post_install_edits_work() -> None:
    """The seed's stas-config.sh uses sed on these exact lines."""
    for daemon in ("stafd", "stacd"):
        assert "#tron=false" in template_lines(daemon)
    assert "#controller=" in template_lines("stafd")


def test_sys_conf_doc_lists_every_key() -> None:
    text = (CONF / "sys.conf.doc").read_text()
    for key in ("nqn", "id", "key", "symname"):
        assert f"#{key}=" in text
