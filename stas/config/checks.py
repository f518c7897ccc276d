"""Value checkers shared by [Global], per-controller overrides and sys.conf.

Every checker takes the text from the file and returns the typed value or raises ``BadValue``
whose message is the *reason* only (the caller adds file, section, key and value), e.g.
``out of range 16..1024``. Checkers never raise anything else, whatever the input.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import zlib
from collections.abc import Callable

from stas.config.timespan import TimespanError, parse_timespan
from stas.constants import WELL_KNOWN_DISC_NQN as WELL_KNOWN_DISC_NQN  # re-exported
from stas.nvme.tls_psk import TlsKeyError, parse_interchange

INT_MAX = 2**31 - 1  # the kernel parses fabrics options as C int
NQN_MAX_BYTES = 223
TRANSPORTS = ("tcp", "rdma", "fc", "loop")

_INT = re.compile(r"[+-]?[0-9]{1,20}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_FC_ADDR = re.compile(r"nn-0x[0-9a-f]{16}:pn-0x[0-9a-f]{16}")
_DHCHAP = re.compile(r"DHHC-1:0[0-3]:([A-Za-z0-9+/]+={0,2}):")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DHCHAP_KEY_LENGTHS = (32, 48, 64)  # plus a 4-byte CRC-32 in the encoded form
_KEY_SERIAL = re.compile(r"[1-9][0-9]{0,9}|0x[0-9a-fA-F]{1,8}")
_KEYRING_NAME = re.compile(r"[.A-Za-z_][.A-Za-z0-9_-]{0,63}")


class BadValue(ValueError):
    """A value failed its check; ``str(exc)`` is the reason, without file or key."""


def _printable(text: str) -> bool:
    return text.isprintable() and text.isascii()


def to_bool(text: str) -> bool:
    """``true``/``false`` (any case), as upstream's text check accepts."""
    low = text.lower()
    if low not in ("true", "false"):
        raise BadValue("expected true or false")
    return low == "true"


def to_enabled(text: str) -> bool:
    """``enabled``/``disabled`` (any case), used by ``pleo`` and ``zeroconf``."""
    low = text.lower()
    if low not in ("enabled", "disabled"):
        raise BadValue("expected enabled or disabled")
    return low == "enabled"


def int_range(lo: int, hi: int = INT_MAX) -> Callable[[str], int]:
    """A checker for a decimal integer in ``lo..hi``."""

    def check(text: str) -> int:
        if not _INT.fullmatch(text):
            raise BadValue("not an integer")
        value = int(text)
        if not lo <= value <= hi:
            raise BadValue(f"out of range {lo}..{hi}")
        return value

    return check


def one_of(*choices: str) -> Callable[[str], str]:
    """A checker for one word out of ``choices`` (any case, returned in lower case)."""

    def check(text: str) -> str:
        low = text.lower()
        if low not in choices:
            raise BadValue("expected " + ", ".join(choices[:-1]) + " or " + choices[-1])
        return low

    return check


def to_timespan(text: str) -> float:
    """Seconds for ``zeroconf-connections-persistence``; ``-1`` (forever) is the only negative."""
    try:
        seconds = parse_timespan(text)
    except TimespanError as e:
        raise BadValue(f"not a time span ({e})") from None
    if seconds < 0 and seconds != -1:
        raise BadValue("negative; only -1 (forever) is allowed")
    return seconds


def to_transport(text: str) -> str:
    low = text.lower()
    if low not in TRANSPORTS:
        raise BadValue("invalid transport, expected tcp, rdma, fc or loop")
    return low


def to_port(text: str) -> str:
    """A TCP/RDMA service id: a port number 1..65535, returned without leading zeros."""
    if not text.isascii() or not text.isdigit() or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise BadValue("not a port number 1..65535")
    return str(int(text))


def to_ip(text: str) -> str:
    """An IPv4 or IPv6 literal (IPv6 may carry a ``%scope``), in canonical form."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise BadValue("not an IP address") from None


def to_host(text: str) -> str:
    """An IP literal (normalised) or a syntactically valid host name (resolved later)."""
    try:
        return to_ip(text)
    except BadValue:
        pass
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or not all(_HOST_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise BadValue("not an IP address or host name")
    return text


def to_fc_addr(text: str) -> str:
    """A Fibre Channel address ``nn-0x<16 hex>:pn-0x<16 hex>`` (lower-cased)."""
    low = text.lower()
    if not _FC_ADDR.fullmatch(low):
        raise BadValue("not an FC address nn-0x<16 hex digits>:pn-0x<16 hex digits>")
    return low


def to_iface(text: str) -> str:
    """A network interface name as the kernel accepts it (dev_valid_name)."""
    if (
        not text
        or len(text.encode("utf-8", "surrogatepass")) > 15
        or text in (".", "..")
        or any(c in "/:" or c.isspace() or not c.isprintable() for c in text)
    ):
        raise BadValue("not an interface name (1-15 characters, no '/', ':' or whitespace)")
    return text


def to_nqn(text: str) -> str:
    """A strict NQN: ``nqn.`` prefix, at most 223 bytes, printable ASCII without ``,=;``."""
    if not text.startswith("nqn."):
        raise BadValue("not an NQN (must start with 'nqn.')")
    if len(text) > NQN_MAX_BYTES:
        raise BadValue(f"NQN longer than {NQN_MAX_BYTES} bytes")
    if not _printable(text) or any(c in ",=; " for c in text):
        raise BadValue("NQN contains a space, ',', '=', ';' or a non-printable character")
    return text


def to_word(text: str) -> str:
    """Any printable text without whitespace or the separators of fabrics option strings."""
    if not text.isprintable() or any(c in ",=;" or c.isspace() for c in text):
        raise BadValue("contains whitespace, ',', '=', ';' or a non-printable character")
    return text


def to_subsysnqn(text: str) -> str:
    """A relaxed subsystem NQN: nvmet accepts names like ``klingons``, so only forbid what
    would break the kernel's option string or sysfs."""
    if not text.isprintable() or any(c in ",=;" or c.isspace() for c in text):
        raise BadValue("NQN contains whitespace, ',', '=', ';' or a non-printable character")
    if len(text.encode("utf-8")) > NQN_MAX_BYTES:
        raise BadValue(f"NQN longer than {NQN_MAX_BYTES} bytes")
    return text


def to_dhchap_secret(text: str) -> str:
    """A DH-HMAC-CHAP secret ``DHHC-1:0[0-3]:<base64 of key + CRC-32>:`` as nvme-cli makes them.

    The key must be 32, 48 or 64 bytes and its CRC-32 must match, as the kernel checks. The
    reason never repeats the secret.
    """
    match = _DHCHAP.fullmatch(text)
    if match is None:
        raise BadValue("not a DH-HMAC-CHAP secret of the form DHHC-1:0[0-3]:<base64>:")
    try:
        raw = base64.b64decode(match.group(1), validate=True)
    except (binascii.Error, ValueError):
        raise BadValue("DH-HMAC-CHAP secret is not valid base64") from None
    key, crc = raw[:-4], raw[-4:]
    if len(key) not in _DHCHAP_KEY_LENGTHS:
        raise BadValue("DH-HMAC-CHAP key must be 32, 48 or 64 bytes")
    if zlib.crc32(key).to_bytes(4, "little") != crc:
        raise BadValue("DH-HMAC-CHAP secret has a bad CRC")
    return text


def to_tls_key(text: str) -> str:
    """``tls-key``: a configured TLS PSK ``NVMeTLSkey-1:0[0-2]:<base64 of key + CRC-32>:`` (as
    ``nvme gen-tls-key`` prints it; 32 or 48 bytes, CRC checked) or the serial of a key already
    in the kernel keyring. The reason never repeats the key."""
    if _KEY_SERIAL.fullmatch(text) and 0 < int(text, 0) < 2**31:
        return text
    try:
        parse_interchange(text)
    except TlsKeyError as e:
        raise BadValue(f"{e} (or a key serial)") from None
    return text


def to_keyring(text: str) -> str:
    """``keyring``: a kernel keyring's serial or name (``.nvme`` is the kernel's default)."""
    if _KEY_SERIAL.fullmatch(text) and 0 < int(text, 0) < 2**31:
        return text
    if not _KEYRING_NAME.fullmatch(text):
        raise BadValue("not a keyring serial or name (e.g. .nvme)")
    return text


def to_uuid(text: str) -> str:
    """A host ID: the kernel only accepts a UUID."""
    if not _UUID.fullmatch(text.lower()):
        raise BadValue("not a UUID")
    return text.lower()


def to_symname(text: str) -> str:
    """A host symbolic name for DIM registration, by the DIM code's own rule."""
    from stas.nvme.hostid import symname_problem  # stafd has it loaded; others only if set

    problem = symname_problem(text)
    if problem is not None:
        raise BadValue(problem)
    return text


# Connection parameters shared by [Global] and per-controller overrides, so both are checked
# the same way. The ranges are what the kernel's fabrics option parser accepts.
CONNECTION_CHECKS: dict[str, Callable[[str], object]] = {
    "hdr-digest": to_bool,
    "data-digest": to_bool,
    "kato": int_range(0),
    "queue-size": int_range(16, 1024),
    "reconnect-delay": int_range(1),
    "ctrl-loss-tmo": int_range(-1),
    "disable-sqflow": to_bool,
    "nr-io-queues": int_range(1),
    "nr-write-queues": int_range(0),
    "nr-poll-queues": int_range(0),
    # NVMe/TCP TLS (names as nvme-cli's fabrics config and libnvme); tls-key is a secret
    "tls": to_bool,
    "keyring": to_keyring,
}
IO_ONLY_KEYS = frozenset({"nr-io-queues", "nr-write-queues", "nr-poll-queues"})
