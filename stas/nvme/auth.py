"""DH-HMAC-CHAP in-band authentication (NVMe Base 2.0 section 8.13.5, TP 8006), sans-IO.

The userspace discovery host runs this exchange over AUTH_Send / AUTH_Receive on the admin
queue when the Connect response asks for authentication. Nothing here does I/O: ``DhchapHost``
turns received payloads into payloads to send, and the message classes encode/decode the
AUTH_Send/AUTH_Receive data. The crypto is hashlib/hmac and, for the FFDHE groups (RFC 7919),
Python integers: pow() is constant enough for a discovery connection made now and then.

Formulas (as the Linux host and nvmet compute them):
- secret ``DHHC-1:hh:base64(key || CRC-32 LE):``; hh 00 = used as is, 01/02/03 = transformed
  with SHA-256/384/512: ``Kt = HMAC_hh(key, NQN || "NVMe-over-Fabrics")`` (host key with the
  host NQN, controller key with the subsystem NQN);
- with a DH group, ``Ca = HMAC_H(H(g^xy mod p), C)``, else ``Ca = C``;
- host response ``R1 = HMAC_H(Kt_host, Ca1 || S1 LE32 || T LE16 || SC_C || "HostHost" ||
  HostNQN || 0 || SubNQN)``; controller response ``R2 = HMAC_H(Kt_ctrl, Ca2 || S2 || T ||
  SC_C || "Controller" || SubNQN || 0 || HostNQN)``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import hmac
import os
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs

from stas.nvme.commands import (  # noqa: F401  (re-exported: part of the auth protocol)
    CONNECT_AUTHREQ_ASCR,
    CONNECT_AUTHREQ_ATR,
    auth_required,
)
from stas.nvme.errors import ProtocolError

# AUTH_Send/AUTH_Receive command fields for DH-HMAC-CHAP (SECP and SPSP0/SPSP1).
SECP_DHCHAP = 0xE9
SPSP0 = 0x01
SPSP1 = 0x01
AUTH_ID_DHCHAP = 0x01  # protocol descriptor AUTHID
# Connect response DW0: authentication transaction required / secure channel required.


def auth_cdw10() -> int:
    """CDW10 of AUTH_Send (fctype 0x05) and AUTH_Receive (0x06): SPSP0, SPSP1, SECP;
    CDW11 is the transfer (Send) or allocation (Receive) length in bytes."""
    return (SPSP0 << 8) | (SPSP1 << 16) | (SECP_DHCHAP << 24)


TRANSFORM_SUFFIX = b"NVMe-over-Fabrics"


class AuthType(enum.IntEnum):
    COMMON = 0x00  # the Negotiate message
    DHCHAP = 0x01


class MessageId(enum.IntEnum):
    NEGOTIATE = 0x00
    CHALLENGE = 0x01
    REPLY = 0x02
    SUCCESS1 = 0x03
    SUCCESS2 = 0x04
    FAILURE2 = 0xF0  # host -> controller
    FAILURE1 = 0xF1  # controller -> host


class HashId(enum.IntEnum):
    SHA256 = 0x01
    SHA384 = 0x02
    SHA512 = 0x03

    @property
    def digest(self) -> str:
        return {1: "sha256", 2: "sha384", 3: "sha512"}[self.value]

    @property
    def length(self) -> int:
        return {1: 32, 2: 48, 3: 64}[self.value]


class DhGroup(enum.IntEnum):
    NULL = 0x00
    FFDHE2048 = 0x01
    FFDHE3072 = 0x02
    FFDHE4096 = 0x03
    FFDHE6144 = 0x04
    FFDHE8192 = 0x05

    @property
    def bits(self) -> int:
        return {0: 0, 1: 2048, 2: 3072, 3: 4096, 4: 6144, 5: 8192}[self.value]

    @property
    def value_length(self) -> int:
        """Bytes of a public value (and of the shared secret) in this group."""
        return self.bits // 8


class FailureReason(enum.IntEnum):
    """Reason code explanations (the reason code itself is always 0x01, 'failed')."""

    FAILED = 0x01
    NOT_USABLE = 0x02
    CONCAT_MISMATCH = 0x03
    HASH_UNUSABLE = 0x04
    DHGROUP_UNUSABLE = 0x05
    INCORRECT_PAYLOAD = 0x06
    INCORRECT_MESSAGE = 0x07


class AuthError(Exception):
    """Authentication did not succeed; the message says why (never holds a secret).

    ``reason`` is what the host tells the controller in a Failure2 message."""

    def __init__(self, message: str, reason: FailureReason = FailureReason.FAILED) -> None:
        super().__init__(message)
        self.reason = reason


# --- secrets ---------------------------------------------------------------------------------

_SECRET = re.compile(r"DHHC-1:(0[0-3]):([A-Za-z0-9+/]+={0,2}):")
_KEY_SIZES = {0: (32, 48, 64), 1: (32,), 2: (48,), 3: (64,)}


@attrs.frozen
class DhchapSecret:
    """A parsed DHHC-1 secret; ``key`` never appears in repr."""

    key: bytes = attrs.field(repr=False)
    transform: int = 0  # 0: none, else the HashId that transforms it

    @classmethod
    def parse(cls, text: str, what: str = "DH-HMAC-CHAP secret") -> DhchapSecret:
        """Parse ``DHHC-1:hh:<base64>:`` as the kernel does (size per hh, CRC-32 checked)."""
        m = _SECRET.fullmatch(text) if isinstance(text, str) else None
        if m is None:
            raise AuthError(f"{what} is not of the form DHHC-1:0N:<base64>:")
        try:
            raw = base64.b64decode(m[2], validate=True)
        except (binascii.Error, ValueError):
            raise AuthError(f"{what}: invalid base64") from None
        transform, size = int(m[1]), len(raw) - 4
        if size not in _KEY_SIZES[transform]:
            sizes = "/".join(map(str, _KEY_SIZES[transform]))
            raise AuthError(f"{what}: a DHHC-1:{m[1]} key is {sizes} bytes, not {size}")
        if zlib.crc32(raw[:size]).to_bytes(4, "little") != raw[size:]:
            raise AuthError(f"{what}: CRC-32 mismatch (mistyped?)")
        return cls(raw[:size], transform)

    def transformed(self, nqn: str) -> bytes:
        """The HMAC key for responses: the key itself, or HMAC(key, NQN || suffix)."""
        if self.transform == 0:
            return self.key
        digest = HashId(self.transform).digest
        return hmac.new(self.key, nqn.encode() + TRANSFORM_SUFFIX, digest).digest()

    def encode(self) -> str:
        """Back to the DHHC-1 text form (for tests and tools)."""
        crc = zlib.crc32(self.key).to_bytes(4, "little")
        return f"DHHC-1:{self.transform:02d}:{base64.b64encode(self.key + crc).decode()}:"


# --- FFDHE groups (RFC 7919) -----------------------------------------------------------------

# p = 2^b - 2^(b-64) + (floor(2^(b-130) * e) + X) * 2^64 - 1, g = 2 (RFC 7919 appendix A).
_FFDHE_X = {2048: 560316, 3072: 2625351, 4096: 5736041, 6144: 15705020, 8192: 10965728}


def _e_times_power_of_two(n: int) -> int:
    """floor(2^n * e) from the series sum 1/k!, with 64 guard bits (exact for these n)."""
    guard = 64
    term = total = 1 << (n + guard)
    k = 1
    while term:
        term //= k
        total += term
        k += 1
    return total >> guard


@functools.cache
def ffdhe_prime(bits: int) -> int:
    """The RFC 7919 safe prime of that size (computed once, checked by known answers)."""
    if bits not in _FFDHE_X:
        raise ValueError(f"no FFDHE group of {bits} bits")
    mid = _e_times_power_of_two(bits - 130) + _FFDHE_X[bits]
    return (1 << bits) - (1 << (bits - 64)) + mid * (1 << 64) - 1


def dh_public(group: DhGroup, private: int) -> bytes:
    p = ffdhe_prime(group.bits)
    return pow(2, private, p).to_bytes(group.value_length, "big")


def dh_shared(group: DhGroup, private: int, peer_public: bytes) -> bytes:
    """g^xy mod p, padded to the group size; a degenerate peer value is refused."""
    p = ffdhe_prime(group.bits)
    if len(peer_public) != group.value_length:
        raise AuthError(
            f"DH value is {len(peer_public)} bytes, {group.name} needs {group.value_length}",
            FailureReason.INCORRECT_PAYLOAD,
        )
    y = int.from_bytes(peer_public, "big")
    if not 1 < y < p - 1:
        raise AuthError("controller's DH value is out of range", FailureReason.INCORRECT_PAYLOAD)
    return pow(y, private, p).to_bytes(group.value_length, "big")


# --- responses -------------------------------------------------------------------------------


def augmented_challenge(hash_id: HashId, session_key: bytes, challenge: bytes) -> bytes:
    """Ca = HMAC(H(session key), C); without DH (empty session key) C itself."""
    if not session_key:
        return challenge
    hashed = hashlib.new(hash_id.digest, session_key).digest()
    return hmac.new(hashed, challenge, hash_id.digest).digest()


def _response(
    hash_id: HashId,
    key: bytes,
    challenge: bytes,
    seqnum: int,
    tid: int,
    sc_c: int,
    label: bytes,
    first_nqn: str,
    second_nqn: str,
) -> bytes:
    mac = hmac.new(key, challenge, hash_id.digest)
    mac.update(struct.pack("<IHB", seqnum, tid, sc_c))
    mac.update(label + first_nqn.encode() + b"\0" + second_nqn.encode())
    return mac.digest()


def host_response(
    hash_id: HashId, key: bytes, challenge: bytes, seqnum: int, tid: int,
    hostnqn: str, subnqn: str, sc_c: int = 0,
) -> bytes:  # fmt: skip
    """R1: what the host proves with its (transformed) key over the augmented C1."""
    return _response(hash_id, key, challenge, seqnum, tid, sc_c, b"HostHost", hostnqn, subnqn)


def ctrl_response(
    hash_id: HashId, key: bytes, challenge: bytes, seqnum: int, tid: int,
    hostnqn: str, subnqn: str, sc_c: int = 0,
) -> bytes:  # fmt: skip
    """R2: what the controller proves with its (transformed) key over the augmented C2."""
    return _response(hash_id, key, challenge, seqnum, tid, sc_c, b"Controller", subnqn, hostnqn)


# --- messages --------------------------------------------------------------------------------

MAX_MESSAGE = 4096 + 64  # the largest: a Reply with SHA-512 and an ffdhe8192 value (1168 B)
_HDR = struct.Struct("<BBHH")  # auth_type, auth_id, reserved, t_id
_DESCRIPTOR_LEN = 64


def _header(data: bytes, auth_type: AuthType, auth_id: MessageId, size: int) -> int:
    """Checks the common header and minimum size; returns the transaction id."""
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"auth message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    if len(data) < size:
        raise ProtocolError(f"{auth_id.name} message is {len(data)} bytes, needs {size}")
    kind, ident, _rsvd, tid = _HDR.unpack_from(data)
    if (kind, ident) != (auth_type, auth_id):
        raise ProtocolError(
            f"expected {auth_id.name} (type {auth_type:#04x} id {auth_id:#04x}), "
            f"got type {kind:#04x} id {ident:#04x}"
        )
    return int(tid)


_Id = TypeVar("_Id", bound=enum.IntEnum)


def _ids(raw: Sequence[int], kind: type[_Id], what: str) -> tuple[_Id, ...]:
    try:
        return tuple(kind(i) for i in raw)
    except ValueError:
        raise ProtocolError(f"unknown {what} id in {list(raw)}") from None


@attrs.frozen
class Negotiate:
    """AUTH_Negotiate (host -> controller): the hashes and DH groups the host accepts."""

    tid: int
    hash_ids: tuple[HashId, ...] = (HashId.SHA256, HashId.SHA384, HashId.SHA512)
    dhgroups: tuple[DhGroup, ...] = tuple(DhGroup)
    sc_c: int = 0

    def encode(self) -> bytes:
        if not 1 <= len(self.hash_ids) <= 30 or not 1 <= len(self.dhgroups) <= 30:
            raise ValueError("1..30 hash ids and 1..30 DH groups")
        ids = bytes(self.hash_ids).ljust(30, b"\0") + bytes(self.dhgroups).ljust(30, b"\0")
        head = _HDR.pack(AuthType.COMMON, MessageId.NEGOTIATE, 0, self.tid)
        desc = bytes([AUTH_ID_DHCHAP, 0, len(self.hash_ids), len(self.dhgroups)]) + ids
        return head + bytes([self.sc_c, 1]) + desc

    @classmethod
    def decode(cls, data: bytes) -> Negotiate:
        tid = _header(data, AuthType.COMMON, MessageId.NEGOTIATE, 8 + _DESCRIPTOR_LEN)
        sc_c, napd = data[6], data[7]
        if napd < 1 or len(data) < 8 + napd * _DESCRIPTOR_LEN:
            raise ProtocolError(f"NEGOTIATE announces {napd} protocol descriptors, has less")
        authid, _r, halen, dhlen = data[8:12]
        if authid != AUTH_ID_DHCHAP or not 1 <= halen <= 30 or not 1 <= dhlen <= 30:
            raise ProtocolError(f"NEGOTIATE descriptor authid {authid} halen {halen} dhlen {dhlen}")
        hashes = _ids(data[12 : 12 + halen], HashId, "hash")
        groups = _ids(data[42 : 42 + dhlen], DhGroup, "DH group")
        return cls(tid, hashes, groups, sc_c)


@attrs.frozen
class Challenge:
    """DH-HMAC-CHAP_Challenge (controller -> host)."""

    tid: int
    hash_id: HashId
    dhgroup: DhGroup
    seqnum: int
    challenge: bytes
    dh_value: bytes = b""

    def encode(self) -> bytes:
        head = _HDR.pack(AuthType.DHCHAP, MessageId.CHALLENGE, 0, self.tid)
        fields = struct.pack(
            "<BBBBHI", len(self.challenge), 0, self.hash_id, self.dhgroup,
            len(self.dh_value), self.seqnum,
        )  # fmt: skip
        return head + fields + self.challenge + self.dh_value

    @classmethod
    def decode(cls, data: bytes) -> Challenge:
        tid = _header(data, AuthType.DHCHAP, MessageId.CHALLENGE, 16)
        hl, _r, hashid, dhgid, dhvlen, seqnum = struct.unpack_from("<BBBBHI", data, 6)
        hash_id = _ids([hashid], HashId, "hash")[0]
        group = _ids([dhgid], DhGroup, "DH group")[0]
        if hl != hash_id.length:
            raise ProtocolError(f"CHALLENGE hl {hl} does not match {hash_id.name}")
        if dhvlen != group.value_length:
            raise ProtocolError(f"CHALLENGE dhvlen {dhvlen} does not match {group.name}")
        if len(data) < 16 + hl + dhvlen:
            raise ProtocolError(f"CHALLENGE is {len(data)} bytes, needs {16 + hl + dhvlen}")
        return cls(
            tid, hash_id, group, seqnum, data[16 : 16 + hl], data[16 + hl : 16 + hl + dhvlen]
        )


@attrs.frozen
class Reply:
    """DH-HMAC-CHAP_Reply (host -> controller): R1, C2 when bidirectional, host DH value."""

    tid: int
    response: bytes
    seqnum: int = 0  # S2; 0 when the host does not authenticate the controller
    ctrl_challenge: bytes | None = None
    dh_value: bytes = b""

    def encode(self) -> bytes:
        hl = len(self.response)
        c2 = self.ctrl_challenge if self.ctrl_challenge is not None else bytes(hl)
        if len(c2) != hl:
            raise ValueError("the controller challenge must be as long as the response")
        head = _HDR.pack(AuthType.DHCHAP, MessageId.REPLY, 0, self.tid)
        cvalid = 1 if self.ctrl_challenge is not None else 0
        fields = struct.pack("<BBBBHI", hl, 0, cvalid, 0, len(self.dh_value), self.seqnum)
        return head + fields + self.response + c2 + self.dh_value

    @classmethod
    def decode(cls, data: bytes) -> Reply:
        tid = _header(data, AuthType.DHCHAP, MessageId.REPLY, 16)
        hl, _r, cvalid, _r3, dhvlen, seqnum = struct.unpack_from("<BBBBHI", data, 6)
        if hl not in (32, 48, 64):
            raise ProtocolError(f"REPLY hl {hl} is no SHA-2 length")
        if len(data) < 16 + 2 * hl + dhvlen:
            raise ProtocolError(f"REPLY is {len(data)} bytes, needs {16 + 2 * hl + dhvlen}")
        c2 = data[16 + hl : 16 + 2 * hl] if cvalid & 1 else None
        dh = data[16 + 2 * hl : 16 + 2 * hl + dhvlen]
        return cls(tid, data[16 : 16 + hl], seqnum, c2, dh)


@attrs.frozen
class Success1:
    """DH-HMAC-CHAP_Success1 (controller -> host): R2 when the host asked for it."""

    tid: int
    hl: int
    response: bytes | None = None

    def encode(self) -> bytes:
        head = _HDR.pack(AuthType.DHCHAP, MessageId.SUCCESS1, 0, self.tid)
        rval = self.response if self.response is not None else bytes(self.hl)
        if len(rval) != self.hl:
            raise ValueError("the response must be hl bytes")
        flags = 1 if self.response is not None else 0
        return head + bytes([self.hl, 0, flags]) + bytes(7) + rval

    @classmethod
    def decode(cls, data: bytes) -> Success1:
        tid = _header(data, AuthType.DHCHAP, MessageId.SUCCESS1, 16)
        hl, rvalid = data[6], data[8] & 1
        if hl not in (32, 48, 64):
            raise ProtocolError(f"SUCCESS1 hl {hl} is no SHA-2 length")
        if rvalid and len(data) < 16 + hl:
            raise ProtocolError(f"SUCCESS1 with a response is {len(data)} bytes, needs {16 + hl}")
        return cls(tid, hl, data[16 : 16 + hl] if rvalid else None)


@attrs.frozen
class Success2:
    """DH-HMAC-CHAP_Success2 (host -> controller): the controller's response was right."""

    tid: int

    def encode(self) -> bytes:
        return _HDR.pack(AuthType.DHCHAP, MessageId.SUCCESS2, 0, self.tid) + bytes(10)

    @classmethod
    def decode(cls, data: bytes) -> Success2:
        return cls(_header(data, AuthType.DHCHAP, MessageId.SUCCESS2, 16))


@attrs.frozen
class Failure:
    """AUTH_Failure1 (controller -> host) or AUTH_Failure2 (host -> controller).

    Common authentication messages: AUTH_Type 0x00, as nvmet and the Linux host send them
    (seen on 6.12); a type of 0x01 is accepted when decoding too."""

    tid: int
    explanation: int = FailureReason.FAILED
    from_host: bool = True  # Failure2
    reason: int = 0x01

    @property
    def message_id(self) -> MessageId:
        return MessageId.FAILURE2 if self.from_host else MessageId.FAILURE1

    def encode(self) -> bytes:
        head = _HDR.pack(AuthType.COMMON, self.message_id, 0, self.tid)
        return head + bytes([self.reason, self.explanation])

    @classmethod
    def decode(cls, data: bytes) -> Failure:
        kind = AuthType.DHCHAP if data[:1] == b"\x01" else AuthType.COMMON
        ident = MessageId.FAILURE2 if data[1:2] == b"\xf0" else MessageId.FAILURE1
        tid = _header(data, kind, ident, 8)
        return cls(tid, data[7], ident is MessageId.FAILURE2, data[6])

    def describe(self) -> str:
        try:
            name = FailureReason(self.explanation).name.lower().replace("_", " ")
        except ValueError:
            name = f"explanation {self.explanation:#04x}"
        return f"authentication failed ({name})"


Message = Negotiate | Challenge | Reply | Success1 | Success2 | Failure
_DECODERS: dict[tuple[int, int], Callable[[bytes], Message]] = {
    (AuthType.COMMON, MessageId.NEGOTIATE): Negotiate.decode,
    (AuthType.DHCHAP, MessageId.CHALLENGE): Challenge.decode,
    (AuthType.DHCHAP, MessageId.REPLY): Reply.decode,
    (AuthType.DHCHAP, MessageId.SUCCESS1): Success1.decode,
    (AuthType.DHCHAP, MessageId.SUCCESS2): Success2.decode,
    (AuthType.DHCHAP, MessageId.FAILURE1): Failure.decode,
    (AuthType.DHCHAP, MessageId.FAILURE2): Failure.decode,
    (AuthType.COMMON, MessageId.FAILURE1): Failure.decode,
    (AuthType.COMMON, MessageId.FAILURE2): Failure.decode,
}


def decode_message(data: bytes) -> Message:
    """Any auth message by its header; ProtocolError for anything else."""
    if len(data) < 2 or (data[0], data[1]) not in _DECODERS:
        head = data[:2].hex() or "empty"
        raise ProtocolError(f"not a DH-HMAC-CHAP message (type/id {head})")
    return _DECODERS[data[0], data[1]](bytes(data))


# --- the host side of one exchange -----------------------------------------------------------


_Expected = TypeVar("_Expected", Challenge, Success1)  # what DhchapHost waits for


class DhchapHost:
    """One DH-HMAC-CHAP transaction on one queue, host side.

    Wire order for the caller (session.py): AUTH_Send(``negotiate()``), AUTH_Receive ->
    ``reply_to(challenge)`` -> AUTH_Send, AUTH_Receive -> ``finish(success1)``; when it
    returns bytes (bidirectional: Success2), AUTH_Send them. On ``AuthError`` send
    ``failure2(err)`` (when the controller is still waiting) and fail the connection.
    """

    def __init__(
        self,
        *,
        hostnqn: str,
        subnqn: str,
        host_secret: DhchapSecret,
        ctrl_secret: DhchapSecret | None = None,
        tid: int = 0,
        hash_ids: tuple[HashId, ...] = (HashId.SHA256, HashId.SHA384, HashId.SHA512),
        dhgroups: tuple[DhGroup, ...] = tuple(DhGroup),
        randbytes: Callable[[int], bytes] = os.urandom,  # secrets' own source; secrets
        # itself would load OpenSSL (hmac) in every stafd, DH-HMAC-CHAP or not
    ) -> None:
        self.hostnqn, self.subnqn, self.tid = hostnqn, subnqn, tid
        self.host_secret, self.ctrl_secret = host_secret, ctrl_secret
        self.hash_ids, self.dhgroups = hash_ids, dhgroups
        self.randbytes = randbytes
        self.hash_id: HashId | None = None
        self._expected_r2: bytes | None = None
        self.seqnum2 = 0

    def negotiate(self) -> bytes:
        return Negotiate(self.tid, self.hash_ids, self.dhgroups).encode()

    def reply_to(self, data: bytes) -> bytes:
        """The Reply to a Challenge (Failure1 or a bad message raise AuthError)."""
        msg = self._expect(data, Challenge)
        if msg.hash_id not in self.hash_ids:
            raise AuthError(
                f"controller chose {msg.hash_id.name}, not offered", FailureReason.HASH_UNUSABLE
            )
        if msg.dhgroup not in self.dhgroups:
            raise AuthError(
                f"controller chose {msg.dhgroup.name}, not offered", FailureReason.DHGROUP_UNUSABLE
            )
        self.hash_id = h = msg.hash_id
        session_key, our_value = b"", b""
        if msg.dhgroup != DhGroup.NULL:
            private = int.from_bytes(self.randbytes(64), "big") | (1 << 511)  # 512-bit exponent
            our_value = dh_public(msg.dhgroup, private)
            session_key = dh_shared(msg.dhgroup, private, msg.dh_value)
        ca1 = augmented_challenge(h, session_key, msg.challenge)
        key = self.host_secret.transformed(self.hostnqn)
        r1 = host_response(h, key, ca1, msg.seqnum, self.tid, self.hostnqn, self.subnqn)
        c2 = None
        if self.ctrl_secret is not None:
            c2 = self.randbytes(h.length)
            self.seqnum2 = int.from_bytes(self.randbytes(4), "little") or 1
            ckey = self.ctrl_secret.transformed(self.subnqn)
            ca2 = augmented_challenge(h, session_key, c2)
            self._expected_r2 = ctrl_response(
                h, ckey, ca2, self.seqnum2, self.tid, self.hostnqn, self.subnqn
            )
        return Reply(self.tid, r1, self.seqnum2, c2, our_value).encode()

    def finish(self, data: bytes) -> bytes | None:
        """Check Success1; Success2 bytes to send when bidirectional, else None."""
        msg = self._expect(data, Success1)
        if self._expected_r2 is None:
            return None
        if msg.response is None or not hmac.compare_digest(msg.response, self._expected_r2):
            raise AuthError("the controller's DH-HMAC-CHAP response is wrong (dhchap-ctrl-secret?)")
        return Success2(self.tid).encode()

    def failure2(self, err: AuthError) -> bytes:
        return Failure(self.tid, err.reason).encode()

    def _expect(self, data: bytes, kind: type[_Expected]) -> _Expected:
        try:
            msg = decode_message(data)
        except ProtocolError as exc:
            raise AuthError(
                f"bad authentication message: {exc}", FailureReason.INCORRECT_PAYLOAD
            ) from None
        if isinstance(msg, Failure):
            raise AuthError(f"controller refused: {msg.describe()}")
        if not isinstance(msg, kind):
            raise AuthError(
                f"expected {kind.__name__}, got {type(msg).__name__}",
                FailureReason.INCORRECT_MESSAGE,
            )
        if msg.tid != self.tid:
            raise AuthError(
                f"transaction id {msg.tid} is not ours ({self.tid})",
                FailureReason.INCORRECT_PAYLOAD,
            )
        return msg
