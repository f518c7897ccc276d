"""Config paths that are not regular text files: refused with a clear message, never waited on.

A FIFO at a config path used to hang the daemon silently (issue 13 item 7). Every test that
opens a FIFO runs under ``no_hang``: a regression fails after a few seconds instead of hanging.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stas.config import ConfigError, load_service_config, load_sys_config
from stas.config.files import read_regular_file
from stas.config.parser import MAX_CONFIG_BYTES, read_config_text
from stas.ctl import stasadm

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555"
HOSTID = "11111111-2222-4333-8444-555555555555"
FIFO_REFUSED = "cannot read: a FIFO (named pipe), not a regular file"


class Hung(Exception):
    """The code under test blocked (e.g. in open() on a FIFO)."""


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Interrupt the test with ``Hung`` if it blocks for more than 5 s."""

    def alarm(_sig: int, _frame: object) -> None:
        raise Hung("blocked for 5 s (opening a FIFO?)")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("daemon", ["stafd", "stacd"])
def test_fifo_service_conf_is_refused(tmp_path: Path, no_hang: None, daemon: str) -> None:
    path = fifo(tmp_path / f"{daemon}.conf")
    with pytest.raises(ConfigError) as exc:
        load_service_config(path, daemon)  # type: ignore[arg-type]
    assert str(exc.value) == f"{path}: cannot read: a FIFO (named pipe), not a regular file"


def test_fifo_sys_conf_is_refused(tmp_path: Path, no_hang: None) -> None:
    path = fifo(tmp_path / "sys.conf")
    with pytest.raises(ConfigError) as exc:
        load_sys_config(path)
    assert str(exc.value) == f"{path}: {FIFO_REFUSED}"


@pytest.mark.parametrize(
    ("key", "label"),
    [("nqn", "host NQN"), ("id", "host ID"), ("key", "host key"), ("symname", "host symname")],
)
def test_fifo_host_files_are_refused(tmp_path: Path, no_hang: None, key: str, label: str) -> None:
    pipe = fifo(tmp_path / "pipe")
    values = {"nqn": HOSTNQN, "id": HOSTID, key: f"file://{pipe}"}
    conf = tmp_path / "sys.conf"
    conf.write_text("[Host]\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    config = load_sys_config(conf)
    assert f"{label}: {pipe}: {FIFO_REFUSED}" in config.problems


def test_stasadm_with_a_fifo_sys_conf_is_one_line(tmp_path: Path, no_hang: None, capsys) -> None:
    conf = fifo(tmp_path / "sys.conf")
    assert stasadm.main(["-c", str(conf), "set-symname", "x"]) == 1
    assert capsys.readouterr().err == (
        f"stasadm: {conf}: cannot read: a FIFO (named pipe), not a regular file\n"
    )


@pytest.mark.parametrize("prog", ["stafd", "stacd"])
def test_daemon_with_a_fifo_conf_exits_with_one_message(tmp_path: Path, prog: str) -> None:
    conf = fifo(tmp_path / f"{prog}.conf")
    code = f"import sys; from stas.main import {prog}_main as m; sys.exit(m(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "-f", str(conf), "--sys-conf", str(tmp_path / "none")]
    argv += ["--state-dir", str(tmp_path)] if prog == "stafd" else ["--kernel", "fake"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"{conf}: cannot read: a FIFO (named pipe), not a regular file" in out
    assert "Traceback" not in out


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    conf = tmp_path / "stafd.conf"
    conf.write_bytes(b"\xef\xbb\xbf[Global]\r\nkato=7\r\n[Controllers]\r\n"
                     b"controller=transport=tcp;traddr=10.0.0.1\r\n")  # fmt: skip
    config, warnings = load_service_config(conf, "stafd")
    assert warnings == []
    assert config.kato == 7
    assert [c.traddr for c in config.controllers] == ["10.0.0.1"]


def test_bom_in_sys_conf_and_host_files(tmp_path: Path) -> None:
    (tmp_path / "hostnqn").write_bytes(b"\xef\xbb\xbf" + HOSTNQN.encode() + b"\r\n")
    conf = tmp_path / "sys.conf"
    conf.write_bytes(b"\xef\xbb\xbf[Host]\r\nnqn=file://" + str(tmp_path / "hostnqn").encode()
                     + b"\r\nid=" + HOSTID.encode() + b"\r\n")  # fmt: skip
    config = load_sys_config(conf)
    assert (config.hostnqn, config.hostid, config.problems) == (HOSTNQN, HOSTID, ())


def test_utf16_file_names_its_byte_order_mark(tmp_path: Path) -> None:
    conf = tmp_path / "stafd.conf"
    conf.write_bytes("[Global]\n".encode("utf-16"))
    with pytest.raises(ConfigError, match=r"UTF-16 byte order mark: save the file as UTF-8"):
        read_config_text(conf)


def test_ten_megabyte_line_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "stafd.conf"
    conf.write_bytes(b"[Global]\ntron=" + b"x" * (10 << 20) + b"\n")
    reads: list[int] = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    with pytest.raises(ConfigError) as exc:
        load_service_config(conf, "stafd")
    size = conf.stat().st_size
    assert str(exc.value) == f"{conf}: {size} bytes, larger than {MAX_CONFIG_BYTES} bytes"
    assert reads == []  # refused on fstat's size, nothing read


def test_binary_file_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "stafd.conf"
    conf.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(128)))
    with pytest.raises(ConfigError, match=r"stafd.conf: contains NUL bytes, not a text file$"):
        load_service_config(conf, "stafd")
    conf.write_bytes(bytes(range(128, 256)))
    with pytest.raises(ConfigError, match=r"stafd.conf: not UTF-8 text \(byte 0x80 at offset 0\)$"):
        load_service_config(conf, "stafd")


def test_directory_and_symlink_loop_are_refused(tmp_path: Path) -> None:
    conf = tmp_path / "stacd.conf"
    conf.mkdir()
    with pytest.raises(ConfigError) as exc:
        load_service_config(conf, "stacd")
    assert str(exc.value) == f"{conf}: cannot read: a directory, not a regular file"
    loop = tmp_path / "loop.conf"
    loop.symlink_to(tmp_path / "loop2.conf")
    (tmp_path / "loop2.conf").symlink_to(loop)
    with pytest.raises(ConfigError) as exc:
        load_service_config(loop, "stacd")
    assert str(exc.value) == f"{loop}: cannot read: Too many levels of symbolic links"


def test_symlinked_config_file_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.conf"
    real.write_text("[Global]\ntron=true\n")
    link = tmp_path / "stafd.conf"
    link.symlink_to(real)
    config, _ = load_service_config(link, "stafd")
    assert config.tron is True


def test_device_is_refused(no_hang: None) -> None:
    with pytest.raises(ConfigError) as exc:
        read_regular_file("/dev/zero", 100)
    assert str(exc.value) == "/dev/zero: cannot read: a character device, not a regular file"


def test_ctl_default_host_nqn_skips_fifos(
    tmp_path: Path, no_hang: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stas.ctl import common

    pipe = fifo(tmp_path / "hostnqn")
    conf = tmp_path / "sys.conf"
    conf.write_text(f"[Host]\nnqn=file://{pipe}\n")
    monkeypatch.setenv("STAS_SYS_CONF", str(conf))
    assert common.host_nqn_default() == ""  # stafctl dlp: no default, no hang
    conf.unlink()
    fifo(conf)
    monkeypatch.setattr(common, "DEFAULT_HOSTNQN_FILE", str(tmp_path / "none"))
    assert common.host_nqn_default() == ""
