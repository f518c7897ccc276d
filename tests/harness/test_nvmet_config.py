"""nvmet.conf loading: the shipped file, every validation rule, and no crash on any input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nvmet_config import (
    MAX_CONF_BYTES,
    AllowedHost,
    NvmetConf,
    NvmetConfError,
    Port,
    Subsystem,
    load_nvmet_conf,
    parse_nvmet_conf,
)

SHIPPED = Path(__file__).resolve().parents[2] / "nvmet-harness" / "nvmet.conf"
DELL = "nqn.1988-11.com.dell:PowerSANxxx:01:20210225100113-454f73093ceb4847a7bdfc6e34ae8e28"
KEY = "DHHC-1:00:ia6zGodOr4SEG0Zzaw398rpY0wqipUWj4jWjUh4HWUz6aQ2n:"
TCP4 = "{'id': 1, 'trtype': 'tcp', 'traddr': '127.0.0.1', 'trsvcid': 4420}"


def parse(text: str) -> NvmetConf:
    return parse_nvmet_conf(text, "t.conf")


def test_shipped_conf_is_upstream_default() -> None:
    conf = load_nvmet_conf(SHIPPED)
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
keys = st.sampled_from([None, KEY, "DHHC-1:03:" + "A" * 88 + "==:"])


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
        allowed = tuple(AllowedHost(h, host_keys[h]) for h in hosts)
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
    st.sampled_from(
        ["tcp", "rdma", "fc", "loop", "::1", "1.2.3.4", "ipv4", "ipv6", "klingons", KEY, 8009]
    ),
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
