"""NVMe/TCP TLS pre-shared keys (TP 8011, TP 8018), sans-IO: what ``nvme gen-tls-key`` /
``check-tls-key`` compute, so a key from stacd.conf can be put into the kernel keyring without
nvme-cli (Debian 12's 2.3 has no TLS commands).

Facts this follows (NVMe/TCP transport spec 3.6.1; libnvme's linux.c; Linux
drivers/nvme/common/keyring.c as built in Debian 13's 6.12):

- configured PSK interchange format ``NVMeTLSkey-1:<hh>:<base64(key || CRC-32 LE)>:``, key 32
  or 48 bytes; ``hh`` 00 = use the key as the retained PSK, 01 = SHA-256, 02 = SHA-384;
- retained PSK = HKDF-Expand-Label(HKDF-Extract(0, configured), "HostNQN", host NQN, L) with
  the hash ``hh`` names and L the configured key's length (TLS 1.3's label form: 2-byte
  length, length-prefixed "tls13 " + label, length-prefixed context);
- cipher (the hash of the TLS suite): ``hh``, or for ``00`` the key length (32 SHA-256,
  48 SHA-384);
- identity v0 ``NVMe0R<cc> <hostnqn> <subnqn>``; v1 appends a digest, base64 of
  HMAC(retained, hostnqn " " subnqn " " "NVMe-over-Fabrics");
- TLS PSK = HKDF-Expand-Label(HKDF-Extract(0, retained), "nvme-tls-psk", context, L), the
  context being the identity (v0) or ``<cc> <digest>`` (v1);
- the 6.12 kernel looks a PSK up in the ``.nvme`` keyring (key type ``psk``) by the prefix
  ``NVMe<v>R<cc> <hostnqn> <subnqn>``, trying v1 before v0 and SHA-384 before SHA-256, so
  either version is found.

Nothing here logs or formats a key into an error message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
import zlib

import attrs

PREFIX = "NVMeTLSkey-1"
KEY_LENGTHS = (32, 48)
HASHES = {1: "sha256", 2: "sha384"}
HMAC_NONE = 0
TRANSFORM_SEED = b"NVMe-over-Fabrics"
_INTERCHANGE = re.compile(r"NVMeTLSkey-1:(0[0-2]):([A-Za-z0-9+/]+={0,2}):")
_MAX_TEXT = 200  # a 48-byte key is 72 base64 characters; anything much longer is not a key


class TlsKeyError(ValueError):
    """A configured PSK that cannot be used; the message never contains the key."""


@attrs.frozen
class ConfiguredPsk:
    """A configured PSK as the interchange format carries it."""

    key: bytes = attrs.field(repr=False)
    hmac_id: int

    @property
    def cipher(self) -> int:
        """The TLS suite's hash (1 SHA-256, 2 SHA-384): ``hh``, or the key length for 00."""
        if self.hmac_id != HMAC_NONE:
            return self.hmac_id
        return 1 if len(self.key) == 32 else 2


def parse_interchange(text: str) -> ConfiguredPsk:
    """``NVMeTLSkey-1:hh:<base64>:`` -> key and hash id; CRC and length checked."""
    if not isinstance(text, str) or len(text) > _MAX_TEXT:
        raise TlsKeyError("not a TLS PSK in interchange format NVMeTLSkey-1:0[0-2]:<base64>:")
    m = _INTERCHANGE.fullmatch(text)
    if m is None:
        raise TlsKeyError("not a TLS PSK in interchange format NVMeTLSkey-1:0[0-2]:<base64>:")
    try:
        raw = base64.b64decode(m.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise TlsKeyError("TLS PSK is not valid base64") from None
    key, crc = raw[:-4], raw[-4:]
    if len(key) not in KEY_LENGTHS:
        raise TlsKeyError("TLS PSK must be 32 or 48 bytes")
    if zlib.crc32(key).to_bytes(4, "little") != crc:
        raise TlsKeyError("TLS PSK has a bad CRC")
    return ConfiguredPsk(key, int(m.group(1)))


def format_interchange(psk: ConfiguredPsk) -> str:
    """The interchange text of ``psk`` (what ``nvme gen-tls-key`` prints)."""
    if len(psk.key) not in KEY_LENGTHS or psk.hmac_id not in (0, *HASHES):
        raise TlsKeyError("TLS PSK must be 32 or 48 bytes with hash id 00, 01 or 02")
    body = base64.b64encode(psk.key + zlib.crc32(psk.key).to_bytes(4, "little")).decode()
    return f"{PREFIX}:{psk.hmac_id:02d}:{body}:"


def _hash(hash_id: int) -> str:
    try:
        return HASHES[hash_id]
    except KeyError:
        raise TlsKeyError(f"unknown TLS PSK hash id {hash_id}") from None


def hkdf_extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 extract; an empty salt means HashLen zero bytes (the same HMAC key)."""
    return hmac.new(salt, ikm, hash_name).digest()


def hkdf_expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 expand to ``length`` bytes."""
    size = hashlib.new(hash_name).digest_size
    if length > 255 * size:
        raise TlsKeyError("HKDF output too long")
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hash_name).digest()
        out += block
        counter += 1
    return out[:length]


def expand_label_info(label: str, context: bytes, length: int) -> bytes:
    """TLS 1.3's HkdfLabel: uint16 length, <"tls13 " + label>, <context> (1-byte lengths)."""
    full = b"tls13 " + label.encode()
    if len(full) > 255 or len(context) > 255:
        raise TlsKeyError("HKDF label or context longer than 255 bytes")
    return struct.pack(">H", length) + bytes([len(full)]) + full + bytes([len(context)]) + context


def _expand_label(hash_id: int, secret: bytes, label: str, context: bytes) -> bytes:
    name = _hash(hash_id)
    prk = hkdf_extract(name, b"", secret)
    return hkdf_expand(name, prk, expand_label_info(label, context, len(secret)), len(secret))


def retained_psk(psk: ConfiguredPsk, hostnqn: str) -> bytes:
    """The retained PSK for ``hostnqn`` (the configured key itself when ``hh`` is 00)."""
    if psk.hmac_id == HMAC_NONE:
        return psk.key
    return _expand_label(psk.hmac_id, psk.key, "HostNQN", hostnqn.encode())


def psk_digest(retained: bytes, cipher: int, hostnqn: str, subnqn: str) -> str:
    """The v1 identity's digest: base64 of HMAC(retained, host " " sub " NVMe-over-Fabrics")."""
    msg = f"{hostnqn} {subnqn} ".encode() + TRANSFORM_SEED
    return base64.b64encode(hmac.new(retained, msg, _hash(cipher)).digest()).decode()


def identity(hostnqn: str, subnqn: str, cipher: int, version: int = 0, digest: str = "") -> str:
    """The PSK identity, which is also the key's description in the kernel keyring."""
    _hash(cipher)
    if version == 0:
        return f"NVMe0R{cipher:02d} {hostnqn} {subnqn}"
    if version == 1 and digest:
        return f"NVMe1R{cipher:02d} {hostnqn} {subnqn} {digest}"
    raise TlsKeyError(f"TLS PSK identity version {version} is not 0 or 1 (with a digest)")


def lookup_prefix(hostnqn: str, subnqn: str, cipher: int, version: int) -> str:
    """What the kernel searches the keyring for (descriptions starting with it match)."""
    return f"NVMe{version}R{cipher:02d} {hostnqn} {subnqn}"


@attrs.frozen
class TlsPsk:
    """A PSK ready for the keyring: its identity (the key description) and key bytes."""

    identity: str
    key: bytes = attrs.field(repr=False)


def derive_tls_psk(psk: ConfiguredPsk, hostnqn: str, subnqn: str, version: int = 1) -> TlsPsk:
    """What ``nvme check-tls-key --insert`` puts into the keyring for this host/subsystem."""
    retained = retained_psk(psk, hostnqn)
    cipher = psk.cipher
    if version == 0:
        ident = identity(hostnqn, subnqn, cipher, 0)
        context = ident
    elif version == 1:
        digest = psk_digest(retained, cipher, hostnqn, subnqn)
        ident = identity(hostnqn, subnqn, cipher, 1, digest)
        context = f"{cipher:02d} {digest}"
    else:
        raise TlsKeyError(f"TLS PSK identity version {version} is not 0 or 1")
    key = _expand_label(cipher, retained, "nvme-tls-psk", context.encode())
    return TlsPsk(ident, key)
