"""The labels users see for discovery log page fields (tcp, ipv6, nvme, not specified, ...).

One table per field: each enum member carries its spelling, and the DLPE dicts stafd publishes
over D-Bus (libnvme's ``discover()`` spellings, which upstream returns) are derived from the
same members. libnvme's table lacks a few values (address family loop, TREQ 3); those come
out as the decimal number there, as upstream's do. Split from logpage.py, which re-exports
every name here.
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Self


class _Labelled(enum.IntEnum):
    """IntEnum whose members carry the user-visible spelling (config, D-Bus, CLIs)."""

    def __new__(cls, value: int, label: str, in_libnvme: bool = True) -> Self:
        member = int.__new__(cls, value)
        member._value_ = value
        member._label = label  # type: ignore[attr-defined]
        member._in_libnvme = in_libnvme  # type: ignore[attr-defined]
        return member

    @property
    def label(self) -> str:
        return self._label  # type: ignore[attr-defined,no-any-return]

    @classmethod
    def from_label(cls, label: str) -> Self:
        """Member spelled ``label``; ValueError names the bad value and the valid ones."""
        for member in cls:
            if member.label == label:
                return member
        valid = ", ".join(repr(m.label) for m in cls)
        raise ValueError(f"unknown {_KINDS[cls.__name__]} {label!r} (expected one of {valid})")

    @classmethod
    def label_of(cls, value: int) -> str:
        """Label of a raw value, 'unknown(0x2a)' for values this code does not know."""
        try:
            # a lookup by value (EnumMeta.__call__); mypy checks it against __new__(value, label)
            return cls(value).label  # type: ignore[call-arg]
        except ValueError:
            return f"unknown(0x{value:02x})"

    @classmethod
    def dlpe_table(cls) -> MappingProxyType[int, str]:
        """value -> label for the values libnvme spells (the DLPE dicts of the D-Bus API)."""
        return MappingProxyType(
            {int(m): m.label for m in cls if m._in_libnvme}  # type: ignore[attr-defined]
        )


_KINDS = MappingProxyType(
    {"TrType": "transport type", "AdrFam": "address family", "SubType": "subsystem type"}
)


class TrType(_Labelled):
    UNSPECIFIED = (0, "unspecified")
    RDMA = (1, "rdma")
    FC = (2, "fc")
    TCP = (3, "tcp")
    LOOP = (0xFE, "loop")


class AdrFam(_Labelled):
    PCI = (0, "pci")
    IPV4 = (1, "ipv4")
    IPV6 = (2, "ipv6")
    IB = (3, "infiniband")
    FC = (4, "fc")
    LOOP = (0xFE, "loop", False)  # not in libnvme's adrfam table: '254' in a DLPE


class SubType(_Labelled):
    REFERRAL = (1, "referral")
    NVME = (2, "nvme")
    CURRENT_DISCOVERY = (3, "discovery")


class EFlags(enum.IntFlag):
    DUPRETINFO = 1
    EPCSD = 2
    NCC = 4


_TREQ_SECURE = ("not specified", "required", "not required", "reserved")
TREQ_DISABLE_SQFLOW = 0x04
_EFLAG_NAMES = (
    (EFlags.DUPRETINFO, "duplicate returned information"),
    (EFlags.EPCSD, "explicit persistent connection support"),
    (EFlags.NCC, "not connected to cdc"),
)


def treq_label(treq: int) -> str:
    """Readable TREQ: the secure-channel bits (1:0), then bit 2 when set.

    Bit 2 ("SQ flow control disable supported") is appended as
    ', sq flow control disable supported'; reserved bits 7:3 are ignored.
    (The DLPE dict uses libnvme's own spelling instead; see ``LogPageEntry.to_dlpe``.)
    """
    text = _TREQ_SECURE[treq & 0x3]
    if treq & TREQ_DISABLE_SQFLOW:
        text += ", sq flow control disable supported"
    return text


def eflags_label(eflags: int) -> str:
    """Readable EFLAGS: 'none' or the set flags joined by ', '; unknown bits as unknown(0x..)."""
    names = [name for flag, name in _EFLAG_NAMES if eflags & flag]
    rest = eflags & ~int(EFlags.DUPRETINFO | EFlags.EPCSD | EFlags.NCC)
    if rest:
        names.append(f"unknown(0x{rest:x})")
    return ", ".join(names) if names else "none"


# The DLPE spellings (see ``LogPageEntry.to_dlpe``), derived from the tables above; values
# they lack come out as the decimal number. TREQ there is libnvme's: the secure-channel words
# for 0-2 and bit 2 alone as 'disable sqflow'.
_DLPE_TRTYPE = TrType.dlpe_table()
_DLPE_ADRFAM = AdrFam.dlpe_table()
_DLPE_SUBTYPE = SubType.dlpe_table()
_DLPE_TREQ = MappingProxyType(
    dict(enumerate(_TREQ_SECURE[:3])) | {TREQ_DISABLE_SQFLOW: "disable sqflow"}
)
_DLPE_TREQ_NUMBER = {text: n for n, text in _DLPE_TREQ.items()}


def dlpe_treq_text(treq: int) -> str:
    """TREQ as a DLPE dict spells it (libnvme's word, else the decimal number)."""
    return _DLPE_TREQ.get(treq, str(treq))


def dlpe_treq_word(text: str) -> int | None:
    """The TREQ value libnvme's word ``text`` stands for; None if it is not one of them."""
    return _DLPE_TREQ_NUMBER.get(text)
