"""DH-HMAC-CHAP (stas.nvme.auth): secrets, key transform, FFDHE, responses, messages, exchange.

Known answers come from outside this code: the transformed keys are what nvme-cli 2.3
(libnvme + OpenSSL) prints for ``gen-dhchap-key --secret --hmac --nqn``; the FFDHE primes'
SHA-256 digests are those of OpenSSL 3's ``genpkey -genparam -pkeyopt group:ffdheN``; the
response layouts are built here byte by byte from NVMe Base 2.0 section 8.13.5.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stas.nvme import auth
from stas.nvme.auth import (
    AuthError,
    Challenge,
    DhchapHost,
    DhchapSecret,
    DhGroup,
    Failure,
    FailureReason,
    HashId,
    Negotiate,
    Reply,
    Success1,
    Success2,
    decode_message,
)
from stas.nvme.errors import ProtocolError

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:5e6f7a8b-0000-4000-8000-00000000a0f1"
SUBNQN = "vault"
NQN = "nqn.2014-08.org.nvmexpress:uuid:test"


def text_key(key: bytes, hh: int = 0) -> str:
    crc = zlib.crc32(key).to_bytes(4, "little")
    return f"DHHC-1:{hh:02d}:{base64.b64encode(key + crc).decode()}:"


# --- secrets and the key transform ------------------------------------------------------------

# nvme gen-dhchap-key --secret=<00 01 02 ...> --key-length=L --hmac=M --nqn=NQN (nvme-cli 2.3)
NVME_CLI = {
    0: "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:",
    1: "DHHC-1:01:WulleCBkG4oCs0iIC3Cit9gBDCLWiZ9PNXuhqytWkBIZkvGy:",
    2: "DHHC-1:02:JzC2BNNCN092uBY9oK1bbG/xrkLudbjqzPRjAtH00YqVJN1+2TpCZUPYxrwS09Qxpo/5Jw==:",
    3: "DHHC-1:03:d9FmVEvkZD5WUqUkzVMj3JFzwudZt1EtUNK4zK6+E9Dd42mroGA4ub4Yju0aNPtAr2w0xZ"
    "FyCxz8d1Q12rImDko3x34=:",
}


@pytest.mark.parametrize("hh", [1, 2, 3])
def test_transformed_key_matches_nvme_cli(hh: int) -> None:
    size = {1: 32, 2: 48, 3: 64}[hh]
    secret = DhchapSecret(bytes(range(size)), hh)
    assert secret.transformed(NQN) == DhchapSecret.parse(NVME_CLI[hh]).key


def test_untransformed_secret_is_the_key_itself() -> None:
    secret = DhchapSecret.parse(NVME_CLI[0])
    assert secret == DhchapSecret(bytes(range(32)), 0)
    assert secret.transformed(NQN) == bytes(range(32))
    assert secret.encode() == NVME_CLI[0]


BAD_SECRETS = [
    ("nonsense", "is not of the form"),
    ("DHHC-1:04:" + base64.b64encode(bytes(36)).decode() + ":", "is not of the form"),
    ("DHHC-1:00:" + base64.b64encode(b"k" * 36).decode() + ":", "CRC-32 mismatch"),
    (text_key(bytes(40)), "is 32/48/64 bytes, not 40"),
    (text_key(bytes(32), 3), "a DHHC-1:03 key is 64 bytes, not 32"),
    ("DHHC-1:00:abc:", "invalid base64"),
]


@pytest.mark.parametrize(("text", "why"), BAD_SECRETS)
def test_bad_secrets_are_refused_without_echoing_them(text: str, why: str) -> None:
    with pytest.raises(AuthError) as info:
        DhchapSecret.parse(text, "dhchap-secret")
    assert why in str(info.value) and str(info.value).startswith("dhchap-secret")
    assert text not in str(info.value)


def test_secret_repr_hides_the_key() -> None:
    assert "AAEC" not in repr(DhchapSecret.parse(NVME_CLI[0]))
    assert bytes(range(32)).hex() not in repr(DhchapSecret.parse(NVME_CLI[0]))


@given(st.sampled_from([(0, 32), (0, 48), (0, 64), (1, 32), (2, 48), (3, 64)]), st.data())
def test_secret_round_trips(shape: tuple[int, int], data: st.DataObject) -> None:
    hh, size = shape
    key = data.draw(st.binary(min_size=size, max_size=size))
    assert DhchapSecret.parse(text_key(key, hh)) == DhchapSecret(key, hh)


@given(st.text(max_size=120))
def test_secret_parser_gives_a_secret_or_auth_error(text: str) -> None:
    try:
        secret = DhchapSecret.parse(text)
    except AuthError:
        return
    assert len(secret.key) in (32, 48, 64)


# --- FFDHE and Diffie-Hellman -------------------------------------------------------------------

# SHA-256 of each RFC 7919 prime (big-endian, full width) as OpenSSL 3.0 ships them.
FFDHE_SHA256 = {
    2048: "9cd3b7f336872f46c09428d1bbc19877a4d440512cda8d1c1cf0cd6e33698966",
    3072: "0eaf67db3a839156d5013494a5318a772b5697d270d721f37f092efc69ea5a17",
    4096: "4648414224ac881b3d0dc59b466f96d06a558278776807797ecf1f66ff397b3e",
    6144: "227ac9066b3ddd9e193670cda2388fa884f65ba0cf98b742d1fe77a6687c79c7",
    8192: "770b14efaf6f049929c523113b3fa99a8d11dab1b18af3609590122075d19833",
}


@pytest.mark.parametrize("bits", sorted(FFDHE_SHA256))
def test_ffdhe_primes_match_openssl(bits: int) -> None:
    p = auth.ffdhe_prime(bits)
    assert p.bit_length() == bits
    assert hashlib.sha256(p.to_bytes(bits // 8, "big")).hexdigest() == FFDHE_SHA256[bits]
    assert hex(p).startswith("0xffffffffffffffffadf85458a2bb4a9a")  # RFC 7919's common head


def test_dh_agrees_and_refuses_degenerate_values() -> None:
    g = DhGroup.FFDHE2048
    a, b = 2**300 + 12345, 2**400 + 67890
    shared = auth.dh_shared(g, a, auth.dh_public(g, b))
    assert shared == auth.dh_shared(g, b, auth.dh_public(g, a))
    assert len(shared) == 256
    p = auth.ffdhe_prime(2048)
    for bad in (0, 1, p - 1, p):
        with pytest.raises(AuthError, match="out of range"):
            auth.dh_shared(g, a, bad.to_bytes(256, "big"))
    with pytest.raises(AuthError, match="DH value is 255 bytes, FFDHE2048 needs 256"):
        auth.dh_shared(g, a, bytes(255))


# --- responses (layout per the spec, built by hand here) ----------------------------------------


def test_host_and_controller_responses_follow_the_spec_layout() -> None:
    key, challenge = bytes(range(48)), bytes(range(100, 148))
    seq, tid = 0x01020304, 0x0506
    r1_msg = (
        challenge
        + bytes([4, 3, 2, 1, 6, 5, 0])
        + b"HostHost"
        + HOSTNQN.encode()
        + b"\0"
        + SUBNQN.encode()
    )
    r2_msg = (
        challenge
        + bytes([4, 3, 2, 1, 6, 5, 0])
        + b"Controller"
        + SUBNQN.encode()
        + b"\0"
        + HOSTNQN.encode()
    )
    r1 = auth.host_response(HashId.SHA384, key, challenge, seq, tid, HOSTNQN, SUBNQN)
    r2 = auth.ctrl_response(HashId.SHA384, key, challenge, seq, tid, HOSTNQN, SUBNQN)
    assert r1 == hmac.new(key, r1_msg, "sha384").digest()
    assert r2 == hmac.new(key, r2_msg, "sha384").digest()


def test_augmented_challenge_hashes_the_session_key_first() -> None:
    c, skey = b"c" * 32, b"s" * 256
    expect = hmac.new(hashlib.sha256(skey).digest(), c, "sha256").digest()
    assert auth.augmented_challenge(HashId.SHA256, skey, c) == expect
    assert auth.augmented_challenge(HashId.SHA256, b"", c) == c  # NULL group: C as is


# --- messages -----------------------------------------------------------------------------------

tids = st.integers(0, 0xFFFF)
seqs = st.integers(0, 0xFFFFFFFF)
hashes = st.sampled_from(list(HashId))
groups = st.sampled_from(list(DhGroup))


@st.composite
def challenges(draw: st.DrawFn) -> Challenge:
    h, g = draw(hashes), draw(groups)
    c = draw(st.binary(min_size=h.length, max_size=h.length))
    dh = draw(st.binary(min_size=g.value_length, max_size=g.value_length))
    return Challenge(draw(tids), h, g, draw(seqs), c, dh)


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    hl = draw(hashes).length
    r = draw(st.binary(min_size=hl, max_size=hl))
    c2 = draw(st.none() | st.binary(min_size=hl, max_size=hl))
    return Reply(draw(tids), r, draw(seqs), c2, draw(st.binary(max_size=1024)))


@st.composite
def success1s(draw: st.DrawFn) -> Success1:
    hl = draw(hashes).length
    return Success1(draw(tids), hl, draw(st.none() | st.binary(min_size=hl, max_size=hl)))


messages = st.one_of(
    st.builds(
        Negotiate,
        tids,
        st.lists(hashes, min_size=1, max_size=3, unique=True).map(tuple),
        st.lists(groups, min_size=1, max_size=6, unique=True).map(tuple),
        st.integers(0, 255),
    ),
    challenges(),
    replies(),
    success1s(),
    st.builds(Success2, tids),
    st.builds(Failure, tids, st.integers(0, 255), st.booleans(), st.integers(0, 255)),
)


@given(messages)
def test_every_message_round_trips(msg: object) -> None:
    assert decode_message(msg.encode()) == msg  # type: ignore[attr-defined]


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_decoder_gives_a_message_or_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_message(data)


@given(messages, st.integers(0, 400), st.binary(max_size=8))
@settings(max_examples=500)
def test_truncated_or_extended_messages_decode_or_fail_cleanly(
    msg: object, cut: int, tail: bytes
) -> None:
    raw = msg.encode()  # type: ignore[attr-defined]
    for variant in (raw[:cut], raw + tail):
        with contextlib.suppress(ProtocolError):
            decode_message(variant)


def test_negotiate_layout() -> None:
    raw = Negotiate(7).encode()
    assert raw[:8] == bytes([0x00, 0x00, 0, 0, 7, 0, 0, 1])
    assert raw[8:12] == bytes([0x01, 0, 3, 6])
    assert raw[12:15] == bytes([1, 2, 3]) and raw[42:48] == bytes([0, 1, 2, 3, 4, 5])
    assert len(raw) == 8 + 64


def test_challenge_fields_must_agree_with_the_hash_and_group() -> None:
    good = Challenge(1, HashId.SHA256, DhGroup.NULL, 5, bytes(32)).encode()
    bad_hl = good[:6] + bytes([48]) + good[7:]
    with pytest.raises(ProtocolError, match="hl 48 does not match SHA256"):
        decode_message(bad_hl)
    with pytest.raises(ProtocolError, match="unknown hash id"):
        decode_message(good[:8] + bytes([9]) + good[9:])
    with pytest.raises(ProtocolError, match="needs 48"):
        decode_message(good[:40])


# --- the host side of an exchange, against a controller built from the spec ---------------------


class Controller:
    """Test-side controller: checks R1 and answers R2 as nvmet would."""

    def __init__(self, host_key: DhchapSecret, ctrl_key: DhchapSecret | None, h: HashId,
                 g: DhGroup) -> None:  # fmt: skip
        self.host_key, self.ctrl_key, self.h, self.g = host_key, ctrl_key, h, g
        self.private = 2**500 + 987654321
        self.c1 = bytes(range(self.h.length))
        self.s1 = 41

    def challenge(self, negotiate: bytes) -> bytes:
        msg = decode_message(negotiate)
        assert isinstance(msg, Negotiate) and self.h in msg.hash_ids and self.g in msg.dhgroups
        self.tid = msg.tid
        dh = auth.dh_public(self.g, self.private) if self.g else b""
        return Challenge(self.tid, self.h, self.g, self.s1, self.c1, dh).encode()

    def success1(self, reply: bytes) -> bytes:
        msg = decode_message(reply)
        assert isinstance(msg, Reply)
        skey = auth.dh_shared(self.g, self.private, msg.dh_value) if self.g else b""
        ca1 = auth.augmented_challenge(self.h, skey, self.c1)
        k = self.host_key.transformed(HOSTNQN)
        want = auth.host_response(self.h, k, ca1, self.s1, self.tid, HOSTNQN, SUBNQN)
        if msg.response != want:
            return Failure(self.tid, FailureReason.FAILED, from_host=False).encode()
        r2 = None
        if msg.ctrl_challenge is not None and self.ctrl_key is not None:
            ca2 = auth.augmented_challenge(self.h, skey, msg.ctrl_challenge)
            ck = self.ctrl_key.transformed(SUBNQN)
            r2 = auth.ctrl_response(self.h, ck, ca2, msg.seqnum, self.tid, HOSTNQN, SUBNQN)
        return Success1(self.tid, self.h.length, r2).encode()


HOST_KEY = DhchapSecret(bytes(range(48)), 2)
CTRL_KEY = DhchapSecret(bytes(range(64, 96)), 0)
OTHER = DhchapSecret(b"x" * 32, 1)


def run_exchange(
    ctrl: Controller, host_key: DhchapSecret, ctrl_key: DhchapSecret | None
) -> bytes | None:
    host = DhchapHost(
        hostnqn=HOSTNQN, subnqn=SUBNQN, host_secret=host_key, ctrl_secret=ctrl_key, tid=3
    )
    reply = host.reply_to(ctrl.challenge(host.negotiate()))
    return host.finish(ctrl.success1(reply))


@pytest.mark.parametrize("h", list(HashId))
@pytest.mark.parametrize("g", [DhGroup.NULL, DhGroup.FFDHE2048])
def test_unidirectional_exchange(h: HashId, g: DhGroup) -> None:
    assert run_exchange(Controller(HOST_KEY, None, h, g), HOST_KEY, None) is None


@pytest.mark.parametrize("g", [DhGroup.NULL, DhGroup.FFDHE3072])
def test_bidirectional_exchange_ends_with_success2(g: DhGroup) -> None:
    out = run_exchange(Controller(HOST_KEY, CTRL_KEY, HashId.SHA512, g), HOST_KEY, CTRL_KEY)
    assert out is not None and decode_message(out) == Success2(3)


def test_wrong_host_key_is_refused_by_the_controller() -> None:
    with pytest.raises(AuthError, match=r"controller refused: authentication failed \(failed\)"):
        run_exchange(Controller(HOST_KEY, None, HashId.SHA256, DhGroup.NULL), OTHER, None)


def test_wrong_controller_key_is_refused_by_the_host() -> None:
    ctrl = Controller(HOST_KEY, OTHER, HashId.SHA256, DhGroup.FFDHE2048)
    with pytest.raises(AuthError, match="controller's DH-HMAC-CHAP response is wrong"):
        run_exchange(ctrl, HOST_KEY, CTRL_KEY)


def test_host_refuses_unoffered_choices_and_foreign_transactions() -> None:
    host = DhchapHost(
        hostnqn=HOSTNQN, subnqn=SUBNQN, host_secret=HOST_KEY, hash_ids=(HashId.SHA256,), tid=3
    )
    sha512 = Challenge(3, HashId.SHA512, DhGroup.NULL, 1, bytes(64)).encode()
    with pytest.raises(AuthError) as info:
        host.reply_to(sha512)
    assert info.value.reason == FailureReason.HASH_UNUSABLE
    assert decode_message(host.failure2(info.value)) == Failure(3, FailureReason.HASH_UNUSABLE)
    with pytest.raises(AuthError, match="transaction id 4 is not ours"):
        host.reply_to(Challenge(4, HashId.SHA256, DhGroup.NULL, 1, bytes(32)).encode())
    with pytest.raises(AuthError, match="expected Challenge, got Success2"):
        host.reply_to(Success2(3).encode())
    with pytest.raises(AuthError, match="bad authentication message"):
        host.reply_to(b"\x01\x01")


@given(st.binary(max_size=200))
def test_host_turns_any_bytes_into_a_reply_or_auth_error(data: bytes) -> None:
    host = DhchapHost(hostnqn=HOSTNQN, subnqn=SUBNQN, host_secret=HOST_KEY, tid=0)
    with contextlib.suppress(AuthError):
        host.reply_to(data)


def test_command_fields_for_session_integration() -> None:
    assert auth.auth_required(0x0001 | 1 << 17) and auth.auth_required(1 << 18)
    assert not auth.auth_required(0xFFFF)  # a CNTLID alone
    assert auth.auth_cdw10().to_bytes(4, "little") == bytes([0, 0x01, 0x01, 0xE9])


def test_failure_messages_are_common_auth_messages_as_nvmet_sends_them() -> None:
    """nvmet (6.12) answered a wrong R1 with type 0x00 id 0xf1: the decoder once refused it."""
    from_nvmet = bytes([0x00, 0xF1, 0, 0, 7, 0, 0x01, 0x01])
    assert decode_message(from_nvmet) == Failure(7, FailureReason.FAILED, from_host=False)
    assert Failure(7).encode()[:2] == bytes([0x00, 0xF0])
    legacy = bytes([0x01, 0xF1, 0, 0, 7, 0, 0x01, 0x02])
    assert decode_message(legacy) == Failure(7, FailureReason.NOT_USABLE, from_host=False)
