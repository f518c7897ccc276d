"""Validation of every value that goes into the kernel's connect option string.

The kernel parses ``/dev/nvme-fabrics`` input as ``key=value`` tokens separated by ``,``: a
``,``, ``=`` or newline inside a value from a log page or an mDNS record would add options of
the sender's choosing (``hostnqn=...``, ``ctrl_loss_tmo=0``). Nothing reaches the string
without passing one of these checks, which accept only what the kernel itself would.
"""

from __future__ import annotations

import base64
import binascii
import errno
import ipaddress
import re

from stas.nvme.tls_psk import TlsKeyError, parse_interchange

NQN_MAX = 223  # NVMF_NQN_SIZE - 1
IFNAME_MAX = 15  # IFNAMSIZ - 1
INT32_MAX = 2**31 - 1
KATO_MAX = 4_294_967  # seconds; the kernel sends KATO * 1000 in a 32-bit field
DHCHAP_KEY_SIZES = (36, 52, 68)  # 32/48/64-byte secrets plus CRC-32, as the kernel demands
_FC_ADDR = re.compile(r"nn-0x[0-9a-fA-F]{16}:pn-0x[0-9a-fA-F]{16}")
_DHCHAP = re.compile(r"DHHC-1:0[0-3]:([A-Za-z0-9+/]+={0,2}):")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_SEPARATORS = frozenset(",=")


class InvalidOption(ValueError):
    """A value the kernel's option string cannot carry; the message names field and value."""

    def __init__(self, field: str, value: object, why: str, *, secret: bool = False) -> None:
        shown = "<secret>" if secret else _shown(value)
        super().__init__(f"{field} {shown}: {why}")
        self.field = field


def _shown(value: object) -> str:
    """repr() of the bad value, shortened so a hostile 64 KiB string cannot flood the log."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _printable_ascii(text: str) -> bool:
    return all(0x21 <= ord(c) <= 0x7E for c in text)


def check_nqn(field: str, value: str, *, must_be_nqn: bool = False) -> str:
    """Subsystem/host NQN: printable ASCII, no separators, at most 223 bytes.

    Subsystem names like the seed's ``klingons`` are accepted (nvmet accepts them); host NQNs
    must start with ``nqn.``.
    """
    if not isinstance(value, str) or not value:
        raise InvalidOption(field, value, "must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > NQN_MAX:
        raise InvalidOption(field, value, f"longer than {NQN_MAX} bytes")
    if not _printable_ascii(value) or _SEPARATORS & set(value):
        raise InvalidOption(field, value, "must be printable ASCII without ',', '=' or spaces")
    if must_be_nqn and not value.startswith("nqn."):
        raise InvalidOption(field, value, "must start with 'nqn.'")
    return value


def check_uuid(field: str, value: str) -> str:
    """The kernel's uuid_parse() form only: 8-4-4-4-12 hex digits (no braces, no urn:)."""
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise InvalidOption(field, value, "is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
    return value.lower()


def _check_ip(field: str, value: str) -> str:
    addr, sep, zone = value.partition("%")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise InvalidOption(field, value, "is not an IP address") from None
    if ip.is_unspecified or ip.is_multicast:
        raise InvalidOption(field, value, "is not a unicast address")
    if sep:
        if not (isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local):
            raise InvalidOption(field, value, "a zone is only valid on an IPv6 link-local address")
        try:
            check_iface(field, zone)
        except InvalidOption:
            raise InvalidOption(field, value, "has no interface name after '%'") from None
        return f"{ip}%{zone}"
    return str(ip)


def check_traddr(transport: str, value: str, *, field: str = "traddr") -> str:
    """A transport address as the transport's kernel driver parses it; returns it normalised."""
    if not isinstance(value, str):
        raise InvalidOption(field, value, "must be a string")
    if transport in ("tcp", "rdma"):
        return _check_ip(field, value)
    if transport == "fc":
        if not _FC_ADDR.fullmatch(value):
            raise InvalidOption(field, value, "is not an FC address nn-0x<16 hex>:pn-0x<16 hex>")
        return value.lower()
    if transport == "loop":
        if value:
            raise InvalidOption(field, value, "must be empty for loop")
        return value
    raise InvalidOption("transport", transport, "is not one of tcp, rdma, fc, loop")


def check_port(field: str, value: str) -> str:
    """A TCP/RDMA service id: decimal 1..65535, no sign, spaces or leading zeros."""
    if not isinstance(value, str) or not _PORT.fullmatch(value) or int(value) > 65535:
        raise InvalidOption(field, value, "is not a port number 1..65535")
    return value


def check_iface(field: str, value: str) -> str:
    """A Linux interface name (dev_valid_name), printable ASCII only."""
    bad = (
        not isinstance(value, str)
        or not 1 <= len(value) <= IFNAME_MAX
        or value in (".", "..")
        or not _printable_ascii(value)
        or bool(set("/:,=") & set(value))
    )
    if bad:
        raise InvalidOption(field, value, "is not a network interface name")
    return value


def check_int(field: str, value: int, lo: int, hi: int = INT32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidOption(field, value, f"must be an integer in {lo}..{hi}")
    return value


def check_bool(field: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise InvalidOption(field, value, "must be true or false")
    return value


def check_dhchap(field: str, value: str) -> str:
    """``DHHC-1:<hh>:<base64 of a 32/48/64-byte key + CRC-32>:``; the value is never echoed."""
    m = _DHCHAP.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidOption(field, value, "is not a DHHC-1:NN:<base64>: secret", secret=True)
    try:
        size = len(base64.b64decode(m.group(1), validate=True))
    except (binascii.Error, ValueError):
        raise InvalidOption(field, value, "has invalid base64", secret=True) from None
    if size not in DHCHAP_KEY_SIZES:
        raise InvalidOption(field, value, "key is not 32, 48 or 64 bytes", secret=True)
    return value


# What the kernel's connect errors mean when DH-HMAC-CHAP is involved (seen on 6.12): the
# bare strerror texts ("Key was rejected by service") do not say which key or what to do.
_AUTH_HINTS = {
    errno.EKEYREJECTED: "DH-HMAC-CHAP authentication failed: check dhchap-secret (the host key,"
    " or sys.conf's key) and dhchap-ctrl-secret against the target's keys for this host NQN",
    errno.ENOKEY: "the controller requires DH-HMAC-CHAP authentication: set dhchap-secret for"
    " it (or a host key in sys.conf)",
    errno.EKEYEXPIRED: "DH-HMAC-CHAP key expired on the target",
}


def auth_failure_hint(code: int | None) -> str:
    """A sentence for an authentication errno from a connect, or '' (never holds a secret)."""
    return _AUTH_HINTS.get(code, "") if code is not None else ""


# --- NVMe/TCP TLS (TP 8011): tls, keyring=<serial>, tls_key=<serial> ---------------------------

_KEY_SERIAL = re.compile(r"[1-9][0-9]{0,9}|0x[0-9a-fA-F]{1,8}")
_KEYRING_NAME = re.compile(r"[.A-Za-z_][.A-Za-z0-9_-]{0,63}")


def is_key_serial(value: str) -> bool:
    """A key serial as the kernel's ``keyring=``/``tls_key=`` take it (decimal or 0x hex)."""
    return bool(_KEY_SERIAL.fullmatch(value)) and 0 < int(value, 0) < 2**31


def check_tls_key(field: str, value: str) -> str:
    """``tls-key``: a configured PSK ``NVMeTLSkey-1:hh:<base64>:`` (put into the keyring for
    the connection's host and subsystem before the connect) or the serial of a key already
    there. The value is never echoed."""
    if isinstance(value, str) and is_key_serial(value):
        return value
    try:
        parse_interchange(value)
    except TlsKeyError as e:
        raise InvalidOption(field, value, f"{e} (or a key serial)", secret=True) from None
    return value


def check_keyring(field: str, value: str) -> str:
    """``keyring``: a keyring serial or name (``.nvme``, the kernel's default)."""
    if not isinstance(value, str) or not (is_key_serial(value) or _KEYRING_NAME.fullmatch(value)):
        raise InvalidOption(field, value, "is neither a key serial nor a keyring name")
    return value


def check_tls(transport: str, tls: bool, tls_key: str | None, keyring: str | None) -> None:
    """TLS is NVMe/TCP only; a key or keyring without ``tls`` would be silently unused."""
    check_bool("tls", tls)
    if tls and transport != "tcp":
        raise InvalidOption("tls", tls, f"is only for tcp, not {transport}")
    if tls_key is not None:
        check_tls_key("tls_key", tls_key)
    if keyring is not None:
        check_keyring("keyring", keyring)
    if not tls and (tls_key is not None or keyring is not None):
        raise InvalidOption("tls", tls, "must be true when tls_key or keyring is given")


def tls_options(
    tls: bool, tls_key: str | None, keyring: str | None, *, redact: bool = True
) -> list[str]:
    """The option string's TLS part. Only serials can go to the kernel: a configured PSK must
    have been put into the keyring first (stas.kernel.tls.resolve_tls)."""
    if not tls:
        return []
    parts = ["tls"]
    for name, value in (("keyring", keyring), ("tls_key", tls_key)):
        if value is None:
            continue
        if is_key_serial(value):
            parts.append(f"{name}={int(value, 0)}")
        elif redact:
            parts.append(f"{name}=<{'psk' if name == 'tls_key' else value}>")
        else:
            raise InvalidOption(name, value, "must be resolved to a key serial before connecting",
                                secret=name == "tls_key")  # fmt: skip
    return parts


_TLS_HINTS = {
    errno.ENOKEY: "TLS: no PSK for this host NQN and subsystem in the keyring: set tls-key "
    "(NVMeTLSkey-1:...) or insert one (nvme check-tls-key --insert)",
    errno.EKEYREJECTED: "TLS handshake failed: the target does not hold the same PSK",
    errno.EKEYREVOKED: "TLS: the PSK was revoked",
    errno.EKEYEXPIRED: "TLS: the PSK expired",
    errno.ETIMEDOUT: "TLS handshake timed out: is tlshd (ktls-utils) running?",
    errno.EIO: "TLS connect failed: is tlshd (ktls-utils) running, and does the target hold the "
    "same PSK?",
    errno.EACCES: "TLS handshake refused",
}


def tls_failure_hint(code: int | None) -> str:
    """A sentence for the errno of a failed TLS connect, or '' (never holds a key)."""
    return _TLS_HINTS.get(code, "") if code is not None else ""
