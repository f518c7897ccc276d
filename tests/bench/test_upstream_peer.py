"""bench/upstream_peer.py: how upstream nvme-stas 2.4.1 is started beside our daemons."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench import upstream_peer as up

LIBZ = Path("/lib/x86_64-linux-gnu/libz.so.1")  # any real shared library stands in for libnvme


def fake_tree(tmp_path: Path) -> tuple[Path, Path]:
    """An unpacked 'upstream' whose stafd prints what it sees, and a lib dir with a stub
    libnvme package and a loadable stand-in for libnvme.so.1.16.2."""
    root, libdir = tmp_path / "upstream", tmp_path / "lib"
    (root / "usr/sbin").mkdir(parents=True)
    (root / up.STASLIB / "staslib").mkdir(parents=True)
    (root / up.STASLIB / "staslib/__init__.py").write_text("WHERE = 'unpacked'\n")
    (root / "usr/sbin/stafd").write_text(
        "import sys\nfrom libnvme import nvme\nimport staslib\n"
        "if __name__ == '__main__':\n"
        "    print(sys.argv[0].rsplit('/', 1)[-1], sys.argv[1:], nvme.WHO, staslib.WHERE,\n"
        f"          {str(libdir)!r} in sys.path)\n"
    )
    (root / up.LAUNCHER).write_text(up.launcher_text())
    (libdir / "libnvme").mkdir(parents=True)
    (libdir / "libnvme/__init__.py").write_text("")
    (libdir / "libnvme/nvme.py").write_text("WHO = 'bundled 1.16'\n")
    (libdir / up.LIBNVME_SO).parent.mkdir()
    shutil.copy(LIBZ, libdir / up.LIBNVME_SO)
    return root, libdir


@pytest.mark.skipif(not LIBZ.exists() or not Path(up.PYTHON).exists(), reason="no libz/python3")
def test_launcher_runs_the_script_as_main_with_the_bundled_libnvme_and_its_own_name(
    tmp_path,
) -> None:
    root, libdir = fake_tree(tmp_path)
    argv = up.argv("stafd", str(libdir), "-f", "/tmp/x.conf", root=root)
    assert argv[:2] == [up.PYTHON, str(root / up.LAUNCHER)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    # PROG_NAME (basename of argv[0]) is 'stafd'; our lib dir is off sys.path again.
    assert out.strip() == "stafd ['-f', '/tmp/x.conf'] bundled 1.16 unpacked False"


@pytest.mark.skipif(not Path(up.PYTHON).exists(), reason="no python3")
def test_launcher_fails_loudly_without_the_shared_library(tmp_path) -> None:
    root, libdir = fake_tree(tmp_path)
    (libdir / up.LIBNVME_SO).unlink()
    res = subprocess.run(up.argv("stafd", str(libdir), root=root), capture_output=True, text=True)
    assert res.returncode != 0 and "libnvme.so.1.16.2" in res.stderr


def test_env_keeps_the_bus_drops_our_python_settings_and_sets_the_runtime_dir(tmp_path) -> None:
    base = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x", "PYTHONPATH": "/work", "VIRTUAL_ENV": "v",
            "PYTHONPYCACHEPREFIX": "/c", "PATH": "/bin"}  # fmt: skip
    got = up.env(base, tmp_path)
    assert got == {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x", "PATH": "/bin",
                   "RUNTIME_DIRECTORY": str(tmp_path)}  # fmt: skip


def test_missing_reason_names_the_first_missing_file(tmp_path) -> None:
    root, libdir = tmp_path / "up", tmp_path / "lib"
    reason = up.missing_reason(str(libdir), root, tmp_path / "udev")
    assert reason is not None and str(root / up.LAUNCHER) in reason and "not prepared" in reason


def test_prepare_without_the_bundled_libnvme_says_so(tmp_path) -> None:
    with pytest.raises(up.UpstreamError) as e:
        up.prepare(str(tmp_path / "lib"), tmp_path / "up", tmp_path / "udev")
    assert "no libnvme 1.16 in" in str(e.value)


def test_udevd_runs_in_the_foreground_and_rules_are_masked_in_the_given_dir(tmp_path) -> None:
    argv = up.udevd_argv(tmp_path)
    assert argv[0] == str(tmp_path / "systemd-udevd") and "--daemon" not in argv
    up.mask_rules(tmp_path / "rules.d")
    assert (tmp_path / "rules.d/70-nvmf-autoconnect.rules").read_text().startswith("#")


def test_main_usage_error_is_rc_2(capsys) -> None:
    assert up.main(["prepare"]) == 2
    assert "usage: upstream_peer.py prepare LIBDIR" in capsys.readouterr().err
