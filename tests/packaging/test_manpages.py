"""Man pages are generated from the code (argparse parsers, conf templates) and render cleanly."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import mkman  # noqa: E402


def render_clean(page: str, tmp_path: Path) -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff not installed")
    f = tmp_path / "page.man"
    f.write_text(page)
    proc = subprocess.run(["groff", "-man", "-ww", "-z", str(f)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_stasadm_page_lists_every_command_and_option(tmp_path: Path) -> None:
    page = mkman.program_page("stasadm", 1, "stas.ctl.stasadm", ("build_parser",), "desc")
    for word in ("hostnqn", "hostid", "set\\-symname", "clear\\-symname", "\\-\\-conf\\-file"):
        assert word in page
    render_clean(page, tmp_path)


@pytest.mark.parametrize("name,daemon", mkman.CONF_PAGES)
def test_conf_page_has_every_option_of_the_template(name: str, daemon: str, tmp_path) -> None:
    from stas.config import OPTIONS

    page = mkman.conf_page(name, daemon)
    for opt in OPTIONS:
        if daemon in opt.defaults:
            assert f"\\fB{mkman.esc(opt.name)}\\fR=" in page, opt.name
    render_clean(page, tmp_path)


@pytest.mark.parametrize("name,section,module,names,text", mkman.PROGRAMS)
def test_every_program_page_follows_its_parser(name, section, module, names, text, tmp_path):
    parser = mkman.find_parser(module, names)
    assert parser is not None, f"{name}: no parser in {module}"
    page = mkman.program_page(name, section, module, names, text)
    for action in parser._actions:
        for flag in action.option_strings:
            assert mkman.esc(flag) in page, f"{name}: {flag} missing from the page"
    render_clean(page, tmp_path)
