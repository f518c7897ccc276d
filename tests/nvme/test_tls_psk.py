"""TLS PSKs (stas.nvme.tls_psk): the interchange format, the retained PSK, identities and the
TLS PSK as libnvme computes them (its test vectors), the keyring's /proc/keys parser, and
how a request's key and keyring become serials (stas.kernel.tls)."""

from __future__ import annotations

import base64
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.kernel import keyring as kr
from stas.kernel.api import ConnectRequest
from stas.kernel.options import InvalidOption, check_keyring, check_tls_key
from stas.kernel.tls import resolve_tls
from stas.nvme.tls_psk import (
    ConfiguredPsk,
    TlsKeyError,
    TlsPsk,
    derive_tls_psk,
    format_interchange,
    hkdf_expand,
    hkdf_extract,
    identity,
    parse_interchange,
    retained_psk,
)

# libnvme's test/psk.c vectors (the same 32 bytes; 48 = those 32 + their last 16)
KEY32 = bytes.fromhex("5512dbb6737d0106f65975b773dfb011ffc344bcf442e2dd6d8bc4870b5d5b03")
KEY48 = KEY32 + KEY32[16:]
HOST, SUB = "nqn.psk-test-host", "nqn.psk-test-subsys"
B64_32 = "VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwNf9LrZ"


def test_libnvme_interchange_vectors() -> None:
    vectors = [
        (ConfiguredPsk(KEY32, 0), f"NVMeTLSkey-1:00:{B64_32}:"),
        (ConfiguredPsk(KEY32, 1), f"NVMeTLSkey-1:01:{B64_32}:"),
        (
            ConfiguredPsk(KEY48, 2),
            "NVMeTLSkey-1:02:VRLbtnN9AQb2WXW3c9+wEf/DRLz0QuLdbYvEhwtdWwP/w0S89ELi3W2LxIcLXVsDn8kXZQ==:",
        ),
    ]  # fmt: skip
    for psk, text in vectors:
        assert format_interchange(psk) == text
        assert parse_interchange(text) == psk


def test_libnvme_v1_identity_vectors() -> None:
    """The digest in the identity is computed from the retained PSK, so these also pin the
    HKDF-Expand-Label of the retained PSK ("HostNQN")."""
    one = derive_tls_psk(ConfiguredPsk(KEY32, 1), HOST, SUB)
    assert one.identity == f"NVMe1R01 {HOST} {SUB} iSbjiStwJ/1TrTvDlt2fjFmzvsytOJelidNnA+X5lEU="
    two = derive_tls_psk(ConfiguredPsk(KEY48, 2), HOST, SUB)
    digest = "QhW2+Rp6RzHlNtCslyRxMnwJ11tKKhz8JCAQpQ+XUD8f9td1VeH5h53yz2wKJG1a"
    assert two.identity == f"NVMe1R02 {HOST} {SUB} {digest}"
    assert len(one.key) == 32 and len(two.key) == 48


def test_v0_identity_is_the_kernels_lookup_string() -> None:
    """keyring.c: snprintf("NVMe%u%c%02u %s %s", psk_ver, generated ? 'G' : 'R', hmac, ...)."""
    psk = derive_tls_psk(ConfiguredPsk(KEY32, 1), HOST, SUB, version=0)
    assert psk.identity == f"NVMe0R01 {HOST} {SUB}"
    assert identity(HOST, SUB, 2) == f"NVMe0R02 {HOST} {SUB}"
    with pytest.raises(TlsKeyError):
        identity(HOST, SUB, 3)


def test_hh_00_uses_the_configured_key_and_the_length_picks_the_hash() -> None:
    assert retained_psk(ConfiguredPsk(KEY32, 0), HOST) == KEY32
    assert retained_psk(ConfiguredPsk(KEY32, 1), HOST) != KEY32
    assert ConfiguredPsk(KEY32, 0).cipher == 1 and ConfiguredPsk(KEY48, 0).cipher == 2
    v0 = derive_tls_psk(ConfiguredPsk(KEY48, 0), HOST, SUB, version=0)
    assert v0.identity.startswith("NVMe0R02 ") and len(v0.key) == 48


def test_the_psk_depends_on_host_and_subsystem() -> None:
    base = ConfiguredPsk(KEY32, 1)
    keys = {derive_tls_psk(base, h, s).key for h in (HOST, HOST + "x") for s in (SUB, SUB + "x")}
    assert len(keys) == 4


def test_hkdf_rfc5869_case_1() -> None:
    ikm = bytes([0x0B] * 22)
    salt = bytes(range(13))
    info = bytes(range(0xF0, 0xFA))
    prk = hkdf_extract("sha256", salt, ikm)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = hkdf_expand("sha256", prk, info, 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def _interchange(key: bytes, hh: str = "01", crc: bytes | None = None) -> str:
    crc = zlib.crc32(key).to_bytes(4, "little") if crc is None else crc
    return f"NVMeTLSkey-1:{hh}:{base64.b64encode(key + crc).decode()}:"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (_interchange(KEY32, crc=b"\0\0\0\0"), "bad CRC"),
        (_interchange(KEY32[:31]), "32 or 48 bytes"),
        (_interchange(KEY32 + KEY32), "32 or 48 bytes"),
        (_interchange(KEY32, hh="03"), "interchange format"),
        ("DHHC-1:01:" + _interchange(KEY32).split(":")[2] + ":", "interchange format"),
        (_interchange(KEY32)[:-1], "interchange format"),
        ("NVMeTLSkey-1:01:!!!!:", "interchange format"),
        ("NVMeTLSkey-1:01:" + "A" * 500 + ":", "interchange format"),
    ],
)
def test_bad_psks_are_refused_without_echoing_them(text: str, reason: str) -> None:
    with pytest.raises(TlsKeyError) as info:
        parse_interchange(text)
    assert reason in str(info.value)
    assert text.split(":")[-2] not in str(info.value) or len(text.split(":")) < 3


@given(
    st.binary(min_size=32, max_size=32) | st.binary(min_size=48, max_size=48),
    st.sampled_from([0, 1, 2]),
)
def test_interchange_round_trips(key: bytes, hh: int) -> None:
    psk = ConfiguredPsk(key, hh)
    assert parse_interchange(format_interchange(psk)) == psk


def _parses_or_refuses(text: str) -> None:
    """Any text is either a well-formed PSK that formats back to itself, or TlsKeyError."""
    try:
        psk = parse_interchange(text)
    except TlsKeyError:
        return
    assert len(psk.key) in (32, 48) and format_interchange(psk) == text


@given(st.text(max_size=120))
def test_the_parser_only_raises_tls_key_error(text: str) -> None:
    _parses_or_refuses(text)


@given(st.text(alphabet="NVMeTLSkey-1:0123AZaz+/=", max_size=90))
def test_the_parser_on_near_misses(text: str) -> None:
    _parses_or_refuses(text)


@given(st.binary(min_size=32, max_size=32), st.sampled_from([0, 1, 2]), st.integers(0, 35))
def test_any_flipped_character_is_caught(key: bytes, hh: int, pos: int) -> None:
    text = format_interchange(ConfiguredPsk(key, hh))
    body = text.split(":")[2]
    i = pos % (len(body) - 2)  # not the padding
    flipped = body[:i] + ("B" if body[i] == "A" else "A") + body[i + 1 :]
    with pytest.raises(TlsKeyError):
        parse_interchange(text.replace(body, flipped))


def test_keys_never_show_in_reprs() -> None:
    psk = ConfiguredPsk(KEY32, 1)
    tls = derive_tls_psk(psk, HOST, SUB)
    assert KEY32.hex() not in repr(psk) and tls.key.hex() not in repr(tls)
    assert repr(tls.key) not in repr(tls)


# --- /proc/keys and the keyring --------------------------------------------------------------

PROC_KEYS = """\
019c8b71 I------     1 perm 1f0f0000     0     0 keyring   .secondary_trusted_keys: 2
13caad88 I--Q---     1 perm 3b010000     0     0 psk       NVMe1R01 nqn.h nqn.s gGPIDae=: 32
2360979a I------     3 perm 1f1f0000     0     0 keyring   .nvme: 1
garbage
zzzzzzzz I------     3 perm 1f1f0000     0     0 keyring   .bad: 1
"""


def test_proc_keys_parser() -> None:
    keys = kr.parse_proc_keys(PROC_KEYS)
    assert [(k.serial, k.type) for k in keys] == [
        (0x019C8B71, "keyring"), (0x13CAAD88, "psk"), (0x2360979A, "keyring"),
    ]  # fmt: skip
    assert keys[1].description == "NVMe1R01 nqn.h nqn.s gGPIDae="
    assert kr.find_keyring(".nvme", PROC_KEYS) == 0x2360979A
    assert kr.find_keyring(".missing", PROC_KEYS) is None


@given(st.text(max_size=300))
def test_proc_keys_parser_never_raises(text: str) -> None:
    for key in kr.parse_proc_keys(text):
        assert key.serial >= 0


def test_resolve_keyring() -> None:
    assert kr.resolve_keyring(kr.parse_keyring_spec("0x10")) == 16
    assert kr.resolve_keyring(".nvme", lambda: PROC_KEYS) == 0x2360979A
    with pytest.raises(kr.KeyringError, match="nvme-tcp or nvmet-tcp loaded"):
        kr.resolve_keyring(".nvme", lambda: "")
    with pytest.raises(ValueError, match="neither a key serial nor a keyring name"):
        kr.parse_keyring_spec("a,b")


def _req(**kw: object) -> ConnectRequest:
    base = {"transport": "tcp", "traddr": "::1", "trsvcid": "4420", "subsysnqn": SUB,
            "hostnqn": "nqn.2014-08.org.nvmexpress:uuid:x"}  # fmt: skip
    return ConnectRequest(**(base | kw))  # type: ignore[arg-type]


def test_only_serials_reach_the_option_string() -> None:
    psk_text = format_interchange(ConfiguredPsk(KEY32, 1))
    req = _req(tls=True, tls_key=psk_text, keyring=".nvme")
    shown = req.option_string()
    assert shown.endswith(",tls,keyring=<.nvme>,tls_key=<psk>") and psk_text not in shown
    assert psk_text not in repr(req)
    with pytest.raises(InvalidOption, match="resolved to a key serial") as info:
        req.option_string(redact=False)
    assert psk_text not in str(info.value)
    inserted: list[tuple[int, TlsPsk]] = []

    def insert(ring: int, psk: TlsPsk) -> int:
        inserted.append((ring, psk))
        return 0x1234

    resolved = resolve_tls(req, read_proc=lambda: PROC_KEYS, insert=insert)
    assert resolved.option_string(redact=False).endswith(",tls,keyring=593532826,tls_key=4660")
    [(ring, psk)] = inserted
    assert ring == 0x2360979A
    assert psk == derive_tls_psk(ConfiguredPsk(KEY32, 1), req.hostnqn, SUB)


def test_tls_alone_lets_the_kernel_find_the_psk() -> None:
    req = _req(tls=True)
    assert resolve_tls(req, read_proc=lambda: "", insert=lambda *a: 1 / 0) is req  # type: ignore[arg-type,return-value]
    assert req.option_string(redact=False).endswith(
        ",hostnqn=nqn.2014-08.org.nvmexpress:uuid:x,tls"
    )
    assert "tls" not in _req().option_string(redact=False).split(",")


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"tls_key": "12"}, "tls"),  # a key without tls would be unused
        ({"keyring": ".nvme"}, "tls"),
        ({"tls": True, "tls_key": "NVMeTLSkey-1:01:AAAA:"}, "tls_key"),
        ({"tls": True, "keyring": "a=b"}, "keyring"),
        ({"tls": True, "transport": "rdma"}, "tls"),
        ({"tls": "yes"}, "tls"),
    ],
)
def test_bad_tls_options_are_refused(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidOption) as info:
        _req(**kw)
    assert info.value.field == field
    assert "AAAA" not in str(info.value)


def test_option_checks() -> None:
    assert check_tls_key("k", "0x1f") == "0x1f"
    assert check_keyring("k", ".nvme") == ".nvme"
    with pytest.raises(InvalidOption, match="<secret>"):
        check_tls_key("tls_key", "NVMeTLSkey-1:01:AAAA:")


def test_a_configured_psk_is_redacted_for_non_root_dbus_callers() -> None:
    from stas.dbus.redact import redact_secrets

    psk_text = format_interchange(ConfiguredPsk(KEY32, 1))
    params = {"tls": "true", "tls-key": psk_text, "keyring": ".nvme"}
    shown = redact_secrets(params, caller_is_root=False)
    assert psk_text not in repr(shown) and shown["keyring"] == ".nvme"
    assert redact_secrets(params, caller_is_root=True)["tls-key"] == psk_text
