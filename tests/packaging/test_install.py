"""make install into a temp DESTDIR: the file list, launchers that run, conffiles kept."""

import marshal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def installed(dest: Path) -> set[str]:
    return {"/" + str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}


def test_install_file_list_and_uninstall(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    proc = run("install", "--destdir", str(dest), "--no-deps", "--python", sys.executable)
    assert proc.returncode == 0, proc.stderr
    files = installed(dest)
    expected = {
        "/usr/sbin/stafd", "/usr/sbin/stacd", "/usr/bin/stafctl", "/usr/bin/stacctl",
        "/usr/bin/stasadm", "/usr/lib/systemd/system/stafd.service",
        "/usr/lib/systemd/system/stacd.service", "/usr/lib/systemd/system/stas-config.target",
        "/usr/lib/systemd/system/stas-config@.service",
        "/usr/share/dbus-1/system.d/org.nvmexpress.staf.conf",
        "/usr/share/dbus-1/system.d/org.nvmexpress.stac.conf",
        "/etc/stas/stafd.conf", "/etc/stas/stacd.conf", "/etc/stas/sys.conf.doc",
        "/usr/lib/nvme-stas/stas/messages.py",
        "/usr/lib/nvme-stas/INSTALLED_FILES",
    }  # fmt: skip
    assert expected <= files
    assert all(f.startswith(("/usr/", "/etc/stas/")) for f in files)
    manifest = (dest / "usr/lib/nvme-stas/INSTALLED_FILES").read_text().split()
    assert set(manifest) == files

    # Byte-compiled at install by the launchers' interpreter (a first start compiles nothing),
    # with the installed path, not the staging one, recorded in the code objects.
    tag = sys.implementation.cache_tag
    pyc = f"/usr/lib/nvme-stas/stas/__pycache__/messages.{tag}.pyc"
    assert pyc in files
    code = marshal.loads((dest / pyc.lstrip("/")).read_bytes()[16:])
    assert code.co_filename == "/usr/lib/nvme-stas/stas/messages.py"

    # The launcher really runs the installed copy (deps come from this interpreter).
    out = subprocess.run([str(dest / "usr/bin/stasadm"), "-v"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("nvme-stas ")

    # The admin's configuration is never overwritten, and survives uninstall.
    conf = dest / "etc/stas/stafd.conf"
    conf.write_text("[Global]\ntron=true\n")
    assert run("install", "--destdir", str(dest), "--no-deps").returncode == 0
    assert conf.read_text() == "[Global]\ntron=true\n"
    assert run("uninstall", "--destdir", str(dest)).returncode == 0
    assert installed(dest) == {"/etc/stas/stafd.conf", "/etc/stas/stacd.conf"}


def test_prefix_rewrites_unit_exec_paths(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    proc = run("install", "--destdir", str(dest), "--prefix", "/usr/local", "--no-deps")
    assert proc.returncode == 0, proc.stderr
    unit = (dest / "usr/local/lib/systemd/system/stafd.service").read_text()
    assert "ExecStart=/usr/local/sbin/stafd --syslog" in unit
    tmpl = (dest / "usr/local/lib/systemd/system/stas-config@.service").read_text()
    assert "ExecStart=/usr/local/bin/stasadm %i -f /etc/nvme/%i" in tmpl


def test_uninstall_without_install_is_a_clear_error(tmp_path: Path) -> None:
    proc = run("uninstall", "--destdir", str(tmp_path))
    assert proc.returncode == 1 and proc.stderr.startswith("uninstall: nothing recorded")
