"""stasadm: identity derivation (checked against systemd-id128) and sys.conf/file updates."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stas.ctl import stasadm

MACHINE_ID = "3d1219c7c4c5404aaa1f6d2a48adfda4"
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def test_app_specific_uuid_known_vector() -> None:
    # `systemd-id128 machine-id --app-specific=246e766d657870726573732e6f726724 -u` on a
    # machine whose /etc/machine-id is MACHINE_ID printed this.
    assert stasadm.machine_app_specific_uuid(MACHINE_ID + "\n") == (
        "6fd07859-c5d2-41e7-a917-017570183fdd"
    )


@pytest.mark.skipif(shutil.which("systemd-id128") is None, reason="systemd-id128 not installed")
def test_app_specific_uuid_agrees_with_systemd_here() -> None:
    mine = stasadm.machine_app_specific_uuid(Path("/etc/machine-id").read_text())
    theirs = subprocess.run(
        ["systemd-id128", "machine-id", "--app-specific=" + stasadm.NVME_APP_ID.hex(), "-u"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert mine == theirs


def test_bad_machine_id_is_a_clear_error() -> None:
    with pytest.raises(stasadm.StasadmError, match="not hexadecimal"):
        stasadm.machine_app_specific_uuid("zz")
    with pytest.raises(stasadm.StasadmError, match="32 hex digits"):
        stasadm.machine_app_specific_uuid("abcd")


def test_derivation_order(tmp_path: Path) -> None:
    mid, dmi, ibm = tmp_path / "machine-id", tmp_path / "product_uuid", tmp_path / "ibm"
    dmi.write_text("03020100-0504-0706-0809-0a0b0c0d0e0f\n")
    assert stasadm.derive_host_uuid(mid, dmi, ibm) == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    mid.write_text(MACHINE_ID)
    assert stasadm.derive_host_uuid(mid, dmi, ibm) == "6fd07859-c5d2-41e7-a917-017570183fdd"
    dmi.unlink()
    mid.unlink()
    ibm.write_bytes(b"12345678-1234-5678-1234-567812345678\0")
    assert stasadm.derive_host_uuid(mid, dmi, ibm) == "12345678-1234-5678-1234-567812345678"
    ibm.unlink()
    assert re.fullmatch(UUID_RE, stasadm.derive_host_uuid(mid, dmi, ibm))


def test_hostnqn_to_file_and_conf_keeps_comments(tmp_path: Path, monkeypatch) -> None:
    conf = tmp_path / "sys.conf"
    conf.write_text("# my notes\n[Host]\n# keep me\nsymname=alpha\n")
    monkeypatch.setattr(stasadm, "derive_host_uuid", lambda: "6fd07859-c5d2-41e7-a917-017570183fdd")
    hostnqn = tmp_path / "nvme" / "hostnqn"
    assert stasadm.main(["-c", str(conf), "hostnqn", "-f", str(hostnqn)]) == 0
    assert hostnqn.read_text() == (
        "nqn.2014-08.org.nvmexpress:uuid:6fd07859-c5d2-41e7-a917-017570183fdd\n"
    )
    text = conf.read_text()
    assert text.startswith("# my notes\n[Host]\n# keep me\n")
    assert f"nqn=file://{hostnqn}" in text and "symname=alpha" in text


def test_hostid_set_and_clear_symname(tmp_path: Path) -> None:
    conf = tmp_path / "sys.conf"
    assert stasadm.main(["-c", str(conf), "hostid"]) == 0
    assert re.search(r"^id=" + UUID_RE + "$", conf.read_text(), re.M)
    assert stasadm.main(["-c", str(conf), "set-symname", "rack 7 host"]) == 0
    assert "symname=rack 7 host" in conf.read_text()
    assert stasadm.main(["-c", str(conf), "clear-symname"]) == 0
    assert "symname" not in conf.read_text()


def test_hostnqn_reads_back_through_sys_config(tmp_path: Path) -> None:
    from stas.config import load_sys_config

    conf = tmp_path / "sys.conf"
    assert stasadm.main(["-c", str(conf), "hostnqn", "-f", str(tmp_path / "hostnqn")]) == 0
    assert stasadm.main(["-c", str(conf), "hostid", "-f", str(tmp_path / "hostid")]) == 0
    sysconf = load_sys_config(conf)
    assert sysconf.hostnqn and sysconf.hostnqn.startswith("nqn.2014-08.org.nvmexpress:uuid:")
    assert sysconf.hostid and re.fullmatch(UUID_RE, sysconf.hostid)


def test_unwritable_file_is_one_line(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc = stasadm.main(["-c", str(tmp_path / "sys.conf"), "hostid", "-f", str(blocker / "x")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("stasadm: cannot write ") and err.count("\n") == 1


def test_usage_and_version(capsys) -> None:
    assert stasadm.main([]) == 1
    assert "usage: stasadm" in capsys.readouterr().out
    assert stasadm.main(["-v"]) == 0
    assert capsys.readouterr().out.startswith("nvme-stas ")
    with pytest.raises(SystemExit) as info:
        stasadm.main(["bogus"])
    assert info.value.code == 2


def test_runs_as_a_program(tmp_path: Path) -> None:
    conf = tmp_path / "sys.conf"
    proc = subprocess.run(
        [sys.executable, "-m", "stas.ctl.stasadm", "-c", str(conf), "set-symname", "x"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "symname=x" in conf.read_text()
