"""stasadm: identity derivation (upstream stasadm's, not systemd-id128's), sys.conf updates."""

import hashlib
import hmac
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stas.config.identity import derive_host_uuid
from stas.ctl import stasadm

MACHINE_ID = "3d1219c7c4c5404aaa1f6d2a48adfda4"
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def upstream_uuid(machine_id: str) -> str:
    """Upstream stasadm's derivation written out independently: HMAC-SHA256 keyed with the app
    id over the 16 machine-id bytes, first 16 bytes, version 4 and RFC 4122 variant bits."""
    mac = hmac.new(b"$nvmexpress.org$", bytes.fromhex(machine_id), hashlib.sha256).digest()
    raw = bytearray(mac[:16])
    raw[6] = 0x40 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# machine-id -> the host NQN upstream 2.4.1's `stasadm hostnqn` writes
VECTORS = [
    (MACHINE_ID, "fc337778-3c44-4938-aaaf-501ded981e7b"),
    ("00000000000000000000000000000000", upstream_uuid("0" * 32)),
    ("ffffffffffffffffffffffffffffffff", upstream_uuid("f" * 32)),
    ("ABCDEF0123456789ABCDEF0123456789", upstream_uuid("abcdef0123456789abcdef0123456789")),
]


@pytest.mark.parametrize(("machine_id", "expected"), VECTORS)
def test_host_uuid_is_upstreams(machine_id: str, expected: str) -> None:
    assert stasadm.machine_app_specific_uuid(machine_id + "\n") == expected


def test_known_vector_is_computed_the_upstream_way() -> None:
    assert upstream_uuid(MACHINE_ID) == "fc337778-3c44-4938-aaaf-501ded981e7b"


@pytest.mark.skipif(shutil.which("systemd-id128") is None, reason="systemd-id128 not installed")
def test_upstream_is_not_systemds_app_specific_id() -> None:
    # upstream swaps HMAC key and message relative to systemd: hosts moving from upstream keep
    # upstream's value, so systemd-id128 must NOT be what we reproduce
    mine = stasadm.machine_app_specific_uuid(Path("/etc/machine-id").read_text())
    theirs = subprocess.run(
        ["systemd-id128", "machine-id", "--app-specific=" + stasadm.NVME_APP_ID.hex(), "-u"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert mine == upstream_uuid(Path("/etc/machine-id").read_text().strip()) != theirs


@pytest.mark.parametrize("text", ["zz" * 16, "abcd", "uninitialized", ""])
def test_bad_machine_id_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="a machine id"):
        stasadm.machine_app_specific_uuid(text)


def test_derivation_order(tmp_path: Path) -> None:
    mid, dmi, ibm = tmp_path / "machine-id", tmp_path / "product_uuid", tmp_path / "ibm"
    dmi.write_text("03020100-0504-0706-0809-0A0B0C0D0E0F\n")  # sysfs prints it in capitals
    mid.write_text("uninitialized\n")  # systemd's first-boot marker: unusable, as upstream
    assert stasadm.derive_host_uuid(mid, dmi, ibm) == "00010203-0405-0607-0809-0A0B0C0D0E0F"
    mid.write_text(MACHINE_ID + "\n")
    assert stasadm.derive_host_uuid(mid, dmi, ibm) == "fc337778-3c44-4938-aaaf-501ded981e7b"
    dmi.unlink()
    mid.unlink()
    ibm.write_bytes(b"12345678-1234-5678-1234-567812345678\0")
    assert stasadm.derive_host_uuid(mid, dmi, ibm) == "12345678-1234-5678-1234-567812345678"
    ibm.unlink()
    assert re.fullmatch(UUID_RE, stasadm.derive_host_uuid(mid, dmi, ibm))


def test_hostnqn_command_writes_upstreams_nqn(tmp_path: Path, monkeypatch) -> None:
    mid = tmp_path / "machine-id"
    mid.write_text(MACHINE_ID + "\n")
    none = tmp_path / "none"
    monkeypatch.setattr(stasadm, "derive_host_uuid", lambda: derive_host_uuid(mid, none, none))
    conf = tmp_path / "sys.conf"
    assert stasadm.main(["-c", str(conf), "hostnqn"]) == 0
    assert "nqn=nqn.2014-08.org.nvmexpress:uuid:fc337778-3c44-4938-aaaf-501ded981e7b" in (
        conf.read_text()
    )


def test_daemon_fallback_nqn_is_the_same_as_stasadms(tmp_path: Path) -> None:
    from stas.nvme.host_ops import default_host_identity

    (tmp_path / "machine-id").write_text(MACHINE_ID + "\n")
    identity = default_host_identity(tmp_path)  # no /etc/nvme/hostnqn: derived
    assert identity.hostnqn == stasadm.NQN_PREFIX + upstream_uuid(MACHINE_ID)


def test_set_symname_to_a_file(tmp_path: Path) -> None:
    from stas.config import load_sys_config

    conf, name_file = tmp_path / "sys.conf", tmp_path / "nvme" / "symname"
    assert stasadm.main(["-c", str(conf), "set-symname", "-f", str(name_file), "rack7"]) == 0
    assert name_file.read_text() == "rack7\n"
    assert f"symname=file://{name_file}" in conf.read_text()
    assert load_sys_config(conf).symname == "rack7"


def test_hostnqn_to_file_and_conf_keeps_comments(tmp_path: Path, monkeypatch) -> None:
    conf = tmp_path / "sys.conf"
    conf.write_text("# my notes\n[Host]\n# keep me\nsymname=alpha\n")
    monkeypatch.setattr(stasadm, "derive_host_uuid", lambda: "fc337778-3c44-4938-aaaf-501ded981e7b")
    hostnqn = tmp_path / "nvme" / "hostnqn"
    assert stasadm.main(["-c", str(conf), "hostnqn", "-f", str(hostnqn)]) == 0
    assert hostnqn.read_text() == (
        "nqn.2014-08.org.nvmexpress:uuid:fc337778-3c44-4938-aaaf-501ded981e7b\n"
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


def test_set_symname_to_a_file_checks_the_value_first(tmp_path) -> None:
    """-f FILE gets only what sys.conf itself would take: a bad value writes nothing anywhere,
    a non-ASCII one is written (UTF-8) and read back, never a traceback."""
    from stas.config import load_sys_config
    from stas.ctl.stasadm import main

    conf, bad, good = tmp_path / "sys.conf", tmp_path / "bad", tmp_path / "good"
    assert main(["-c", str(conf), "set-symname", "-f", str(bad), "a\nb"]) != 0
    assert not bad.exists() and not conf.exists()
    assert main(["-c", str(conf), "set-symname", "-f", str(good), "héllo"]) == 0
    assert good.read_text(encoding="utf-8") == "héllo\n"
    assert load_sys_config(str(conf)).symname == "héllo"


def test_set_symname_with_a_space_to_a_file_is_refused(tmp_path: Path, capsys) -> None:
    """The daemons read only a -f file's first word (as upstream): "rack 7" would silently be
    "rack", so it is refused before anything is written, in one line, exit 1."""
    conf, name_file = tmp_path / "sys.conf", tmp_path / "symname"
    rc = stasadm.main(["-c", str(conf), "set-symname", "-f", str(name_file), "rack 7"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("stasadm: symname: value 'rack 7' contains whitespace")
    assert "would read 'rack'" in err and "without -f" in err
    assert not name_file.exists() and not conf.exists()


@pytest.mark.parametrize("cmd", ["hostnqn", "hostid", "set-symname"])
def test_no_command_writes_a_file_value_the_daemons_would_cut(
    tmp_path: Path, monkeypatch, capsys, cmd: str
) -> None:
    """Every command taking -f: a value with whitespace (however it came to be) is refused and
    nothing is written, while sys.conf without -f keeps the symname whole."""
    import uuid

    spaced = "4b4c4c45-0044-4d10 8033-b4c04f4e5a31"
    monkeypatch.setattr(stasadm, "derive_host_uuid", lambda: spaced)
    monkeypatch.setattr(uuid, "uuid4", lambda: spaced)
    conf, target = tmp_path / "sys.conf", tmp_path / "value"
    argv = ["-c", str(conf), cmd, "-f", str(target)] + (["a b"] if cmd == "set-symname" else [])
    assert stasadm.main(argv) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert not target.exists() and not conf.exists()
