"""Values packed into one integer: Connect DW0, controller registers and AEN DW0 (sans-IO).

Split from commands.py (which re-exports everything here) so each module keeps one job:
commands.py builds and parses commands, this module names the bits inside the numbers.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, ClassVar, Self

import attrs


def _check_uint(name: str, value: object, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ValueError(f"{name}={value!r} is not an unsigned {bits}-bit integer")


class _Bits:
    """Mixin for attrs classes packed into one integer; ``_BITS`` = (name, shift, width).

    Width-1 fields decode as bool. Fields are range checked on construction, so ``encode``
    always fits the register or dword.
    """

    _BITS: ClassVar[tuple[tuple[str, int, int], ...]] = ()

    def __attrs_post_init__(self) -> None:
        for name, _shift, width in self._BITS:
            value = getattr(self, name)
            _check_uint(name, int(value) if isinstance(value, bool) else value, width)

    def encode(self) -> int:
        return sum(int(getattr(self, name)) << shift for name, shift, _ in self._BITS)

    @classmethod
    def decode(cls, value: int) -> Self:
        fields: dict[str, Any] = {}
        for name, shift, width in cls._BITS:
            bits = (value >> shift) & ((1 << width) - 1)
            fields[name] = bool(bits) if width == 1 else bits
        return cls(**fields)


@attrs.frozen
class ConnectResult(_Bits):
    """Connect completion DW0: CNTLID; ATR (authentication required); ASCR (secure concat)."""

    cntlid: int
    authreq_atr: bool = False
    ascr: bool = False
    _BITS = (("cntlid", 0, 16), ("authreq_atr", 17, 1), ("ascr", 18, 1))


def connect_result(dw0: int) -> ConnectResult:
    return ConnectResult.decode(dw0)


REG_CAP = 0x00
REG_VS = 0x08
REG_CC = 0x14
REG_CSTS = 0x1C

CC_ENABLE = 0x00460001  # EN=1, IOSQES=6, IOCQES=4
CC_SHUTDOWN_NORMAL = 0x00464001  # CC_ENABLE plus SHN=01b
CSTS_SHST_COMPLETE = 0b10


@attrs.frozen
class Cap(_Bits):
    """CAP: MQES (0's based), CQR, TO (500 ms units), CSS, MPSMIN/MPSMAX (2^(12+n) bytes)."""

    mqes: int
    cqr: bool = False
    to: int = 0
    css: int = 0x01
    mpsmin: int = 0
    mpsmax: int = 0
    _BITS = (
        ("mqes", 0, 16), ("cqr", 16, 1), ("to", 24, 8),
        ("css", 37, 8), ("mpsmin", 48, 4), ("mpsmax", 52, 4),
    )  # fmt: skip

    @property
    def timeout_s(self) -> float:
        """Worst-case time for CSTS.RDY to follow CC.EN."""
        return self.to * 0.5

    @property
    def mpsmin_bytes(self) -> int:
        return 1 << (12 + self.mpsmin)


@attrs.frozen
class Cc(_Bits):
    """CC: EN, CSS, MPS, AMS, SHN (01b normal shutdown), IOSQES, IOCQES."""

    en: bool = False
    css: int = 0
    mps: int = 0
    ams: int = 0
    shn: int = 0
    iosqes: int = 0
    iocqes: int = 0
    _BITS = (
        ("en", 0, 1), ("css", 4, 3), ("mps", 7, 4), ("ams", 11, 3),
        ("shn", 14, 2), ("iosqes", 16, 4), ("iocqes", 20, 4),
    )  # fmt: skip


@attrs.frozen
class Csts(_Bits):
    """CSTS: RDY, CFS (fatal status), SHST (10b = shutdown complete)."""

    rdy: bool = False
    cfs: bool = False
    shst: int = 0
    _BITS = (("rdy", 0, 1), ("cfs", 1, 1), ("shst", 2, 2))


AEN_DISCOVERY_LOG_CHANGED = 0x0070F002
AEN_TYPE_NOTICE = 2
AEN_NOTICE_DISCOVERY_LOG_CHANGED = 0xF0

_AEN_TYPES = MappingProxyType(
    {0: "error", 1: "smart/health", 2: "notice", 6: "io command set", 7: "vendor specific"}
)
_AEN_INFO = MappingProxyType(
    {
        (0, 0x00): "write to invalid doorbell register",
        (0, 0x01): "invalid doorbell write value",
        (0, 0x02): "diagnostic failure",
        (0, 0x03): "persistent internal error",
        (0, 0x04): "transient internal error",
        (0, 0x05): "firmware image load error",
        (1, 0x00): "subsystem reliability",
        (1, 0x01): "temperature threshold",
        (1, 0x02): "spare below threshold",
        (2, 0x00): "namespace attribute changed",
        (2, 0x01): "firmware activation starting",
        (2, 0x02): "telemetry log changed",
        (2, 0x03): "asymmetric namespace access change",
        (2, 0xF0): "discovery log page changed",
    }
)


@attrs.frozen
class AenInfo(_Bits):
    """Asynchronous Event Request completion DW0: type 2:0, info 15:8, log page 23:16."""

    event_type: int
    event_info: int
    log_page: int
    _BITS = (("event_type", 0, 3), ("event_info", 8, 8), ("log_page", 16, 8))

    @property
    def is_discovery_log_change(self) -> bool:
        return self.encode() == AEN_DISCOVERY_LOG_CHANGED

    def describe(self) -> str:
        kind = _AEN_TYPES.get(self.event_type, f"type {self.event_type}")
        info = _AEN_INFO.get((self.event_type, self.event_info), f"info 0x{self.event_info:02x}")
        return f"{kind}: {info} (log 0x{self.log_page:02x})"
