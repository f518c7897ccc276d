"""nvmet.conf loading: the shipped file, every validation rule, and no crash on any input."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nvmet_config import (
    DHCHAP_DHGROUPS,
    DHCHAP_HASHES,
    MAX_CONF_BYTES,
    AllowedHost,
    NvmetConf,
    NvmetConfError,
    Port,
    Subsystem,
    dhchap_secret_problem,
    load_nvmet_conf,
    parse_nvmet_conf,
    tls_psk_problem,
)

from tests.helpers.secrets import dhchap_key
from tests.helpers.sim import DELL, SEED_CONF

KEY = "DHHC-1:00:ia6zGodOr4SEG0Zzaw398rpY0wqipUWj4jWjUh4HWUz6aQ2n:"


KEY64 = dhchap_key(bytes(range(64)), "03")
CTRL_KEY = dhchap_key(b"c" * 48, "02")
TCP4 = "{'id': 1, 'trtype': 'tcp', 'traddr': '127.0.0.1', 'trsvcid': 4420}"


def parse(text: str) -> NvmetConf:
    return parse_nvmet_conf(text, "t.conf")


def test_shipped_conf_is_upstream_default() -> None:
    conf = load_nvmet_conf(SEED_CONF)
    assert conf == NvmetConf(
        ports=(Port(1, "tcp", "::1", "8009", "ipv6"),),
        subsystems=(
            Subsystem(DELL, 1, (1,), ()),
            Subsystem("klingons", 1, (1,), ()),
            Subsystem("starfleet", 1, (1,), ()),
        ),
    )
    assert conf.namespace_count == 3
    assert conf.transports == ("tcp",)


def test_port_forms() -> None:
    conf = parse(
        "{'ports': ["
        "{'id': 1, 'trtype': 'tcp', 'traddr': '10.0.0.1', 'trsvcid': '4420'},"
        "{'id': 2, 'trtype': 'rdma', 'traddr': 'fe80::1', 'trsvcid': 4420, 'adrfam': 'ipv6'},"
        "{'id': 3, 'trtype': 'loop'},"
        "{'id': 4, 'trtype': 'fc', 'traddr': 'nn-0x1000000000000001:pn-0x2000000000000001'},"
        "{'id': 5, 'trtype': 'tcp', 'traddr': '0.0.0.0', 'trsvcid': 8009, 'adrfam': 'ipv4'},"
        "]}"
    )
    assert conf.ports == (
        Port(1, "tcp", "10.0.0.1", "4420", "ipv4"),
        Port(2, "rdma", "fe80::1", "4420", "ipv6"),
        Port(3, "loop", "", "", ""),
        Port(4, "fc", "nn-0x1000000000000001:pn-0x2000000000000001", "", "fc"),
        Port(5, "tcp", "0.0.0.0", "8009", "ipv4"),
    )
    assert conf.subsystems == ()
    assert conf.transports == ("tcp", "rdma", "loop", "fc")


def test_subsystem_forms_and_shared_hosts() -> None:
    conf = parse(
        f"{{'ports': [{TCP4}], 'subsystems': ["
        f"{{'subsysnqn': 'a', 'port': 1, 'namespaces': [1, 7],"
        f"  'allowed_hosts': [{{'nqn': 'nqn.h1', 'key': '{KEY}'}}, {{'nqn': 'nqn.h2'}}]}},"
        f"{{'subsysnqn': 'b', 'allowed_hosts': [{{'nqn': 'nqn.h1', 'key': '{KEY}'}}]}},"
        "]}"
    )
    h1, h2 = AllowedHost("nqn.h1", KEY), AllowedHost("nqn.h2", None)
    assert conf.subsystems == (Subsystem("a", 1, (1, 7), (h1, h2)), Subsystem("b", None, (), (h1,)))
    assert conf.hosts == (h1, h2)
    assert conf.namespace_count == 2


def test_empty_dict_is_an_empty_target() -> None:
    assert parse("{}") == NvmetConf((), ())


PORT_ERRORS = [
    ("{'id': 1, 'trtype': 'tcpp'}", "ports[0].trtype: 'tcpp' is not one of tcp, rdma, fc, loop"),
    ("{'trtype': 'loop'}", "ports[0]: missing required key 'id'"),
    ("{'id': True, 'trtype': 'loop'}", "ports[0].id: True is not an integer"),
    ("{'id': 70000, 'trtype': 'loop'}", "ports[0].id: 70000 is out of range 0..65535"),
    ("{'id': 1, 'trtype': 'loop', 'color': 1}", "ports[0]: unknown key 'color' (expected id, "),
    ("{'id': 1, 'trtype': 'tcp', 'trsvcid': 1}", "ports[0]: missing required key 'traddr'"),
    ("{'id': 1, 'trtype': 'tcp', 'traddr': '::1'}", "ports[0]: missing required key 'trsvcid'"),
    (
        "{'id': 1, 'trtype': 'tcp', 'traddr': '::1', 'trsvcid': 0}",
        "ports[0].trsvcid: 0 is not a TCP/UDP port number (1..65535)",
    ),
    (
        "{'id': 1, 'trtype': 'tcp', 'traddr': '::1', 'trsvcid': '80a'}",
        "ports[0].trsvcid: '80a' is not a TCP/UDP port number (1..65535)",
    ),
    (
        "{'id': 1, 'trtype': 'tcp', 'traddr': 'localhost', 'trsvcid': 1}",
        "ports[0].traddr: 'localhost' is not an IP address",
    ),
    (
        "{'id': 1, 'trtype': 'tcp', 'traddr': '::1', 'trsvcid': 1, 'adrfam': 'ipv4'}",
        "ports[0].traddr: '::1' is not a valid ipv4 address",
    ),
    (
        "{'id': 1, 'trtype': 'tcp', 'traddr': '1.2.3.4', 'trsvcid': 1, 'adrfam': 'ib'}",
        "ports[0].adrfam: 'ib' is not one of ipv4, ipv6",
    ),
    (
        "{'id': 1, 'trtype': 'tcp', 'traddr': '1.2.3.4\\n', 'trsvcid': 1}",
        "ports[0].traddr: '1.2.3.4\\n' contains whitespace or control characters",
    ),
    (
        "{'id': 1, 'trtype': 'fc', 'traddr': 'nn-0x1:pn-0x2'}",
        "ports[0].traddr: 'nn-0x1:pn-0x2' is not an FC address",
    ),
    ("{'id': 1, 'trtype': 'loop', 'adrfam': 'x'}", "ports[0].adrfam: 'x' is not one of ipv4,"),
]


@pytest.mark.parametrize(("port", "message"), PORT_ERRORS)
def test_port_errors(port: str, message: str) -> None:
    with pytest.raises(NvmetConfError) as err:
        parse(f"{{'ports': [{port}]}}")
    assert str(err.value).startswith(f"t.conf: {message}")


SUBSYS_ERRORS = [
    ("{'port': 1}", "subsystems[0]: missing required key 'subsysnqn'"),
    ("{'subsysnqn': 'a', 'port': 2}", "subsystems[0].port: 2 is not the id of any port (known: 1)"),
    ("{'subsysnqn': 'a/b'}", "subsystems[0].subsysnqn: 'a/b' contains '/' (an NQN cannot"),
    ("{'subsysnqn': 'a,b'}", "subsystems[0].subsysnqn: 'a,b' contains ','"),
    ("{'subsysnqn': 'a b'}", "subsystems[0].subsysnqn: 'a b' contains ' '"),
    ("{'subsysnqn': 'a\\x01'}", "subsystems[0].subsysnqn: 'a\\x01' contains '\\x01'"),
    ("{'subsysnqn': ''}", "subsystems[0].subsysnqn: the NQN is empty"),
    ("{'subsysnqn': '..'}", "subsystems[0].subsysnqn: '..' is not usable as a directory name"),
    (f"{{'subsysnqn': {'x' * 224!r}}}", "subsystems[0].subsysnqn: 'xxxxxxxx"),
    ("{'subsysnqn': 7}", "subsystems[0].subsysnqn: 7 is not a string"),
    (
        "{'subsysnqn': 'nqn.2014-08.org.nvmexpress.discovery'}",
        "subsystems[0].subsysnqn: 'nqn.2014-08.org.nvmexpress.discovery' is reserved",
    ),
    ("{'subsysnqn': 'a', 'namespaces': [0]}", "subsystems[0].namespaces[0]: 0 is out of range 1.."),
    ("{'subsysnqn': 'a', 'namespaces': [1, 1]}", "subsystems[0].namespaces[1]: 1 is a duplicate"),
    ("{'subsysnqn': 'a', 'namespaces': 1}", "subsystems[0].namespaces: 1 is not a list"),
    (
        "{'subsysnqn': 'a', 'allowed_hosts': [{'nqn': 'h', 'key': 'secret'}]}",
        "subsystems[0].allowed_hosts[0].key: is not a DH-HMAC-CHAP key of the form",
    ),
    (
        "{'subsysnqn': 'a', 'allowed_hosts': [{'nqn': 'h'}, {'nqn': 'h'}]}",
        "subsystems[0].allowed_hosts[1].nqn: 'h' is a duplicate",
    ),
    ("{'subsysnqn': 'a', 'allowed_hosts': ['h']}", "subsystems[0].allowed_hosts[0]: 'h' is not a"),
]


@pytest.mark.parametrize(("subsys", "message"), SUBSYS_ERRORS)
def test_subsystem_errors(subsys: str, message: str) -> None:
    text = f"{{'ports': [{TCP4}], 'subsystems': [{subsys}]}}"
    with pytest.raises(NvmetConfError) as err:
        parse(text)
    assert str(err.value).startswith(f"t.conf: {message}")


def test_nqn_limit_is_223_utf8_bytes() -> None:
    ok = "é" * 111  # 222 bytes
    assert parse(f"{{'subsystems': [{{'subsysnqn': {ok!r}}}]}}").subsystems[0].nqn == ok
    with pytest.raises(NvmetConfError, match="is longer than 223 bytes"):
        parse(f"{{'subsystems': [{{'subsysnqn': {ok + 'é'!r}}}]}}")


CROSS_ERRORS = [
    (
        f"{{'ports': [{TCP4}, {TCP4}]}}",
        "ports[1].id: 1 is a duplicate",
    ),
    (
        "{'subsystems': [{'subsysnqn': 'a'}, {'subsysnqn': 'a'}]}",
        "subsystems[1].subsysnqn: 'a' is a duplicate",
    ),
    (
        f"{{'subsystems': [{{'subsysnqn': 'a', 'allowed_hosts': [{{'nqn': 'h', 'key': '{KEY}'}}]}},"
        " {'subsysnqn': 'b', 'allowed_hosts': [{'nqn': 'h'}]}]}",
        "subsystems[1].allowed_hosts[0].key: host 'h' has a different key in subsystems[0]",
    ),
    ("[]", "top level: [] is not a dict"),
    ("{'ports': [], 'hosts': []}", "top level: unknown key 'hosts' (expected ports, subsystems)"),
    ("{'ports': {}}", "ports: {} is not a list"),
    ("{'ports': [1]}", "ports[0]: 1 is not a dict"),
    ("{'ports': [{1: 2}]}", "ports[0]: unknown key 1"),
    (
        "{'subsystems': [{'subsysnqn': 's%d' % 0, 'namespaces': []}]}",
        "not a Python literal: malformed node or string",
    ),
    ("{'ports': [", "not a Python literal: '[' was never closed (line 1)"),
    ("__import__('os').system('true')", "not a Python literal: malformed node or string"),
    ("{{}}", "not a Python literal: unhashable type"),
]


@pytest.mark.parametrize(("text", "message"), CROSS_ERRORS)
def test_whole_file_errors(text: str, message: str) -> None:
    with pytest.raises(NvmetConfError) as err:
        parse(text)
    assert str(err.value).startswith(f"t.conf: {message}")


def test_caps() -> None:
    many_ports = "[" + ",".join(f"{{'id': {i}, 'trtype': 'loop'}}" for i in range(257)) + "]"
    with pytest.raises(
        NvmetConfError, match=r"^t\.conf: ports: 257 items is more than the limit of 256$"
    ):
        parse(f"{{'ports': {many_ports}}}")
    subs = ",".join(
        f"{{'subsysnqn': 's{i}', 'namespaces': list(range(1, 1001))}}" for i in range(5)
    )
    subs = subs.replace("list(range(1, 1001))", repr(list(range(1, 1001))))
    with pytest.raises(
        NvmetConfError, match=r"^t\.conf: subsystems: 5000 namespaces is more than 4096$"
    ):
        parse(f"{{'subsystems': [{subs}]}}")


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(
        NvmetConfError, match=rf"^{missing}: cannot read: No such file or directory$"
    ):
        load_nvmet_conf(missing)
    binary = tmp_path / "bin.conf"
    binary.write_bytes(b"{'a': '\xff'}")
    with pytest.raises(NvmetConfError, match=rf"^{binary}: not valid UTF-8 at byte 7$"):
        load_nvmet_conf(binary)
    big = tmp_path / "big.conf"
    big.write_bytes(b"#" * (MAX_CONF_BYTES + 1))
    with pytest.raises(
        NvmetConfError, match=rf"^{big}: file is larger than {MAX_CONF_BYTES} bytes$"
    ):
        load_nvmet_conf(big)
    bad = tmp_path / "bad.conf"
    bad.write_text("{'ports': [{'id': 1, 'trtype': 'tcpp'}]}\n")
    with pytest.raises(NvmetConfError) as err:
        load_nvmet_conf(bad)
    assert str(err.value) == f"{bad}: ports[0].trtype: 'tcpp' is not one of tcp, rdma, fc, loop"


# --- properties ----------------------------------------------------------------------------------

_nqn_chars = st.characters(
    blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Cn", "Co", "Cf"),
    blacklist_characters="/,",
)
nqns = (
    st.text(_nqn_chars, min_size=1, max_size=40)
    .filter(lambda s: s not in (".", "..") and all(not c.isspace() and c.isprintable() for c in s))
    .filter(lambda s: s != "nqn.2014-08.org.nvmexpress.discovery")
)
keys = st.sampled_from([None, KEY, KEY64])


def _host(nqn: str, key: str | None) -> AllowedHost:
    """Hosts with a key get a controller key, hash and group derived from the NQN: a host
    must look the same in every subsystem that names it."""
    if key is None:
        return AllowedHost(nqn)
    n = sum(nqn.encode())
    ctrl = CTRL_KEY if n % 2 else None
    return AllowedHost(nqn, key, ctrl, DHCHAP_HASHES[n % 3], DHCHAP_DHGROUPS[n % 6])


@st.composite
def confs(draw: st.DrawFn) -> NvmetConf:
    ids = draw(st.lists(st.integers(0, 65535), unique=True, max_size=3))
    ports = []
    for pid in ids:
        kind = draw(st.sampled_from(["tcp4", "tcp6", "rdma", "loop"]))
        if kind == "loop":
            ports.append(Port(pid, "loop"))
        else:
            addr = "192.0.2.1" if kind == "tcp4" else "2001:db8::1"
            fam = "ipv4" if kind == "tcp4" else "ipv6"
            trsvcid = str(draw(st.integers(1, 65535)))
            ports.append(Port(pid, "rdma" if kind == "rdma" else "tcp", addr, trsvcid, fam))
    host_keys = draw(st.dictionaries(nqns, keys, max_size=3))
    subsystems = []
    for nqn in draw(st.lists(nqns, unique=True, max_size=4)):
        port = draw(st.sampled_from([None, *ids]))
        ns = tuple(draw(st.lists(st.integers(1, 0xFFFFFFFE), unique=True, max_size=3)))
        hosts = draw(st.lists(st.sampled_from(sorted(host_keys)), unique=True)) if host_keys else []
        allowed = tuple(_host(h, host_keys[h]) for h in hosts)
        subsystems.append(Subsystem(nqn, port, ns, allowed))
    return NvmetConf(tuple(ports), tuple(subsystems))


@given(confs())
@settings(max_examples=200)
def test_round_trip(conf: NvmetConf) -> None:
    assert parse(repr(conf.as_dict())) == conf


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_arbitrary_text_gives_conf_or_conf_error(text: str) -> None:
    try:
        result = parse(text)
    except NvmetConfError as e:
        assert str(e).startswith("t.conf: ")
        assert "\n" not in str(e)
    else:
        assert isinstance(result, NvmetConf)


_atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["tcp", "rdma", "fc", "loop", "::1", "1.2.3.4", "ipv4", "ipv6", "klingons"]),
    st.sampled_from([KEY, 8009, "sha384", "ffdhe2048", CTRL_KEY]),
)
_keys = st.sampled_from(
    [
        "ports",
        "subsystems",
        "id",
        "trtype",
        "traddr",
        "trsvcid",
        "adrfam",
        "subsysnqn",
        "port",
        "namespaces",
        "allowed_hosts",
        "nqn",
        "key",
        "ctrl_key",
        "hash",
        "dhgroup",
        "other",
    ]
)
_values = st.recursive(
    _atoms,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=25,
)


@given(st.dictionaries(_keys, _values, max_size=4))
@settings(max_examples=400)
def test_near_miss_structures_give_conf_or_conf_error(value: dict) -> None:
    try:
        result = parse(repr(value))
    except NvmetConfError as e:
        assert str(e).startswith("t.conf: ") and "\n" not in str(e)
    else:
        assert isinstance(result, NvmetConf)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_from_a_file(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("conf") / "nvmet.conf"
    path.write_bytes(data)
    try:
        result = load_nvmet_conf(path)
    except NvmetConfError as e:
        assert str(e).startswith(f"{path}: ")
    else:
        assert isinstance(result, NvmetConf)


# --- DH-HMAC-CHAP hosts ---------------------------------------------------------------------


def _hosts_conf(*hosts: str) -> str:
    return f"{{'subsystems': [{{'subsysnqn': 'a', 'allowed_hosts': [{', '.join(hosts)}]}}]}}"


def test_dhchap_host_with_every_setting() -> None:
    conf = parse(
        _hosts_conf(
            f"{{'nqn': 'nqn.h', 'key': '{KEY}', 'ctrl_key': '{CTRL_KEY}',"
            " 'hash': 'sha512', 'dhgroup': 'ffdhe3072'}",
            f"{{'nqn': 'nqn.uni', 'key': '{KEY64}', 'hash': 'hmac(sha384)'}}",
            "{'nqn': 'nqn.open'}",
        )
    )
    bidi, uni, open_ = conf.hosts
    assert bidi == AllowedHost("nqn.h", KEY, CTRL_KEY, "hmac(sha512)", "ffdhe3072")
    assert bidi.configfs_attributes() == {
        "dhchap_hash": "hmac(sha512)",
        "dhchap_dhgroup": "ffdhe3072",
        "dhchap_key": KEY,
        "dhchap_ctrl_key": CTRL_KEY,
    }
    assert uni.configfs_attributes() == {"dhchap_hash": "hmac(sha384)", "dhchap_key": KEY64}
    assert open_.configfs_attributes() == {}
    assert KEY not in repr(bidi) and CTRL_KEY not in repr(bidi)  # secrets stay out of reprs
    assert parse(repr(conf.as_dict())) == conf


@pytest.mark.parametrize(
    ("spelling", "normal"),
    [("sha256", "hmac(sha256)"), ("SHA-384", "hmac(sha384)"), ("hmac(sha512)", "hmac(sha512)")],
)
def test_hash_spellings(spelling: str, normal: str) -> None:
    host = f"{{'nqn': 'h', 'key': '{KEY}', 'hash': '{spelling}'}}"
    assert parse(_hosts_conf(host)).hosts[0].hash == normal


BAD_SECRET = "DHHC-1:00:" + base64.b64encode(b"x" * 36).decode() + ":"  # CRC-32 wrong
DHCHAP_ERRORS = [
    (f"{{'nqn': 'h', 'key': '{BAD_SECRET}'}}", ".key: is not a DH-HMAC-CHAP key: its CRC-32"),
    (f"{{'nqn': 'h', 'key': '{dhchap_key(b'x' * 32, '03')}'}}", "a DHHC-1:03 secret is 64 bytes"),
    (f"{{'nqn': 'h', 'key': '{dhchap_key(b'x' * 40)}'}}", "secret is 32/48/64 bytes, not 40"),
    ("{'nqn': 'h', 'key': 'DHHC-1:00:abc=:'}", ".key: is not a DH-HMAC-CHAP key of the form"),
    (f"{{'nqn': 'h', 'ctrl_key': '{KEY}'}}", ".ctrl_key: needs 'key' too"),
    (f"{{'nqn': 'h', 'key': '{KEY}', 'ctrl_key': 'x'}}", ".ctrl_key: is not a DH-HMAC-CHAP"),
    (f"{{'nqn': 'h', 'key': '{KEY}', 'hash': 'md5'}}", ".hash: 'md5' is not one of sha256"),
    (f"{{'nqn': 'h', 'key': '{KEY}', 'hash': 256}}", ".hash: 256 is not one of sha256"),
    (f"{{'nqn': 'h', 'key': '{KEY}', 'dhgroup': 'modp'}}", ".dhgroup: 'modp' is not one of null"),
    ("{'nqn': 'h', 'dhgroup': 'ffdhe2048'}", "allowed_hosts[0]: 'hash' and 'dhgroup' need a"),
]


@pytest.mark.parametrize(("host", "message"), DHCHAP_ERRORS)
def test_dhchap_errors_name_the_item_and_never_the_secret(host: str, message: str) -> None:
    with pytest.raises(NvmetConfError) as err:
        parse(_hosts_conf(host))
    text = str(err.value)
    assert text.startswith("t.conf: subsystems[0].allowed_hosts[0]") and message in text
    for secret in (BAD_SECRET, KEY, "DHHC-1:00:abc=:"):
        assert secret not in text


def test_one_host_cannot_differ_between_subsystems() -> None:
    a = f"{{'nqn': 'h', 'key': '{KEY}', 'dhgroup': 'ffdhe2048'}}"
    b = f"{{'nqn': 'h', 'key': '{KEY}', 'dhgroup': 'ffdhe4096'}}"
    text = (
        f"{{'subsystems': [{{'subsysnqn': 'a', 'allowed_hosts': [{a}]}},"
        f" {{'subsysnqn': 'b', 'allowed_hosts': [{b}]}}]}}"
    )
    with pytest.raises(NvmetConfError, match=r"allowed_hosts\[0\]\.dhgroup: host 'h' has a diff"):
        parse(text)


@given(st.binary(min_size=0, max_size=80), st.sampled_from(["00", "01", "02", "03"]))
def test_secret_check_accepts_exactly_the_kernels_sizes(secret: bytes, hh: str) -> None:
    sizes = {"00": (32, 48, 64), "01": (32,), "02": (48,), "03": (64,)}[hh]
    problem = dhchap_secret_problem(dhchap_key(secret, hh))
    assert (problem is None) == (len(secret) in sizes)


def make_psk(secret: bytes, hh: str = "01") -> str:
    """A TLS PSK in interchange format, as nvme gen-tls-key writes it (test-side)."""
    crc = zlib.crc32(secret).to_bytes(4, "little")
    return f"NVMeTLSkey-1:{hh}:{base64.b64encode(secret + crc).decode()}:"


def bad_crc(key: str) -> str:
    """``key`` with the last byte of its CRC-32 flipped (the base64 still decodes)."""
    head, hh, encoded, _ = key.split(":")
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 0x01
    return f"{head}:{hh}:{base64.b64encode(bytes(raw)).decode()}:"


@pytest.mark.parametrize(
    ("problem", "key", "message"),
    [
        (tls_psk_problem, make_psk(b"k" * 32), None),
        (tls_psk_problem, make_psk(b"k" * 48, "02"), None),
        (tls_psk_problem, bad_crc(make_psk(b"k" * 32)), "is not a TLS PSK: its CRC-32 does not"),
        (tls_psk_problem, make_psk(b"k" * 40), "is not a TLS PSK: the key is 32/48 bytes, not 40"),
        (tls_psk_problem, "NVMeTLSkey-1:01:AAAA:", "the key is 32/48 bytes, not 0"),
        (tls_psk_problem, "NVMeTLSkey-1:01:AAAAA:", "its base64 part does not decode"),
        (dhchap_secret_problem, dhchap_key(b"k" * 48, "02"), None),
        (dhchap_secret_problem, bad_crc(dhchap_key(b"k" * 48, "02")), "key: its CRC-32 does not"),
        (
            dhchap_secret_problem,
            dhchap_key(b"k" * 32, "02"),
            "a DHHC-1:02 secret is 48 bytes, not 32",
        ),
        (dhchap_secret_problem, dhchap_key(b"k" * 33), "secret is 32/48/64 bytes, not 33"),
    ],
)
def test_psk_and_dhchap_secret_share_the_base64_length_and_crc_rule(
    problem: object, key: str, message: str | None
) -> None:
    got = problem(key)  # type: ignore[operator]
    assert got == message if message is None else (got is not None and message in got)
    if got is not None:
        assert key.split(":")[2] not in got  # the secret is never quoted


@given(st.binary(min_size=0, max_size=80), st.integers(0, 31))
def test_any_corrupted_crc_is_refused_in_both_formats(secret: bytes, bit: int) -> None:
    crc = (zlib.crc32(secret) ^ (1 << bit)).to_bytes(4, "little")
    encoded = base64.b64encode(secret + crc).decode()
    for problem, key in (
        (tls_psk_problem, f"NVMeTLSkey-1:01:{encoded}:"),
        (dhchap_secret_problem, f"DHHC-1:00:{encoded}:"),
    ):
        got = problem(key)
        assert got is not None and ("CRC-32" in got or "bytes, not" in got)
