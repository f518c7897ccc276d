"""TP8009 DNS-SD TXT records -> a candidate discovery controller (sans-IO).

mDNS answers come from anyone on the LAN, so everything here treats them as hostile: sizes and
counts are capped before anything is built, and every problem becomes a ``Rejected`` value with
a printable reason instead of an exception. Two rules go beyond upstream nvme-stas:

- RFC 6763 §6 is followed exactly (first occurrence of a key wins, a key without ``=`` is a
  boolean, a value may contain ``=``), where upstream dropped any string with two ``=``.
- The NQN is checked for syntax and for characters that would let it inject options into the
  kernel's ``/dev/nvme-fabrics`` string (``,`` ``=`` ``;`` whitespace).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from stas import net
from stas.constants import WELL_KNOWN_DISC_NQN
from stas.messages import Tid
from stas.nvme.errors import ProtocolError

MAX_STRING = 255  # one DNS character-string (RFC 1035 §3.3)
MAX_STRINGS = 256  # far more than any TP8009 announcement needs
MAX_TOTAL = 8900  # RFC 6763 §6.2: the largest TXT a multicast DNS packet can carry
MAX_NQN = 223  # NVMe base spec: NQN length limit in bytes

TRANSPORTS: Mapping[str, str] = {"tcp": "tcp", "roce": "rdma", "iwarp": "rdma", "rdma": "rdma"}
_NQN_FORBIDDEN = frozenset(b",=;")


@attrs.frozen
class Rejected:
    """Why an announcement cannot become a controller; ``reason`` is safe to log."""

    reason: str


@attrs.frozen
class TxtResult:
    """Parsed TXT: lower-cased keys to raw values (``None`` for a boolean key).

    ``problem`` is set when the record as a whole is unacceptable (too big, too many strings);
    ``ignored`` counts strings skipped because their key was invalid (RFC 6763 §6.4).
    """

    values: Mapping[str, bytes | None] = attrs.field(factory=dict)
    problem: str | None = None
    ignored: int = 0

    def get(self, key: str) -> bytes | None:
        return self.values.get(key)


def show(value: bytes | str, limit: int = 40) -> str:
    """A printable, length-limited rendering of untrusted bytes for log messages."""
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    text = "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in b"'\\" else f"\\x{b:02x}" for b in raw[:limit]
    )
    return f"'{text}'" + ("..." if len(raw) > limit else "")


def split_txt_rdata(rdata: bytes) -> list[bytes]:
    """Split raw TXT RDATA (length-prefixed character-strings) into its strings."""
    if len(rdata) > MAX_TOTAL + MAX_STRINGS:
        raise ProtocolError(f"TXT record of {len(rdata)} bytes exceeds {MAX_TOTAL}")
    out: list[bytes] = []
    pos = 0
    while pos < len(rdata):
        length = rdata[pos]
        end = pos + 1 + length
        if end > len(rdata):
            raise ProtocolError(
                f"TXT string at offset {pos} claims {length} bytes, {len(rdata) - pos - 1} remain"
            )
        out.append(rdata[pos + 1 : end])
        pos = end
    return out


def encode_txt_rdata(records: Sequence[bytes]) -> bytes:
    """Inverse of ``split_txt_rdata`` (used by tests and announcers)."""
    for rec in records:
        if len(rec) > MAX_STRING:
            raise ValueError(f"TXT string of {len(rec)} bytes exceeds {MAX_STRING}")
    return b"".join(bytes([len(rec)]) + rec for rec in records)


def _valid_key(key: bytes) -> bool:
    return bool(key) and all(0x20 <= b <= 0x7E for b in key)  # '=' cannot occur: we split on it


def parse_txt(records: Sequence[bytes]) -> TxtResult:
    """RFC 6763 §6 key/value parsing with caps checked before any work is done."""
    if len(records) > MAX_STRINGS:
        return TxtResult(problem=f"TXT record has {len(records)} strings (limit {MAX_STRINGS})")
    total = 0
    for rec in records:
        if not isinstance(rec, bytes | bytearray):
            return TxtResult(problem=f"TXT string is {type(rec).__name__}, not bytes")
        if len(rec) > MAX_STRING:
            return TxtResult(problem=f"TXT string of {len(rec)} bytes (limit {MAX_STRING})")
        total += len(rec)
    if total > MAX_TOTAL:
        return TxtResult(problem=f"TXT record of {total} bytes (limit {MAX_TOTAL})")
    values: dict[str, bytes | None] = {}
    ignored = 0
    for rec in records:
        key, sep, value = bytes(rec).partition(b"=")
        if not _valid_key(key):
            ignored += 1  # §6.4: silently ignore strings without a usable key
            continue
        name = key.decode("ascii").lower()
        if name not in values:  # §6.4: only the first occurrence counts
            values[name] = value if sep else None
    return TxtResult(values=values, ignored=ignored)


def nqn_problem(nqn: bytes) -> str | None:
    """Why ``nqn`` cannot be used as a subsystem NQN, or None when it can."""
    if len(nqn) > MAX_NQN:
        return f"nqn of {len(nqn)} bytes exceeds {MAX_NQN}"
    if not nqn.startswith(b"nqn."):
        return f"nqn {show(nqn)} does not start with 'nqn.'"
    bad = next((b for b in nqn if not 0x21 <= b <= 0x7E), None)
    if bad is not None:
        return f"nqn {show(nqn)} contains a control, space or non-ASCII byte (0x{bad:02x})"
    unsafe = next((b for b in nqn if b in _NQN_FORBIDDEN), None)
    if unsafe is not None:
        return (
            f"nqn {show(nqn)} contains {chr(unsafe)!r}, which cannot be passed safely in the"
            " kernel's connect option string"
        )
    return None


def _transport(txt: TxtResult) -> str | Rejected:
    if "p" not in txt.values:
        return Rejected("TXT record has no 'p=' (protocol) key")
    raw = txt.values["p"]
    if raw is None:
        return Rejected("TXT key 'p' has no value")
    proto = raw.strip(b" \t").lower()
    transport = TRANSPORTS.get(proto.decode("ascii", "replace"))
    if transport is None:
        return Rejected(f"unsupported protocol p={show(raw)} (expected tcp, roce, iwarp or rdma)")
    return transport


def _address(address: str) -> net.IPAddress | Rejected:
    ip = net.host_ip(address.split("%", 1)[0].strip())  # IPv4-mapped: the IPv4 address
    if ip is None:
        return Rejected(f"address {show(address)} is not an IP address")
    if ip.is_unspecified or ip.is_multicast:
        return Rejected(f"address {ip} cannot be a discovery controller")
    return ip


def service_to_candidate(
    txt: TxtResult,
    *,
    address: str,
    port: int,
    iface: str,
    kernel_supports_tp8013: bool = True,
) -> Tid | Rejected:
    """The discovery controller an announcement describes, or why it is unusable."""
    if txt.problem is not None:
        return Rejected(txt.problem)
    transport = _transport(txt)
    if isinstance(transport, Rejected):
        return transport
    subsysnqn = WELL_KNOWN_DISC_NQN
    raw_nqn = txt.get("nqn")
    if kernel_supports_tp8013 and raw_nqn:
        problem = nqn_problem(raw_nqn)
        if problem is not None:
            return Rejected(problem)
        subsysnqn = raw_nqn.decode("ascii")
    ip = _address(address)
    if isinstance(ip, Rejected):
        return ip
    if not 1 <= port <= 65535:
        return Rejected(f"port {port} is outside 1..65535")
    host_iface = iface if transport == "tcp" else ""
    if ip.version == 6 and ip.is_link_local and transport == "tcp" and not host_iface:
        return Rejected(f"link-local address {ip} without a known interface")
    return Tid(
        transport=transport,
        traddr=str(ip),
        trsvcid=str(port),
        subsysnqn=subsysnqn,
        host_iface=host_iface,
    )
