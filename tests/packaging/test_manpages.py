"""Man pages are generated from the code (argparse parsers, conf templates) and render cleanly."""

import shutil
import subprocess
from pathlib import Path

import mkman  # scripts/ is on pyproject's pythonpath
import pytest

ROOT = Path(__file__).resolve().parents[2]


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


def test_sys_conf_page_lists_every_host_key(tmp_path: Path) -> None:
    page = mkman.conf_page("sys.conf", "sys")
    for key in ("nqn", "id", "key", "symname"):
        assert f"\\fB{key}\\fR=" in page, key
    render_clean(page, tmp_path)


@pytest.mark.parametrize("iface", mkman.dbus_interfaces(), ids=lambda i: i.name)
def test_dbus_page_lists_every_member_with_its_signature(iface, tmp_path: Path) -> None:
    page = mkman.dbus_page(iface)
    members = [*iface.methods, *iface.signals, *iface.properties]
    assert members
    for m in members:
        assert f"\\fB{mkman.esc(m.name)}\\fR" in page, m.name
    for m in iface.methods:
        for arg in m.in_args:
            assert f"{arg.signature} {mkman.esc(arg.name)}" in page, (m.name, arg.name)
    render_clean(page, tmp_path)


def test_dbus_pages_cover_upstreams_four_interfaces() -> None:
    names = {i.name for i in mkman.dbus_interfaces()}
    assert names == {
        "org.nvmexpress.staf",
        "org.nvmexpress.staf.debug",
        "org.nvmexpress.stac",
        "org.nvmexpress.stac.debug",
    }


@pytest.mark.parametrize("unit", mkman.UNIT_PAGES)
def test_unit_page_shows_every_directive(unit: str, tmp_path: Path) -> None:
    page = mkman.unit_page(unit)
    text = (ROOT / "units" / unit).read_text().splitlines()
    directives = [ln.split("=", 1)[0] for ln in text if "=" in ln and not ln.startswith("#")]
    assert directives
    for key in directives:
        assert f"\\fB{mkman.esc(key)}\\fR=" in page, key
    render_clean(page, tmp_path)


def test_overview_names_every_other_page_and_the_stricter_rules(tmp_path: Path) -> None:
    page = mkman.overview_page()
    for ref in mkman.all_pages():
        if ref != "nvme-stas(7)":
            assert mkman.esc(ref) in page, ref
    assert "STRICTER THAN UPSTREAM" in page
    render_clean(page, tmp_path)


def test_main_writes_upstreams_set_of_pages(tmp_path: Path) -> None:
    assert mkman.main(["--out", str(tmp_path)]) == 0
    written = {p.name for p in tmp_path.iterdir()}
    upstream = {
        "stafctl.1", "stacctl.1", "stasadm.1",
        "stafd.conf.5", "stacd.conf.5", "sys.conf.5",
        "org.nvmexpress.staf.5", "org.nvmexpress.staf.debug.5",
        "org.nvmexpress.stac.5", "org.nvmexpress.stac.debug.5",
        "nvme-stas.7",
        "stafd.8", "stacd.8", "stafd.service.8", "stacd.service.8",
        "stas-config.target.8", "stas-config@.service.8",
    }  # fmt: skip
    assert upstream <= written


def test_stacd_page_files_name_the_connect_intents(tmp_path: Path) -> None:
    """stacd(8) FILES: where a connect is recorded before it is made (a killed stacd's restart)."""
    ((name, section, module, names, text),) = [p for p in mkman.PROGRAMS if p[0] == "stacd"]
    page = mkman.program_page(name, section, module, names, text)
    files = page.split(".SH FILES\n", 1)[1].split(".SH ", 1)[0]
    assert "\\fI/run/nvme/stas\\-connecting\\fR\neach connect is recorded there before" in files
    assert "killed mid\\-connect still knows the controller as its own at restart" in files
    render_clean(page, tmp_path)


@pytest.mark.parametrize("name", mkman.CTL_PROGRAMS)
def test_ctl_pages_document_the_exit_codes(name: str, tmp_path: Path) -> None:
    ((_, section, module, names, text),) = [p for p in mkman.PROGRAMS if p[0] == name]
    page = mkman.program_page(name, section, module, names, text)
    status = page.split(".SH EXIT STATUS\n", 1)[1].split(".SH ", 1)[0]
    for code in ("0", "1", "2", "130", "141"):
        assert f".TP\n\\fB{code}\\fR\n" in status, code
    render_clean(page, tmp_path)
