"""/dev/nvme-fabrics: the capability template and the raw connect write (device faked)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.kernel import fabrics
from stas.kernel.fabrics import (
    FabricsError,
    add_ctrl,
    parse_capabilities,
    parse_instance,
    read_capabilities,
)

# drivers/nvme/host/fabrics.c opt_tokens as a 6.x kernel prints them (one line)
TEMPLATE = (
    "instance=%d,cntlid=%d,transport=%s,traddr=%s,trsvcid=%s,nqn=%s,queue_size=%d,"
    "nr_io_queues=%d,reconnect_delay=%d,ctrl_loss_tmo=%d,keep_alive_tmo=%d,hostnqn=%s,"
    "host_traddr=%s,host_iface=%s,hostid=%s,duplicate_connect,disable_sqflow,hdr_digest,"
    "data_digest,nr_write_queues=%d,nr_poll_queues=%d,tos=%d,fast_io_fail_tmo=%d,discovery,"
    "dhchap_secret=%s,dhchap_ctrl_secret=%s,tls,keyring=%d,tls_key=%d\n"
)


def test_parse_template() -> None:
    caps = parse_capabilities(TEMPLATE)
    assert len(caps) == TEMPLATE.count(",") + 1 == 29
    assert {"host_iface", "discovery", "dhchap_secret", "dhchap_ctrl_secret", "tls"} <= caps
    assert {"instance", "cntlid", "hdr_digest", "fast_io_fail_tmo"} <= caps


def test_parse_odd_input() -> None:
    assert parse_capabilities("") == frozenset()
    assert parse_capabilities("\n") == frozenset()
    assert parse_capabilities("a=%d,,B=%s, c ,9x,d e\nsecond=line") == {"a", "c"}


@given(st.text(max_size=200))
def test_parse_arbitrary_text_gives_only_names(text: str) -> None:
    caps = parse_capabilities(text)
    assert all(n and n.isascii() and "," not in n and "=" not in n for n in caps)


def test_read_capabilities_from_a_file(tmp_path: Path) -> None:
    dev = tmp_path / "nvme-fabrics"
    dev.write_bytes(TEMPLATE.encode())
    assert "host_iface" in read_capabilities(str(dev))
    dev.write_bytes(b"transport=%s,\xff\xfe=1,discovery\n")
    assert read_capabilities(str(dev)) == {"transport", "discovery"}


def test_missing_or_unreadable_device_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "stas.kernel")
    assert read_capabilities(str(tmp_path / "nvme-fabrics")) == frozenset()
    assert "cannot read kernel fabrics options" in caplog.text
    assert "No such file or directory" in caplog.text
    caplog.clear()
    old = tmp_path / "old"
    old.write_bytes(b"")  # kernels before 5.17 answer nothing
    assert read_capabilities(str(old)) == frozenset()
    assert "older than 5.17" in caplog.text


def test_parse_instance() -> None:
    assert parse_instance("instance=12,cntlid=1\n") == (12, 1)
    for bad in ("", "instance=x,cntlid=1", "cntlid=1", "instance=" + "9" * 20 + ",cntlid=1"):
        with pytest.raises(FabricsError) as info:
            parse_instance(bad)
        assert info.value.errno == errno.EIO


class FakeDevice:
    """Stands in for the os calls add_ctrl makes on /dev/nvme-fabrics."""

    def __init__(self, answer: bytes = b"instance=3,cntlid=1\n", error: int = 0) -> None:
        self.answer, self.error = answer, error
        self.written: list[bytes] = []
        self.opened: list[tuple[str, int]] = []
        self.closed = 0

    def os(self) -> SimpleNamespace:
        def open_(path: str, flags: int) -> int:
            self.opened.append((path, flags))
            return 42

        def write(fd: int, data: bytes) -> int:
            assert fd == 42
            if self.error:
                raise OSError(self.error, os.strerror(self.error))
            self.written.append(data)
            return len(data)

        def close(fd: int) -> None:
            self.closed += 1

        return SimpleNamespace(
            open=open_,
            write=write,
            read=lambda fd, n: self.answer,
            close=close,
            O_RDWR=os.O_RDWR,
            O_RDONLY=os.O_RDONLY,
            O_CLOEXEC=os.O_CLOEXEC,
        )


def test_add_ctrl_writes_once_and_reads_the_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = FakeDevice()
    monkeypatch.setattr(fabrics, "os", dev.os())
    assert add_ctrl("transport=loop,nqn=klingons,hostnqn=nqn.h", "/dev/x") == (3, 1)
    assert dev.written == [b"transport=loop,nqn=klingons,hostnqn=nqn.h"]
    assert dev.opened == [("/dev/x", os.O_RDWR | os.O_CLOEXEC)] and dev.closed == 1


def test_add_ctrl_passes_the_kernel_errno(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = FakeDevice(error=errno.EALREADY)
    monkeypatch.setattr(fabrics, "os", dev.os())
    with pytest.raises(OSError) as info:
        add_ctrl("transport=loop,nqn=x,hostnqn=nqn.h")
    assert info.value.errno == errno.EALREADY and dev.closed == 1


def test_add_ctrl_refuses_a_garbled_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fabrics, "os", FakeDevice(answer=b"\xff").os())
    with pytest.raises(FabricsError, match="unexpected answer"):
        add_ctrl("transport=loop,nqn=x,hostnqn=nqn.h")
