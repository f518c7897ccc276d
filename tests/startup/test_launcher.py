"""The installed launchers run ``python -S`` when every dependency is in nvme-stas' private
library directory: no ``site``, so none of the host's ``.pth`` hooks (_distutils_hack,
certifi, sitecustomize: imports at every start, seconds under emulation) (issue 8)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from install import BUNDLED_DEPS, Installer, launcher  # scripts/install.py

from stas import attrs_cache

ROOT = Path(__file__).resolve().parents[2]
PURELIB = Path(sysconfig.get_paths()["purelib"])


def test_bundled_launcher_skips_site_and_unbundled_keeps_it() -> None:
    bundled = launcher("/usr/lib/nvme-stas", "stas.main:stafd_main", "/usr/bin/python3", True)
    assert bundled.splitlines()[0] == "#!/usr/bin/python3 -S"
    host = launcher("/usr/lib/nvme-stas", "stas.main:stafd_main", "/usr/bin/python3", False)
    assert host.splitlines()[0] == "#!/usr/bin/python3"


@pytest.mark.parametrize("missing", [None, "libnvme", "trio"])
def test_bundled_means_every_dependency_in_the_private_directory(
    tmp_path: Path, missing: str | None
) -> None:
    inst = Installer(str(tmp_path), "/usr", "/etc", sys.executable)
    for dep in BUNDLED_DEPS:
        if dep != missing:
            (tmp_path / "usr/lib/nvme-stas" / dep).mkdir(parents=True)
    assert inst.bundled() is (missing is None)


def private_lib(tmp_path: Path) -> Path:
    """A private library directory as `make install` fills it: stas and its dependencies."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "stas").symlink_to(ROOT / "stas")
    for entry in PURELIB.iterdir():
        if entry.is_dir() and not entry.name.endswith("-info") and entry.name != "stas":
            (lib / entry.name).symlink_to(entry)
    return lib


def test_a_bundled_launcher_starts_the_daemon_without_site(tmp_path: Path) -> None:
    lib = private_lib(tmp_path)
    prog = tmp_path / "stafd"
    # the launcher, plus a line that reports whether site was imported when the daemon exits
    text = launcher(str(lib), "stas.main:stafd_main", sys.executable, True)
    text = text.replace("sys.exit(", "import atexit\natexit.register(lambda: print("
                        "'SITE', 'site' in sys.modules))\nsys.exit(")  # fmt: skip
    prog.write_text(text)
    prog.chmod(0o755)
    bad = tmp_path / "stafd.conf"
    bad.write_bytes(b"\x00\xff garbage")  # refused after all the imports: exit 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run([str(prog), "-f", str(bad), "--sys-conf", str(tmp_path / "sys.conf"),
                          "--state-dir", str(tmp_path)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=60)  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "stafd: INFO stafd " in out.stdout and "starting" in out.stdout
    assert "SITE False" in out.stdout


def test_install_records_the_attrs_table_with_the_launchers_interpreter(tmp_path: Path) -> None:
    """`make install` leaves stas/attrs-code.cache beside the package; it loads in a daemon."""
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copytree(ROOT / "stas", lib / "stas", ignore=shutil.ignore_patterns("__pycache__"))
    for entry in PURELIB.iterdir():
        if entry.is_dir() and not entry.name.endswith("-info") and entry.name != "stas":
            (lib / entry.name).symlink_to(entry)
    inst = Installer(str(tmp_path), "/usr", "/etc", sys.executable)
    inst.record_attrs_code(lib, bundled=True)
    table = attrs_cache.load(str(lib / "stas" / attrs_cache.FILE_NAME))
    assert table is not None and len(table) > 50
