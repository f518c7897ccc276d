"""The uevent codec: real-looking kernel and libudev datagrams, subsystem filtering, and
property tests (round trips; arbitrary bytes give a Uevent or ProtocolError, nothing else)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.kernel.api import Uevent
from stas.kernel.uevent_codec import (
    MAX_DATAGRAM,
    MAX_FIELDS,
    UDEV_PREFIX,
    decode_for_subsystem,
    decode_uevent,
    encode_kernel_uevent,
    encode_udev_uevent,
)
from stas.nvme.errors import ProtocolError

DEVPATH = "/devices/virtual/nvme-fabrics/ctl/nvme3"

# What Linux 6.x sends for a discovery-log-change AEN, field for field (nvme_aen_uevent()).
KERNEL_AEN = (
    b"change@/devices/virtual/nvme-fabrics/ctl/nvme3\0"
    b"ACTION=change\0DEVPATH=/devices/virtual/nvme-fabrics/ctl/nvme3\0SUBSYSTEM=nvme\0"
    b"MAJOR=239\0MINOR=3\0DEVNAME=nvme3\0NVME_AEN=0x70f002\0NVME_TRTYPE=tcp\0"
    b"NVME_TRADDR=192.168.1.20\0NVME_TRSVCID=8009\0NVME_HOST_TRADDR=none\0"
    b"NVME_HOST_IFACE=none\0SEQNUM=4242\0"
)


def test_kernel_aen_event() -> None:
    ev = decode_uevent(KERNEL_AEN)
    assert (ev.action, ev.devpath, ev.subsystem) == ("change", DEVPATH, "nvme")
    assert ev.device == "nvme3"
    assert ev.aen == 0x70F002
    assert ev.nvme_event is None
    assert ev.env["NVME_TRADDR"] == "192.168.1.20"
    assert ev.env["NVME_HOST_IFACE"] == "none"
    assert ev.env["SEQNUM"] == "4242"


def test_kernel_rediscover_event() -> None:
    raw = encode_kernel_uevent(
        "change", DEVPATH, {"SUBSYSTEM": "nvme", "NVME_EVENT": "rediscover", "NVME_TRTYPE": "tcp"}
    )
    assert raw.startswith(b"change@" + DEVPATH.encode() + b"\0ACTION=change\0")
    ev = decode_uevent(raw)
    assert (ev.nvme_event, ev.aen, ev.device) == ("rediscover", None, "nvme3")


def test_libudev_format_is_parsed() -> None:
    raw = encode_udev_uevent("remove", DEVPATH, {"SUBSYSTEM": "nvme", "SEQNUM": "7"})
    assert raw[:8] == UDEV_PREFIX and raw[8:12] == b"\xfe\xed\xca\xfe"
    ev = decode_uevent(raw)
    assert (ev.action, ev.device, ev.subsystem, ev.env["SEQNUM"]) == (
        "remove",
        "nvme3",
        "nvme",
        "7",
    )
    assert decode_for_subsystem(raw, "nvme") == ev
    assert decode_for_subsystem(raw, "block") is None


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (UDEV_PREFIX + b"\xfe\xed\xca\xfe", "shorter than its header"),
        (b"libudev\0\x00\x00\x00\x01" + bytes(28) + b"ACTION=add\0", "magic 0x00000001"),
        (
            encode_udev_uevent("add", DEVPATH, {"SUBSYSTEM": "nvme"})[:-5],
            "do not fit",
        ),
        (b"garbage\0A=B\0", "not ACTION@DEVPATH"),
        (b"", "empty datagram"),
        (b"add@/x\0ACTION=remove\0SUBSYSTEM=nvme\0", "ACTION='remove' disagrees"),
        (b"add@/x\0DEVPATH=/y\0SUBSYSTEM=nvme\0", "DEVPATH='/y' disagrees"),
        (b"add@/x\0ACTION=add\0", "no SUBSYSTEM"),
        (b"add@/x\0SUBSYSTEM=nvme\0JUNK\0", "has no '='"),
        (b"add@/x\0SUBSYSTEM=nvme\0=v\0", "bad key length 0"),
        (b"add@/x\0SUBSYSTEM=nvme\0SUBSYSTEM=block\0", "SUBSYSTEM appears twice"),
        (b"add@x/nvme0\0SUBSYSTEM=nvme\0", "not an absolute device path"),
        (b"ADD!@/x\0SUBSYSTEM=nvme\0", "not a lower-case word"),
        (b"add@/x\0SUBSYSTEM=nvme\0" + b"A=1\0" * MAX_FIELDS, "fields"),
        (b"add@/x\0SUBSYSTEM=nvme\0A=" + b"x" * MAX_DATAGRAM, "exceeds"),
    ],
)
def test_malformed_datagrams_name_the_problem(raw: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_uevent(raw)


def test_lenient_where_it_cannot_mislead() -> None:
    raw = b"add@/x/nvme1\0\0SUBSYSTEM=nvme\0ID_X=first\0ID_X=second\0MODEL=\xff\xfeab"
    ev = decode_uevent(raw)  # doubled NUL, repeated ordinary key, bad UTF-8, no final NUL
    assert ev.env["ID_X"] == "first"
    assert ev.env["MODEL"] == "\ufffd\ufffdab"
    assert ev.device == "nvme1"


def test_subsystem_filter() -> None:
    nvme = encode_kernel_uevent("add", DEVPATH, {"SUBSYSTEM": "nvme"})
    block = encode_kernel_uevent("add", "/devices/virtual/block/nvme3n1", {"SUBSYSTEM": "block"})
    subsys = encode_kernel_uevent(
        "add", "/devices/virtual/nvme-subsystem/nvme-subsys3", {"SUBSYSTEM": "nvme-subsystem"}
    )
    decoy = encode_kernel_uevent("add", "/devices/x", {"SUBSYSTEM": "net", "X": "SUBSYSTEM=nvme"})
    ev = decode_for_subsystem(nvme, "nvme")
    assert ev is not None and ev.device == "nvme3"
    assert [decode_for_subsystem(d, "nvme") for d in (block, subsys, decoy)] == [None] * 3
    # Filtered-out garbage is not even parsed; a malformed nvme candidate is still an error.
    assert decode_for_subsystem(b"\xff\x00junk", "nvme") is None
    with pytest.raises(ProtocolError):
        decode_for_subsystem(b"nonsense\0SUBSYSTEM=nvme\0", "nvme")


def test_encoders_refuse_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        encode_kernel_uevent("add", "/x", {"SUBSYSTEM": "nvme", "A": "b\0c"})


actions = st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True)
devpaths = st.lists(st.from_regex(r"[A-Za-z0-9:._-]{1,12}", fullmatch=True), min_size=1).map(
    lambda segs: "/" + "/".join(segs)
)
keys = st.from_regex(r"[A-Z][A-Z0-9_]{0,15}", fullmatch=True).filter(
    lambda k: k not in {"ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM"}
)
values = st.text(
    st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=40
)
envs = st.dictionaries(keys, values, max_size=20)


@given(actions, devpaths, st.sampled_from(["nvme", "block", "net"]), envs, st.booleans())
def test_round_trip(action: str, devpath: str, subsystem: str, env: dict, udev: bool) -> None:
    encode = encode_udev_uevent if udev else encode_kernel_uevent
    full = {"SUBSYSTEM": subsystem, **env}
    ev = decode_uevent(encode(action, devpath, full))
    assert ev == Uevent(action, devpath, subsystem, {"ACTION": action, "DEVPATH": devpath, **full})
    assert (decode_for_subsystem(encode(action, devpath, full), "nvme") is not None) == (
        subsystem == "nvme"
    )


@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_uevent_or_protocol_error(data: bytes) -> None:
    for raw in (data, UDEV_PREFIX + data, b"add@/" + data):
        with contextlib.suppress(ProtocolError):
            assert isinstance(decode_uevent(raw), Uevent)
        with contextlib.suppress(ProtocolError):
            result = decode_for_subsystem(raw, "nvme")
            assert result is None or result.subsystem == "nvme"


@given(st.lists(st.binary(max_size=30), max_size=12), st.integers(0, 2**32 - 1))
def test_arbitrary_udev_headers(fields: list[bytes], word: int) -> None:
    body = b"\0".join(fields)
    header = UDEV_PREFIX + b"\xfe\xed\xca\xfe" + (40).to_bytes(4, "little")
    raw = header + (40).to_bytes(4, "little") + word.to_bytes(4, "little") + bytes(16) + body
    with contextlib.suppress(ProtocolError):
        assert isinstance(decode_uevent(raw), Uevent)
