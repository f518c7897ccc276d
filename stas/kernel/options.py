"""Validation of every value that goes into the kernel's connect option string.

The kernel parses ``/dev/nvme-fabrics`` input as ``key=value`` tokens separated by ``,``: a
``,``, ``=`` or newline inside a value from a log page or an mDNS record would add options of
the sender's choosing (``hostnqn=...``, ``ctrl_loss_tmo=0``). Nothing reaches the string
without passing one of these checks, which accept only what the kernel itself would.
"""

from __future__ import annotations

import ipaddress
import re
import uuid

NQN_MAX = 223
IFNAME_MAX = 15
_FC_ADDR = re.compile(r"nn-0x[0-9a-fA-F]{16}:pn-0x[0-9a-fA-F]{16}")
_DHCHAP = re.compile(r"DHHC-1:0[0-3]:[A-Za-z0-9+/]+={0,2}:")
_FORBIDDEN = set(",=\n\r\t \0")


class InvalidOption(ValueError):
    """A value the kernel's option string cannot carry; the message names field and value."""

    def __init__(self, field: str, value: object, why: str, *, secret: bool = False) -> None:
        shown = "<secret>" if secret else repr(value)
        super().__init__(f"{field} {shown}: {why}")
        self.field = field


def _printable_ascii(text: str) -> bool:
    return all(0x21 <= ord(c) <= 0x7E for c in text)


def check_nqn(field: str, value: str, *, must_be_nqn: bool = False) -> str:
    """Subsystem/host NQN: printable ASCII, no separators, at most 223 bytes.

    Subsystem names like the seed's ``klingons`` are accepted (nvmet accepts them); host NQNs
    must start with ``nqn.``.
    """
    if not value:
        raise InvalidOption(field, value, "must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > NQN_MAX:
        raise InvalidOption(field, value[:40] + "...", f"longer than {NQN_MAX} bytes")
    if not _printable_ascii(value) or _FORBIDDEN & set(value):
        raise InvalidOption(field, value, "must be printable ASCII without ',', '=' or spaces")
    if must_be_nqn and not value.startswith("nqn."):
        raise InvalidOption(field, value, "must start with 'nqn.'")
    return value


def check_uuid(field: str, value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidOption(field, value, "is not a UUID") from None


def check_traddr(transport: str, value: str, *, field: str = "traddr") -> str:
    if transport in ("tcp", "rdma"):
        addr, _, zone = value.partition("%")
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            raise InvalidOption(field, value, "is not an IP address") from None
        if zone:
            if not (isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local):
                raise InvalidOption(field, value, "a zone is only valid on IPv6 link-local")
            check_iface(f"{field} zone", zone)
        return value if zone else str(ip)
    if transport == "fc":
        if not _FC_ADDR.fullmatch(value):
            raise InvalidOption(field, value, "is not an FC address nn-0x...:pn-0x...")
        return value.lower()
    if transport == "loop":
        if value:
            raise InvalidOption(field, value, "must be empty for loop")
        return value
    raise InvalidOption("transport", transport, "is not one of tcp, rdma, fc, loop")


def check_port(field: str, value: str) -> str:
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 65535:
        raise InvalidOption(field, value, "is not a port number 1..65535")
    return str(int(value))


def check_iface(field: str, value: str) -> str:
    bad = (not 1 <= len(value) <= IFNAME_MAX or value in (".", "..")
           or not _printable_ascii(value) or set("/:,=") & set(value))  # fmt: skip
    if bad:
        raise InvalidOption(field, value, "is not a network interface name")
    return value


def check_int(field: str, value: int, lo: int, hi: int = 2**31 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidOption(field, value, f"must be an integer in {lo}..{hi}")
    return value


def check_dhchap(field: str, value: str) -> str:
    if not _DHCHAP.fullmatch(value):
        raise InvalidOption(field, value, "is not a DHHC-1:NN:<base64>: secret", secret=True)
    return value
