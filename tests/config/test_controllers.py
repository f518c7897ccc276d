"""[Controllers] controller= and exclude= entries."""

# ruff: noqa: E501  (tables of exact warning texts read best one per line)

from __future__ import annotations

import base64
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.config import (
    WELL_KNOWN_DISC_NQN,
    ControllerSpec,
    Exclusion,
    parse_controller,
    parse_exclusion,
    parse_service_config,
    redact_entry,
)

SRC = "stacd.conf"


def make_secret(key_len: int = 32, hmac: int = 1, seed: int = 7) -> str:
    """A secret in nvme-cli's format: base64(key + CRC-32 little endian)."""
    key = bytes((seed * i + 3) % 256 for i in range(key_len))
    raw = key + zlib.crc32(key).to_bytes(4, "little")
    return f"DHHC-1:{hmac:02d}:{base64.b64encode(raw).decode()}:"


SECRET_32 = make_secret(32)
SECRET_48 = make_secret(48)  # base64 ends with "==", which upstream drops
SECRET_64 = make_secret(64, hmac=3)  # base64 ends with "="


def ctrl(value: str, daemon: str = "stacd") -> tuple[ControllerSpec | None, list[str]]:
    return parse_controller(value, daemon, source=SRC)


def test_secrets_used_in_tests_have_padding() -> None:
    assert SECRET_48.endswith("==:") and SECRET_64.endswith("=:") and not SECRET_32.endswith("=:")


def test_real_nvme_cli_secret_is_accepted() -> None:
    secret = "DHHC-1:00:ia6zGodOr4SEG0Zzaw398rpY0wqipUWj4jWjUh4HWUz6aQ2n:"
    spec, notes = ctrl(f"transport=tcp;traddr=10.0.0.1;nqn=nqn.a;dhchap-secret={secret}")
    assert notes == [] and spec is not None and spec.dhchap_secret == secret


def test_stafd_defaults_to_the_well_known_discovery_nqn_and_port_8009() -> None:
    spec, notes = ctrl("transport=tcp;traddr=localhost", "stafd")
    assert notes == []
    assert spec == ControllerSpec("tcp", "localhost", "8009", WELL_KNOWN_DISC_NQN)
    assert spec.as_tid_dict() == {
        "transport": "tcp",
        "traddr": "localhost",
        "trsvcid": "8009",
        "subsysnqn": WELL_KNOWN_DISC_NQN,
        "host-traddr": "",
        "host-iface": "",
        "host-nqn": "",
    }


@pytest.mark.parametrize(
    ("value", "trsvcid"),
    [
        ("transport=tcp;traddr=::1;nqn=klingons", "8009"),  # upstream's default, kept
        ("transport=rdma;traddr=10.0.0.1;nqn=klingons", "4420"),
        ("transport=tcp;traddr=10.0.0.1;trsvcid=04420;nqn=klingons", "4420"),
        ("transport=loop;traddr=1;nqn=klingons", ""),
    ],
)
def test_default_trsvcid(value: str, trsvcid: str) -> None:
    spec, notes = ctrl(value)
    assert notes == [] and spec is not None and spec.trsvcid == trsvcid


def test_fc_ignores_trsvcid_and_checks_addresses() -> None:
    addr = "nn-0x1000000044001123:pn-0x2000000055001123"
    spec, notes = ctrl(f"transport=FC;traddr={addr.upper()};trsvcid=1;host-traddr={addr};nqn=n")
    assert spec is not None
    assert (spec.transport, spec.traddr, spec.trsvcid, spec.host_traddr) == ("fc", addr, "", addr)
    assert notes == [
        f"{SRC}: [Controllers] controller=transport=FC;traddr={addr.upper()};trsvcid=1;"
        f"host-traddr={addr};nqn=n: trsvcid is not used with fc, ignored"
    ]


def test_all_identity_fields_and_overrides() -> None:
    value = (
        " transport = tcp ; traddr = fe80::0001%eth0 ; trsvcid=4420 ; nqn=nqn.2014-08.com.x:s1 ;"
        " host-traddr=192.168.1.5; host-iface=eth0; host-nqn=nqn.2014-08.org.nvmexpress:uuid:1;"
        " hdr-digest=true; data-digest=FALSE; kato=5; queue-size=64; reconnect-delay=2;"
        " ctrl-loss-tmo=-1; disable-sqflow=true; nr-io-queues=4; nr-write-queues=0;"
        f" nr-poll-queues=1; dhchap-secret={SECRET_48}; dhchap-ctrl-secret={SECRET_64};;"
    )
    spec, notes = ctrl(value)
    assert notes == []
    assert spec is not None
    assert spec.as_tid_dict() == {
        "transport": "tcp",
        "traddr": "fe80::1%eth0",
        "trsvcid": "4420",
        "subsysnqn": "nqn.2014-08.com.x:s1",
        "host-traddr": "192.168.1.5",
        "host-iface": "eth0",
        "host-nqn": "nqn.2014-08.org.nvmexpress:uuid:1",
        "hdr-digest": "true",
        "data-digest": "false",
        "kato": "5",
        "queue-size": "64",
        "reconnect-delay": "2",
        "ctrl-loss-tmo": "-1",
        "disable-sqflow": "true",
        "nr-io-queues": "4",
        "nr-write-queues": "0",
        "nr-poll-queues": "1",
        "dhchap-secret": SECRET_48,
        "dhchap-ctrl-secret": SECRET_64,
    }
    assert spec.as_tid_dict(ignore_iface=True)["host-iface"] == ""
    assert SECRET_48 not in repr(spec) and "dhchap_secret='***'" in repr(spec)


def test_equal_signs_in_secrets_survive_the_whole_file() -> None:
    text = (
        "[Controllers]\n"
        f"controller=transport=tcp;traddr=1.2.3.4;nqn=nqn.x;dhchap-secret={SECRET_48}  # lab\n"
    )
    config, warnings = parse_service_config(text, "stacd")
    assert warnings == []
    assert config.controllers[0].dhchap_secret == SECRET_48


def where(value: str) -> str:
    return f"{SRC}: [Controllers] controller={redact_entry(value)}"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("traddr=1.2.3.4;nqn=n", "missing transport"),
        ("transport=tcp;nqn=n", "missing traddr"),
        ("transport=pcie;traddr=0000:00:01.0;nqn=n", "transport=pcie: invalid transport, expected tcp, rdma, fc or loop"),
        ("transport=tcp;traddr=1.2.3.4", "missing nqn (stacd needs the subsystem NQN)"),
        ("transport=tcp;traddr=1.2.3.4;nqn=", "missing nqn (stacd needs the subsystem NQN)"),
        ("transport=tcp;traddr=-bad-.example;nqn=n", "traddr=-bad-.example: not an IP address or host name"),
        ("transport=tcp;traddr=a..b;nqn=n", "traddr=a..b: not an IP address or host name"),
        ("transport=tcp;traddr=1.2.3.999;nqn=n", "traddr=1.2.3.999: not an IP address or host name"),
        ("transport=tcp;traddr=[::1];nqn=n", "traddr=[::1]: not an IP address or host name"),
        ("transport=fc;traddr=10.0.0.1;nqn=n", "traddr=10.0.0.1: not an FC address nn-0x<16 hex digits>:pn-0x<16 hex digits>"),
        ("transport=tcp;traddr=h;trsvcid=0;nqn=n", "trsvcid=0: not a port number 1..65535"),
        ("transport=rdma;traddr=h;trsvcid=http;nqn=n", "trsvcid=http: not a port number 1..65535"),
        ("transport=tcp;traddr=h;nqn=a b", "nqn=a b: NQN contains whitespace, ',', '=', ';' or a non-printable character"),
        ("transport=tcp;traddr=h;nqn=" + "n" * 224, "nqn=" + "n" * 224 + ": NQN longer than 223 bytes"),
        ("transport=tcp;traddr=h;nqn=n;host-traddr=host.example", "host-traddr=host.example: not an IP address"),
        ("transport=tcp;traddr=h;nqn=n;host-iface=eth0/1", "host-iface=eth0/1: not an interface name (1-15 characters, no '/', ':' or whitespace)"),
        ("transport=tcp;traddr=h;nqn=n;host-iface=abcdefghijklmnop", "host-iface=abcdefghijklmnop: not an interface name (1-15 characters, no '/', ':' or whitespace)"),
        ("transport=tcp;traddr=h;nqn=n;host-iface=..", "host-iface=..: not an interface name (1-15 characters, no '/', ':' or whitespace)"),
        ("transport=tcp;traddr=h;nqn=n;host-nqn=klingons", "host-nqn=klingons: not an NQN (must start with 'nqn.')"),
        ("transport=tcp;traddr=h;nqn=n;host-nqn=nqn.a,b", "host-nqn=nqn.a,b: NQN contains a space, ',', '=', ';' or a non-printable character"),
    ],
)  # fmt: skip
def test_unusable_entries_are_dropped_with_a_warning(value: str, reason: str) -> None:
    spec, notes = ctrl(value)
    assert spec is None
    assert notes == [f"{where(value)}: {reason}, entry ignored"]


def test_only_malformed_tokens_drop_the_entry() -> None:
    spec, notes = ctrl("garbage")
    assert spec is None
    assert notes == [f"{where('garbage')}: 'garbage' is not key=value, entry ignored"]


@pytest.mark.parametrize(
    ("extra", "note"),
    [
        ("kato=x", "kato=x: not an integer, using the [Global] value"),
        ("queue-size=2000", "queue-size=2000: out of range 16..1024, using the [Global] value"),
        ("hdr-digest=yes", "hdr-digest=yes: expected true or false, using the [Global] value"),
        ("nr-io-queues=0", "nr-io-queues=0: out of range 1..2147483647, using the [Global] value"),
        ("foo=bar", "unknown key 'foo', ignored"),
        ("oops", "'oops' is not key=value"),
        ("=x", "'=x' is not key=value"),
        ("kato=1;kato=2", "kato given twice, the last one is used"),
        ("dhchap-secret=DHHC-1:01:abc:", "dhchap-secret=***: DH-HMAC-CHAP secret is not valid base64, ignored"),
        ("dhchap-secret=DHHC-1:05:abcd:", "dhchap-secret=***: not a DH-HMAC-CHAP secret of the form DHHC-1:0[0-3]:<base64>:, ignored"),
        ("dhchap-ctrl-secret=hunter2", "dhchap-ctrl-secret=***: not a DH-HMAC-CHAP secret of the form DHHC-1:0[0-3]:<base64>:, ignored"),
        ("dhchap-secret=" + SECRET_32[:-5] + "AAAA:", "dhchap-secret=***: DH-HMAC-CHAP secret has a bad CRC, ignored"),
        ("dhchap-secret=" + make_secret(16), "dhchap-secret=***: DH-HMAC-CHAP key must be 32, 48 or 64 bytes, ignored"),
    ],
)  # fmt: skip
def test_bad_overrides_are_ignored_entry_kept(extra: str, note: str) -> None:
    value = f"transport=tcp;traddr=10.0.0.1;nqn=nqn.x;{extra}"
    spec, notes = ctrl(value)
    assert spec is not None and spec.traddr == "10.0.0.1"
    assert notes == [f"{SRC}: [Controllers] controller={redact_entry(value)}: {note}"]
    assert all("hunter2" not in n and "abc:" not in n for n in notes)


def test_duplicate_key_last_wins() -> None:
    spec, _ = ctrl("transport=tcp;traddr=10.0.0.1;nqn=nqn.x;kato=1;kato=2")
    assert spec is not None and spec.kato == 2


def test_io_queue_options_are_not_for_discovery_controllers() -> None:
    value = "transport=tcp;traddr=10.0.0.1;nr-io-queues=4"
    spec, notes = ctrl(value, "stafd")
    assert spec is not None and spec.nr_io_queues is None
    assert notes == [f"{where(value)}: nr-io-queues is not used for discovery controllers, ignored"]


def test_redact_entry_hides_secrets_and_bare_secret_tokens() -> None:
    value = f"transport=tcp;dhchap-secret={SECRET_32};{SECRET_48};Dhchap-Ctrl-Secret = x"
    assert redact_entry(value) == "transport=tcp;dhchap-secret=***;***;Dhchap-Ctrl-Secret =***"
    assert redact_entry("a" * 300) == "a" * 200 + "..."


def test_controller_and_exclude_accumulate_in_file_order() -> None:
    text = (
        "[Controllers]\n"
        "controller=transport=tcp;traddr=10.0.0.1\n"
        "exclude=traddr=10.0.0.9\n"
        "controller=\n"
        "[Global]\nkato=3\n"
        "[Controllers]\n"
        "controller=transport=tcp;traddr=10.0.0.2;trsvcid=8010\n"
        "blacklist=host-iface=eth1\n"
        "exclude=transport=rdma\n"
    )
    config, warnings = parse_service_config(text, "stafd")
    assert [c.traddr for c in config.controllers] == ["10.0.0.1", "10.0.0.2"]
    assert [e.as_dict() for e in config.excluded] == [
        {"traddr": "10.0.0.9"},
        {"host-iface": "eth1"},
        {"transport": "rdma"},
    ]
    assert warnings == ["stafd.conf: [Controllers] blacklist= is deprecated, use exclude= instead"]


def test_unknown_option_and_bare_key_in_controllers() -> None:
    _, warnings = parse_service_config("[Controllers]\nkato=3\ncontroller\n", "stafd")
    assert warnings == [
        "stafd.conf: [Controllers] kato: unknown option in this section "
        "(it belongs in [Global]), ignored",
        "stafd.conf: [Controllers] controller: no value, ignored",
    ]


def excl(value: str) -> tuple[Exclusion | None, list[str]]:
    return parse_exclusion(value, source=SRC)


TID = {
    "transport": "tcp",
    "traddr": "10.0.0.1",
    "trsvcid": "4420",
    "subsysnqn": "nqn.x",
    "host-traddr": "192.168.0.5",
    "host-iface": "eth1",
    "host-nqn": "nqn.h",
}


@pytest.mark.parametrize(
    ("value", "matches"),
    [
        ("host-iface=eth1", True),
        ("host-iface=eth2", False),
        ("transport=TCP;traddr=10.0.0.1", True),
        ("traddr=::ffff:10.0.0.1", True),
        ("traddr=10.0.0.2", False),
        ("nqn=nqn.x;trsvcid=4420", True),
        ("nqn=nqn.x;trsvcid=8009", False),
        ("host-nqn=nqn.h", True),
        ("host-traddr=1.1.1.1;host-iface=eth1", True),
        ("host-iface=", False),
    ],
)
def test_exclusion_matching_is_minimal(value: str, matches: bool) -> None:
    exclusion, _ = excl(value)
    assert exclusion is not None
    assert exclusion.matches(TID) is matches


def test_exclusion_normalises_ip_addresses() -> None:
    exclusion, _ = excl("traddr=FE80::0001")
    assert exclusion is not None
    assert exclusion.matches({"traddr": "fe80::1"})
    assert not exclusion.matches({"traddr": "fe80::2"})
    assert not exclusion.matches({"traddr": "myhost"})
    assert not exclusion.matches({})  # a key missing from the candidate never matches
    named, _ = excl("traddr=MyHost")
    assert named is not None and named.matches({"traddr": "MyHost"})
    assert not named.matches({"traddr": "myhost"})  # host names compare as strings
    mapped, _ = excl("traddr=10.0.0.1")
    assert mapped is not None and mapped.matches({"traddr": "::ffff:10.0.0.1"})


def test_exclude_drops_host_traddr_with_a_note() -> None:
    exclusion, notes = excl("traddr=10.0.0.1;host-traddr=1.1.1.1")
    assert exclusion == Exclusion((("traddr", "10.0.0.1"),))
    assert notes == [
        f"{SRC}: [Controllers] exclude=traddr=10.0.0.1;host-traddr=1.1.1.1: "
        "host-traddr is not used by exclude, removed"
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("host-traddr=1.1.1.1", "nothing to match (it would exclude everything), ignored"),
        ("traddr=1.2.3.4;junk", "entry ignored (a partial exclusion would match more)"),
        ("traddr=1.2.3.4;kato=5", "'kato' cannot be used in exclude, entry ignored"),
        ("transport=pcie", "transport=pcie: invalid transport, expected tcp, rdma, fc or loop, entry ignored"),
        ("host-iface=a/b", "host-iface=a/b: not an interface name (1-15 characters, no '/', ':' or whitespace), entry ignored"),
    ],
)  # fmt: skip
def test_bad_exclusions_are_dropped_whole(value: str, reason: str) -> None:
    exclusion, notes = excl(value)
    assert exclusion is None
    assert notes[-1] == f"{SRC}: [Controllers] exclude={value}: {reason}"


def test_service_config_is_excluded() -> None:
    text = "[Controllers]\nexclude=host-iface=eth1\nexclude=traddr=10.0.0.1 # lab\n"
    config, warnings = parse_service_config(text, "stacd")
    assert warnings == []
    assert config.is_excluded({**TID, "host-iface": "eth9"})
    assert not config.is_excluded({**TID, "host-iface": "eth9", "traddr": "10.0.0.3"})


_TOKEN_KEYS = [
    "transport", "traddr", "trsvcid", "nqn", "host-traddr", "host-iface", "host-nqn",
    "kato", "queue-size", "hdr-digest", "dhchap-secret", "dhchap-ctrl-secret", "nr-io-queues",
]  # fmt: skip
_VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["tcp", "rdma", "fc", "loop", "1.2.3.4", "::1", "4420", SECRET_48, "eth0"]),
)
_TOKENS = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(_TOKEN_KEYS), _VALUES),
    st.text(max_size=20),
)


@given(st.lists(_TOKENS, max_size=12), st.sampled_from(["stafd", "stacd"]))
def test_arbitrary_controller_strings_never_crash(tokens: list[str], daemon: str) -> None:
    value = ";".join(tokens)
    spec, notes = parse_controller(value, daemon, source=SRC)
    assert all(isinstance(n, str) and n.startswith(SRC) for n in notes)
    assert all(SECRET_48 not in n for n in notes)
    if spec is None:
        assert notes and notes[-1].endswith("ignored")
    else:
        tid = spec.as_tid_dict()
        assert tid["transport"] in ("tcp", "rdma", "fc", "loop") and tid["traddr"]
        assert daemon == "stafd" or tid["subsysnqn"]


@given(st.lists(_TOKENS, max_size=12), st.dictionaries(st.sampled_from(_TOKEN_KEYS), st.text()))
def test_arbitrary_exclude_strings_never_crash(tokens: list[str], tid: dict[str, str]) -> None:
    exclusion, notes = parse_exclusion(";".join(tokens), source=SRC)
    assert all(isinstance(n, str) for n in notes)
    if exclusion is not None and not exclusion.items:  # empty as written: upstream's match-all
        assert not ";".join(tokens).replace(";", "").strip()
        assert exclusion.matches(tid) and notes[-1].endswith("every controller is excluded")
    elif exclusion is not None:
        assert isinstance(exclusion.matches(tid), bool)
    else:
        assert notes


@given(st.text(max_size=200))
def test_fully_arbitrary_controller_text_never_crashes(value: str) -> None:
    spec, notes = parse_controller(value, "stacd", source=SRC)
    assert spec is not None or notes


def test_oversized_entries_are_dropped() -> None:
    long_value = "transport=tcp;traddr=" + "a" * 5000
    spec, notes = ctrl(long_value)
    assert spec is None
    assert notes == [f"{where(long_value)}: longer than 4096 characters, entry ignored"]
    many = ";".join(f"k{i}=v" for i in range(65))
    spec, notes = ctrl(many)
    assert spec is None
    assert notes == [f"{where(many)}: more than 64 key=value tokens, entry ignored"]
    exclusion, notes = excl(many)
    assert exclusion is None and notes[0].endswith("more than 64 key=value tokens")


def test_exclusion_traddr_must_look_like_an_address() -> None:
    exclusion, notes = excl("traddr=not an address")
    assert exclusion is None
    assert notes == [
        f"{SRC}: [Controllers] exclude=traddr=not an address: traddr=not an address: "
        "not an IP address, host name or FC address, entry ignored"
    ]
    fc = "nn-0x1000000044001123:pn-0x2000000055001123"
    exclusion, _ = excl(f"transport=fc;traddr={fc}")
    assert exclusion is not None
    assert exclusion.matches({"transport": "fc", "traddr": fc})
    assert not exclusion.matches({"transport": "tcp", "traddr": fc})
