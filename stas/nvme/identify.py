"""Identify Controller data and the Supported Log Pages log (sans-IO).

A discovery host reads these to decide what it may ask for: DCTYPE (send DIM or not), OAES
bit 31 (discovery log change AENs), MDTS (log page chunk size), KAS and the LID 70h LSP
support bits. Offsets: NVMe Base spec, as summarised in peers-and-specs.md §2.3, §2.5, §2.8.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

import attrs

from stas.nvme.commands import LSP_ALLSUBE, LSP_EXTDLPE, LSP_PLEO
from stas.nvme.errors import ProtocolError

IDENTIFY_SIZE = 4096
SUPPORTED_LOG_PAGES_SIZE = 1024


class CntrlType(IntEnum):
    NOT_REPORTED = 0
    IO = 1
    DISCOVERY = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return cntrltype_label(self)


class DcType(IntEnum):
    NOT_REPORTED = 0
    DDC = 1
    CDC = 2

    @property
    def label(self) -> str:
        return dctype_label(self)


def cntrltype_label(value: int) -> str:
    """Same words as Linux sysfs ``cntrltype`` (which also says "reserved" for 0)."""
    return {1: "io", 2: "discovery", 3: "admin"}.get(value, "reserved")


def dctype_label(value: int) -> str:
    """Same words as Linux sysfs ``dctype``."""
    return {0: "none", 1: "ddc", 2: "cdc"}.get(value, "reserved")


# (field name, byte offset, size, kind): kind "u" = little-endian unsigned,
# "s" = ASCII space padded, "n" = ASCII NUL padded (NQN).
_LAYOUT: tuple[tuple[str, int, int, str], ...] = (
    ("vid", 0, 2, "u"),
    ("ssvid", 2, 2, "u"),
    ("sn", 4, 20, "s"),
    ("mn", 24, 40, "s"),
    ("fr", 64, 8, "s"),
    ("rab", 72, 1, "u"),
    ("ieee", 73, 3, "u"),
    ("cmic", 76, 1, "u"),
    ("mdts", 77, 1, "u"),
    ("cntlid", 78, 2, "u"),
    ("ver", 80, 4, "u"),
    ("oaes", 92, 4, "u"),
    ("ctratt", 96, 4, "u"),
    ("cntrltype", 111, 1, "u"),
    ("aerl", 259, 1, "u"),
    ("lpa", 261, 1, "u"),
    ("kas", 320, 2, "u"),
    ("maxcmd", 514, 2, "u"),
    ("sgls", 536, 4, "u"),
    ("subnqn", 768, 256, "n"),
    ("ioccsz", 1792, 4, "u"),
    ("iorcsz", 1796, 4, "u"),
    ("icdoff", 1800, 2, "u"),
    ("fcatt", 1802, 1, "u"),
    ("msdbd", 1803, 1, "u"),
    ("ofcs", 1804, 2, "u"),
    ("dctype", 1806, 1, "u"),
)


def _uint(nbytes: int) -> Any:
    def check(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, int) or not 0 <= value < (1 << (8 * nbytes)):
            raise ValueError(f"{attr.name}={value!r} does not fit in {nbytes} byte(s)")

    return attrs.field(default=0, validator=check)


def _text() -> Any:
    """Type check only; length and ASCII are checked on encode, where the message can say why."""

    def check(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, str):
            raise ValueError(f"{attr.name}={value!r} is not a string")

    return attrs.field(default="", validator=check)


@attrs.frozen
class IdentifyController:
    """The Identify Controller fields a discovery host or controller cares about."""

    vid: int = _uint(2)
    ssvid: int = _uint(2)
    sn: str = _text()
    mn: str = _text()
    fr: str = _text()
    rab: int = _uint(1)
    ieee: int = _uint(3)
    cmic: int = _uint(1)
    mdts: int = _uint(1)
    cntlid: int = _uint(2)
    ver: int = _uint(4)
    oaes: int = _uint(4)
    ctratt: int = _uint(4)
    cntrltype: int = _uint(1)
    aerl: int = _uint(1)
    lpa: int = _uint(1)
    kas: int = _uint(2)
    maxcmd: int = _uint(2)
    sgls: int = _uint(4)
    subnqn: str = _text()
    ioccsz: int = _uint(4)
    iorcsz: int = _uint(4)
    icdoff: int = _uint(2)
    fcatt: int = _uint(1)
    msdbd: int = _uint(1)
    ofcs: int = _uint(2)
    dctype: int = _uint(1)

    def encode(self) -> bytes:
        """4096 bytes; text fields space padded like real controllers, SUBNQN NUL padded."""
        buf = bytearray(IDENTIFY_SIZE)
        for name, off, size, kind in _LAYOUT:
            value = getattr(self, name)
            if kind == "u":
                buf[off : off + size] = value.to_bytes(size, "little")
            else:
                buf[off : off + size] = _encode_text(name, value, size, kind)
        return bytes(buf)

    @classmethod
    def decode(cls, buf: bytes) -> IdentifyController:
        if len(buf) != IDENTIFY_SIZE:
            raise ProtocolError(f"Identify Controller data must be 4096 bytes, got {len(buf)}")
        buf = bytes(buf)
        values: dict[str, int | str] = {}
        for name, off, size, kind in _LAYOUT:
            raw = buf[off : off + size]
            values[name] = (
                int.from_bytes(raw, "little") if kind == "u" else _decode_text(name, raw, kind)
            )
        return cls(**values)  # type: ignore[arg-type]

    @property
    def supports_discovery_log_change_notices(self) -> bool:
        """OAES bit 31: the controller can send the discovery log change AEN."""
        return bool(self.oaes & (1 << 31))

    @property
    def is_registration_supported(self) -> bool:
        """DCTYPE says DDC or CDC, so DIM (explicit registration) may be sent."""
        return self.dctype in (DcType.DDC, DcType.CDC)

    @property
    def cntrltype_label(self) -> str:
        return cntrltype_label(self.cntrltype)

    @property
    def dctype_label(self) -> str:
        return dctype_label(self.dctype)

    def mdts_bytes(self, cap_mpsmin_bytes: int = 4096) -> int | None:
        """Largest data transfer in bytes, or None when MDTS is 0 (no limit reported)."""
        if self.mdts == 0:
            return None
        return cap_mpsmin_bytes << self.mdts


def _encode_text(name: str, value: str, size: int, kind: str) -> bytes:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{name} {value!r} is not ASCII") from None
    limit = size - 1 if kind == "n" else size  # keep the NQN NUL terminated
    if len(raw) > limit:
        raise ValueError(f"{name} {value!r} is {len(raw)} bytes, the field holds {limit}")
    return raw.ljust(size, b"\0" if kind == "n" else b" ")


def _decode_text(name: str, raw: bytes, kind: str) -> str:
    if kind == "n":
        end = raw.find(b"\0")
        raw = raw if end < 0 else raw[:end]
    raw = raw.rstrip(b" \0")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"Identify {name} {raw!r} is not ASCII") from None


# --- Supported Log Pages (LID 00h) ---------------------------------------------------------

_LOG_DWORDS = struct.Struct("<256I")


def decode_supported_log_pages(buf: bytes) -> dict[int, int]:
    """LID -> LSUPP dword, only for LIDs the controller marks supported (bit 0)."""
    if len(buf) != SUPPORTED_LOG_PAGES_SIZE:
        raise ProtocolError(f"Supported Log Pages log must be 1024 bytes, got {len(buf)}")
    return {lid: dw for lid, dw in enumerate(_LOG_DWORDS.unpack(bytes(buf))) if dw & 1}


def encode_supported_log_pages(pages: Mapping[int, int]) -> bytes:
    """1024 bytes; every dword given must have bit 0 (supported) set."""
    dwords = [0] * 256
    for lid, dword in pages.items():
        if not isinstance(lid, int) or not 0 <= lid <= 0xFF:
            raise ValueError(f"log page id {lid!r} is not 0..255")
        if not isinstance(dword, int) or not 0 <= dword <= 0xFFFFFFFF or not dword & 1:
            raise ValueError(f"LSUPP dword {dword!r} for LID 0x{lid:02x} needs bit 0 set")
        dwords[lid] = dword
    return _LOG_DWORDS.pack(*dwords)


@attrs.frozen
class DiscoveryLogSupport:
    """LID 70h LSUPP bits 16-18: which Get Log Page LSP flags the controller honours."""

    extdlpes: bool = False
    pleos: bool = False
    allsubes: bool = False

    @classmethod
    def from_dword(cls, dword: int) -> DiscoveryLogSupport:
        return cls(
            extdlpes=bool(dword & (1 << 16)),
            pleos=bool(dword & (1 << 17)),
            allsubes=bool(dword & (1 << 18)),
        )

    def to_dword(self) -> int:
        """LSUPP dword with bit 0 (supported) set."""
        return 1 | (self.extdlpes << 16) | (self.pleos << 17) | (self.allsubes << 18)

    @property
    def supported_lsp(self) -> int:
        """The LSP bits (LSP_EXTDLPE/PLEO/ALLSUBE) it is safe to send."""
        return (
            (LSP_EXTDLPE if self.extdlpes else 0)
            | (LSP_PLEO if self.pleos else 0)
            | (LSP_ALLSUBE if self.allsubes else 0)
        )
