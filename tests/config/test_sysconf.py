"""sys.conf [Host] with file:// indirection, and in-place edits for stasadm."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.config import (
    ConfigError,
    SysConfig,
    load_sys_config,
    rewrite_sys_option,
    set_sys_option,
    sysconf,
)

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:4b4c4c45-0044-4d10-8033-b4c04f4e5a31"
HOSTID = "4b4c4c45-0044-4d10-8033-b4c04f4e5a31"
HOSTKEY = "DHHC-1:00:ia6zGodOr4SEG0Zzaw398rpY0wqipUWj4jWjUh4HWUz6aQ2n:"


@pytest.fixture
def nvme_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private /etc/nvme with the three host files, made the default."""
    d = tmp_path / "nvme"
    d.mkdir()
    (d / "hostnqn").write_text(HOSTNQN + "\n")
    (d / "hostid").write_text(HOSTID.upper() + "  trailing words\nsecond line\n")
    (d / "hostkey").write_text(HOSTKEY + "\n")
    for key, name in (("nqn", "hostnqn"), ("id", "hostid"), ("key", "hostkey")):
        monkeypatch.setitem(sysconf.DEFAULT_VALUES, key, f"file://{d / name}")
    return d


def test_missing_sys_conf_uses_the_host_files(tmp_path: Path, nvme_dir: Path) -> None:
    config = load_sys_config(tmp_path / "sys.conf")
    assert config == SysConfig(HOSTNQN, HOSTID, HOSTKEY, None, ())


def test_values_in_sys_conf_and_file_indirection(tmp_path: Path, nvme_dir: Path) -> None:
    (tmp_path / "sym").write_text("  lab host 7\n")
    path = tmp_path / "sys.conf"
    path.write_text(
        "# identity\n[Host]\nnqn = nqn.2014-08.com.example:h1   # pinned\n"
        f"symname=file://{tmp_path / 'sym'}\n"
    )
    config = load_sys_config(path)
    assert (config.hostnqn, config.hostid, config.symname) == (
        "nqn.2014-08.com.example:h1",
        HOSTID,
        "lab",
    )
    assert config.problems == ()


def test_missing_host_files_give_none_and_clear_messages(
    tmp_path: Path, nvme_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("hostnqn", "hostid", "hostkey"):
        (nvme_dir / name).unlink()
    with caplog.at_level(logging.WARNING, logger="stas.config"):
        config = load_sys_config(tmp_path / "sys.conf")
    assert config == SysConfig(
        None,
        None,
        None,
        None,
        (
            f"host NQN: {nvme_dir}/hostnqn does not exist "
            f"(stasadm hostnqn -f {nvme_dir}/hostnqn creates it)",
            f"host ID: {nvme_dir}/hostid does not exist (stasadm hostid -f {nvme_dir}/hostid)",
        ),
    )
    assert [r.getMessage() for r in caplog.records] == list(config.problems)


def test_explicit_host_key_file_must_exist(tmp_path: Path, nvme_dir: Path) -> None:
    path = tmp_path / "sys.conf"
    path.write_text(f"[Host]\nkey=file://{tmp_path}/nokey\n")
    config = load_sys_config(path)
    assert config.hostkey is None
    assert config.problems == (f"host key: {tmp_path}/nokey does not exist",)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("nqn=klingons", "host NQN 'klingons': not an NQN (must start with 'nqn.')"),
        ("nqn=nqn." + "a" * 220, "host NQN 'nqn." + "a" * 96 + "': NQN longer than 223 bytes"),
        ("id=12345", "host ID '12345': not a UUID"),
        ("key=DHHC-1:00:c2VjcmV0:", "host key: DH-HMAC-CHAP key must be 32, 48 or 64 bytes"),
        ("symname=" + "x" * 257, "host symname '" + "x" * 100 + "': longer than 256 bytes"),
    ],
)
def test_invalid_values_give_none_and_a_problem(
    tmp_path: Path, nvme_dir: Path, line: str, problem: str
) -> None:
    path = tmp_path / "sys.conf"
    path.write_text(f"[Host]\n{line}\n")
    config = load_sys_config(path)
    key = line.partition("=")[0]
    attr = {"nqn": "hostnqn", "id": "hostid", "key": "hostkey", "symname": "symname"}[key]
    assert getattr(config, attr) is None
    assert config.problems == (problem,)


def test_bad_value_read_through_a_file_names_the_file(tmp_path: Path, nvme_dir: Path) -> None:
    (nvme_dir / "hostnqn").write_text("hostnqn-without-prefix\n")
    (nvme_dir / "hostid").write_text("\n\n")
    config = load_sys_config(tmp_path / "sys.conf")
    assert config.problems == (
        f"host NQN from {nvme_dir}/hostnqn 'hostnqn-without-prefix': "
        "not an NQN (must start with 'nqn.')",
        f"host ID: {nvme_dir}/hostid is empty",
    )


def test_unknown_keys_sections_and_empty_values(tmp_path: Path, nvme_dir: Path) -> None:
    path = tmp_path / "sys.conf"
    path.write_text("[Host]\nhostnqn=x\nnqn=\n[Other]\na=1\n")
    config = load_sys_config(path)
    assert config.hostnqn == HOSTNQN
    assert config.problems == (
        f"{path}: [Other]: unknown section, ignored",
        f"{path}: [Host] hostnqn: unknown option, ignored",
        f"{path}: [Host] nqn: no value, using the default",
    )


def test_unreadable_sys_conf_raises(tmp_path: Path) -> None:
    path = tmp_path / "sys.conf"
    path.write_bytes(b"\xff\xff")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_sys_config(path)


def test_host_key_is_never_shown() -> None:
    config = SysConfig(HOSTNQN, HOSTID, HOSTKEY, "sym")
    assert HOSTKEY not in repr(config) and "hostkey='***'" in repr(config)
    assert HOSTKEY not in str(config)
    assert config.redacted() == {
        "hostnqn": HOSTNQN,
        "hostid": HOSTID,
        "hostkey": "***",
        "symname": "sym",
    }
    assert SysConfig().redacted() == {"hostnqn": "", "hostid": "", "hostkey": "", "symname": ""}


ORIGINAL = """\
# sys.conf, edited by hand
[Host]
nqn=file:///etc/nvme/hostnqn   # generated
; the host ID
id=file:///etc/nvme/hostid

[Extra]
symname=not-this-one
"""


def test_rewrite_replaces_in_place_keeping_comments() -> None:
    assert rewrite_sys_option(ORIGINAL, "nqn", "file:///tmp/hostnqn") == ORIGINAL.replace(
        "nqn=file:///etc/nvme/hostnqn   # generated", "nqn=file:///tmp/hostnqn  # generated"
    )


def test_rewrite_inserts_after_the_last_host_option() -> None:
    assert (
        rewrite_sys_option(ORIGINAL, "symname", "lab-7")
        == """\
# sys.conf, edited by hand
[Host]
nqn=file:///etc/nvme/hostnqn   # generated
; the host ID
id=file:///etc/nvme/hostid
symname=lab-7

[Extra]
symname=not-this-one
"""
    )


def test_rewrite_removes_every_occurrence_and_continuations() -> None:
    text = "[Host]\nsymname=a\n   more\nid=x\nSymName = b\n"
    assert rewrite_sys_option(text, "symname", None) == "[Host]\nid=x\n"
    assert rewrite_sys_option(text, "symname", "c") == "[Host]\nsymname=c\nid=x\n"


def test_rewrite_without_host_section_appends_one() -> None:
    assert rewrite_sys_option("# nothing\n[Other]\na=1", "id", "u") == (
        "# nothing\n[Other]\na=1\n\n[Host]\nid=u\n"
    )
    assert rewrite_sys_option("# only\n", "id", None) == "# only\n"


def test_rewrite_of_a_new_file_has_a_header() -> None:
    assert (
        rewrite_sys_option(None, "symname", "x") == sysconf.NEW_FILE_HEADER + "[Host]\nsymname=x\n"
    )


def test_set_sys_option_creates_the_file_and_directory(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "stas" / "sys.conf"
    set_sys_option(path, "nqn", "file:///etc/nvme/hostnqn")
    assert path.read_text() == sysconf.NEW_FILE_HEADER + "[Host]\nnqn=file:///etc/nvme/hostnqn\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["sys.conf"]  # no temporary file left behind


def test_set_sys_option_edits_in_place_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "sys.conf"
    path.write_text(ORIGINAL)
    path.chmod(0o600)
    set_sys_option(path, "symname", "lab-7")
    set_sys_option(path, "symname", None)
    assert path.read_text() == ORIGINAL
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["sys.conf"]


def test_set_sys_option_follows_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real.conf"
    real.write_text("[Host]\n")
    link = tmp_path / "sys.conf"
    link.symlink_to(real)
    set_sys_option(link, "symname", "s")
    assert link.is_symlink() and real.read_text() == "[Host]\nsymname=s\n"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("hostnqn", "x", "sys.conf has no key 'hostnqn' (expected one of nqn, id, key, symname)"),
        ("symname", "a\nb", "symname: value must be non-empty printable text on one line"),
        ("symname", "", "symname: value must be non-empty printable text on one line"),
        ("symname", " a", "symname: value must be non-empty printable text on one line"),
        (
            "symname",
            "rack #3",
            "symname: value 'rack #3' would be read back cut at its ' #' or ' ;'",
        ),
    ],
)
def test_set_sys_option_rejects_bad_input(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        set_sys_option(tmp_path / "sys.conf", key, value)
    assert str(exc.value).startswith(message)
    assert not (tmp_path / "sys.conf").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("nqn", "hostnqn-x", "nqn: value 'hostnqn-x': not an NQN (must start with 'nqn.')"),
        ("id", "12345", "id: value '12345': not a UUID"),
        (
            "key",
            "DHHC-1:00:c2VjcmV0:",
            "key: value '***': DH-HMAC-CHAP key must be 32, 48 or 64 bytes",
        ),
        ("symname", "x" * 257, f"symname: value {'x' * 64!r}...: longer than 256 bytes"),
    ],
)
def test_set_sys_option_checks_each_key_by_its_own_rule(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    """What the daemons would refuse on reading is refused on writing, naming key and value
    (the host key's value never shown)."""
    with pytest.raises(ConfigError) as exc:
        set_sys_option(tmp_path / "sys.conf", key, value)
    assert str(exc.value) == message
    assert not (tmp_path / "sys.conf").exists()


@pytest.mark.parametrize("key", sysconf.SYS_KEYS)
def test_a_file_reference_is_accepted_for_every_key(tmp_path: Path, key: str) -> None:
    sysconf.check_sys_value(key, f"file://{tmp_path}/value")


_ATTRS = {"nqn": "hostnqn", "id": "hostid", "key": "hostkey", "symname": "symname"}


@given(
    st.sampled_from(sysconf.SYS_KEYS),
    st.one_of(
        st.text(min_size=1, max_size=300),
        st.sampled_from([HOSTNQN, HOSTID, HOSTID.upper(), HOSTKEY, "nqn.x", "nqn.a b"]),
    ),
)
def test_what_can_be_written_is_what_the_daemons_read(key: str, value: str) -> None:
    """Whatever check_sys_value lets through loads back as that value with no problem for
    its key (the ID lower-cased): sys.conf never holds a value the daemons ignore."""
    try:
        sysconf.check_sys_value(key, value)
    except ConfigError:
        return
    if value.lower().startswith("file://"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sys.conf"
        path.write_text(f"[Host]\n{key}={value}\n", encoding="utf-8")
        config = load_sys_config(path)
    expected = value.lower() if key == "id" else value
    assert getattr(config, _ATTRS[key]) == expected
    label = sysconf._LABELS[key]
    assert not [p for p in config.problems if p.startswith((label + " ", label + ":"))]


@given(
    st.sampled_from(sysconf.SYS_KEYS),
    st.one_of(
        st.text(st.sampled_from("ab é#;\t\n\x1c\u3000"), min_size=1, max_size=8),
        st.text(min_size=1, max_size=40),
        st.sampled_from([HOSTNQN, HOSTID, "rack 7", "rack  7", "a b c"]),
    ),
)
def test_a_file_value_is_refused_exactly_when_its_file_would_cut_it(key: str, value: str) -> None:
    """stasadm -f FILE: check_file_value takes a value sys.conf takes iff the daemons, reading
    the written file (its first word only), get that value back whole."""
    try:
        sysconf.check_sys_value(key, value)
    except ConfigError:
        with pytest.raises(ConfigError):
            sysconf.check_file_value(key, value)
        return
    if value.lower().startswith("file://"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "value").write_text(value + "\n", encoding="utf-8")
        read_back = sysconf._read_host_file(f"{tmp}/value")
    try:
        sysconf.check_file_value(key, value)
    except ConfigError as e:
        assert read_back != value
        assert repr(value) in str(e) and "whitespace" in str(e) and repr(read_back) in str(e)
    else:
        assert read_back == value


def test_a_value_with_a_space_is_refused_for_a_file_not_for_sys_conf() -> None:
    sysconf.check_sys_value("symname", "rack 7")  # sys.conf keeps the whole line
    with pytest.raises(ConfigError, match=r"symname: value 'rack 7' contains whitespace.*'rack'"):
        sysconf.check_file_value("symname", "rack 7")
    sysconf.check_file_value("symname", "rack7")


def test_set_sys_option_unreadable_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as exc:
        set_sys_option(blocker / "sys.conf", "id", HOSTID)
    assert str(exc.value) == f"{blocker}/sys.conf: cannot read: Not a directory"


def test_set_sys_option_write_failure_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sys.conf"
    path.write_text(ORIGINAL)

    def full_disk(src: str, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sysconf.os, "replace", full_disk)
    with pytest.raises(ConfigError) as exc:
        set_sys_option(path, "symname", "x")
    assert str(exc.value) == f"{path}: cannot write: No space left on device"
    assert path.read_text() == ORIGINAL
    assert os.listdir(tmp_path) == ["sys.conf"]


def test_set_then_load_round_trip(tmp_path: Path, nvme_dir: Path) -> None:
    path = tmp_path / "sys.conf"
    (tmp_path / "hostnqn").write_text("nqn.2014-08.org.example:x\n")
    set_sys_option(path, "nqn", f"file://{tmp_path / 'hostnqn'}")
    set_sys_option(path, "symname", "rack-3")
    config = load_sys_config(path)
    assert (config.hostnqn, config.symname, config.problems) == (
        "nqn.2014-08.org.example:x",
        "rack-3",
        (),
    )


_SYMNAMES = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=40
).filter(lambda s: s.isprintable())


@given(
    st.lists(
        st.sampled_from(["# c", "[Host]", "[Other]", "nqn=a", "id=b", "  cont", "", "x"]),
        max_size=10,
    ),
    _SYMNAMES,
)
def test_rewrite_then_read_back_gives_the_value(lines: list[str], symname: str) -> None:
    text = "\n".join(lines)
    try:
        sysconf.parse_ini(text, source="t")
    except ConfigError:
        return
    new = rewrite_sys_option(text, "symname", symname)
    doc, _ = sysconf.parse_ini(new, source="t")
    values = [e.value for e in doc.entries if e.section == "Host" and e.key == "symname"]
    assert values == [symname]
    removed = rewrite_sys_option(new, "symname", None)
    doc, _ = sysconf.parse_ini(removed, source="t")
    assert not [e for e in doc.entries if e.section == "Host" and e.key == "symname"]


def test_unreadable_or_binary_host_files(tmp_path: Path, nvme_dir: Path) -> None:
    (nvme_dir / "hostnqn").write_bytes(b"\xff\xfe nqn")
    (nvme_dir / "hostid").unlink()
    (nvme_dir / "hostid").mkdir()
    config = load_sys_config(tmp_path / "sys.conf")
    assert (config.hostnqn, config.hostid) == (None, None)
    assert config.problems == (
        f"host NQN: {nvme_dir}/hostnqn is not UTF-8 text",
        f"host ID: {nvme_dir}/hostid: cannot read: a directory, not a regular file",
    )


def test_set_sys_option_without_change_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "sys.conf"
    path.write_text("[Host]\nsymname=a\n")
    before = path.stat().st_ino
    set_sys_option(path, "symname", "a")
    assert path.stat().st_ino == before
