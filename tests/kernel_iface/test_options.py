"""ConnectRequest and its validators: kernel-accepted values only, no option injection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stas.kernel import options as opt
from stas.kernel.api import INT_RANGES, ConnectRequest
from stas.kernel.options import InvalidOption
from tests.helpers.kernel import req
from tests.helpers.secrets import dhchap_key

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
HOSTID = "0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"


def secret(hh: int = 1, size: int = 32, pad_char: bytes = b"k") -> str:
    return dhchap_key(pad_char * size, f"{hh:02d}")


SECRET = secret()
SECRET48 = secret(2, 48)  # base64 with '==' padding: upstream's parser drops these
SECRET64 = secret(3, 64)


def full(**kw: object) -> ConnectRequest:
    """Every optional string set, so each field's value is one token."""
    base: dict[str, object] = dict(
        hostid=HOSTID,
        host_traddr="::2",
        host_iface="eth0",
        dhchap_secret=SECRET,
        dhchap_ctrl_secret=SECRET48,
    )
    return req(**(base | kw))


def keys(option_string: str) -> list[str]:
    return [token.split("=", 1)[0] for token in option_string.split(",")]


# --- rendering ---------------------------------------------------------------------------------


def test_option_string_every_field_in_kernel_order() -> None:
    r = full(
        kato=30,
        queue_size=64,
        nr_io_queues=4,
        nr_write_queues=2,
        nr_poll_queues=1,
        reconnect_delay=5,
        ctrl_loss_tmo=-1,
        fast_io_fail_tmo=20,
        tos=0,
        hdr_digest=True,
        data_digest=True,
        duplicate_connect=True,
        disable_sqflow=True,
        discovery=True,
    )
    assert r.option_string() == (
        f"transport=tcp,traddr=::1,trsvcid=4420,nqn=klingons,hostnqn={HOSTNQN},"
        f"hostid={HOSTID},host_traddr=::2,host_iface=eth0,keep_alive_tmo=30,queue_size=64,"
        "nr_io_queues=4,nr_write_queues=2,nr_poll_queues=1,reconnect_delay=5,ctrl_loss_tmo=-1,"
        "fast_io_fail_tmo=20,tos=0,hdr_digest,data_digest,duplicate_connect,disable_sqflow,"
        "discovery,dhchap_secret=<redacted>,dhchap_ctrl_secret=<redacted>"
    )
    clear = r.option_string(redact=False)
    assert clear.endswith(f",dhchap_secret={SECRET},dhchap_ctrl_secret={SECRET48}")


def test_minimal_strings_per_transport() -> None:
    assert (
        req().option_string()
        == f"transport=tcp,traddr=::1,trsvcid=4420,nqn=klingons,hostnqn={HOSTNQN}"
    )
    fc = req(
        transport="fc",
        traddr="nn-0x20000090fa942779:pn-0x10000090fa942779",
        trsvcid="",
        host_traddr="nn-0x20000090fa942780:pn-0x10000090fa942780",
    )
    assert fc.option_string().startswith(
        "transport=fc,traddr=nn-0x20000090fa942779:pn-0x10000090fa942779,nqn=klingons,"
    )
    assert req(transport="loop", traddr="", trsvcid="").option_string() == (
        f"transport=loop,nqn=klingons,hostnqn={HOSTNQN}"
    )


def test_zero_write_and_poll_queues_mean_unset_like_libnvme() -> None:
    assert "queues" not in req(nr_write_queues=0, nr_poll_queues=0).option_string()


def test_secrets_never_in_repr_or_errors() -> None:
    r = full()
    assert SECRET not in repr(r) and SECRET48 not in repr(r)
    bad = "DHHC-1:01:" + "A" * 40 + ",hostnqn=x:"
    with pytest.raises(InvalidOption) as info:
        req(dhchap_secret=bad)
    assert "<secret>" in str(info.value) and "hostnqn=x" not in str(info.value)
    assert info.value.field == "dhchap_secret"


def test_all_secret_sizes_accepted() -> None:
    for s in (SECRET, SECRET48, SECRET64, secret(0, 32)):
        assert req(dhchap_secret=s).dhchap_secret == s


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value,why",
    [
        ("transport", "pcie", "is not tcp"),
        ("transport", "TCP", "is not tcp"),
        ("subsysnqn", "klingons,hostnqn=nqn.evil", "printable ASCII"),
        ("subsysnqn", "a=b", "printable ASCII"),
        ("subsysnqn", "line\nbreak", "printable ASCII"),
        ("subsysnqn", "with space", "printable ASCII"),
        ("subsysnqn", "caf\u00e9", "printable ASCII"),
        ("subsysnqn", "", "must not be empty"),
        ("subsysnqn", "x" * 224, "longer than 223"),
        ("hostnqn", "not-an-nqn", "must start with 'nqn.'"),
        ("hostid", "1234", "is not a UUID"),
        ("hostid", "{0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10}", "is not a UUID"),
        ("hostid", "urn:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10", "is not a UUID"),
        ("traddr", "1.2.3.4,ctrl_loss_tmo=0", "is not an IP address"),
        ("traddr", "storage.example.com", "is not an IP address"),
        ("traddr", "::1%eth0", "link-local"),
        ("traddr", "fe80::1%eth0,x", "no interface name"),
        ("traddr", "0.0.0.0", "unicast"),
        ("traddr", "::", "unicast"),
        ("traddr", "ff02::1", "unicast"),
        ("traddr", "", "is not an IP address"),
        ("trsvcid", "4420,x", "port number"),
        ("trsvcid", "0", "port number"),
        ("trsvcid", "65536", "port number"),
        ("trsvcid", "+4420", "port number"),
        ("trsvcid", " 4420", "port number"),
        ("trsvcid", "04420", "port number"),
        ("trsvcid", "\u0664\u0664\u0662\u0660", "port number"),  # Arabic-Indic digits
        ("trsvcid", "", "port number"),
        ("host_traddr", "10.0.0.1\n", "is not an IP address"),
        ("host_iface", "eth0,nr_io_queues=1", "interface name"),
        ("host_iface", "a/b", "interface name"),
        ("host_iface", "a" * 16, "interface name"),
        ("host_iface", "..", "interface name"),
        ("host_iface", "eth 0", "interface name"),
        ("dhchap_secret", "DHHC-1:00:abc,=:", "DHHC-1"),
        ("dhchap_secret", "DHHC-1:04:" + SECRET[10:], "DHHC-1"),
        ("dhchap_secret", secret(1, 31), "32, 48 or 64"),
        ("dhchap_ctrl_secret", "DHHC-1:01:a===:", "DHHC-1"),
    ],
)
def test_bad_values_are_refused_by_name(field: str, value: str, why: str) -> None:
    with pytest.raises(InvalidOption) as info:
        req(**{field: value})
    assert info.value.field.startswith(field) or info.value.field == "transport"
    assert why in str(info.value)
    if "secret" not in field and value and len(value) < 60:
        assert repr(value) in str(info.value)  # the message names the bad value


@pytest.mark.parametrize(
    "kw",
    [
        {"transport": "fc", "traddr": "nn-0x1:pn-0x2", "trsvcid": ""},
        {"transport": "fc", "traddr": "NN-0x20000090fa942779:pn-0x10000090fa942779", "trsvcid": ""},
        {"transport": "fc", "traddr": "nn-0x20000090fa942779:pn-0x10000090fa942779"},  # trsvcid
        {"transport": "loop", "traddr": "", "trsvcid": "", "host_traddr": "::1"},
        {"transport": "loop", "traddr": "::1", "trsvcid": ""},
        {"transport": "rdma", "host_iface": "eth0"},
        {"transport": "tcp", "host_traddr": "nn-0x20000090fa942779:pn-0x10000090fa942779"},
    ],
)
def test_transport_specific_shapes(kw: dict[str, str]) -> None:
    with pytest.raises(InvalidOption):
        req(**kw)


def test_good_addresses() -> None:
    assert req(traddr="fe80::1%eth0").traddr == "fe80::1%eth0"
    assert req(traddr="192.168.1.20", host_traddr="192.168.1.2").host_traddr == "192.168.1.2"
    assert req(transport="rdma", traddr="10.0.0.1", trsvcid="4420").transport == "rdma"
    assert opt.check_traddr("tcp", "FE80::0001") == "fe80::1"
    assert opt.check_traddr("fc", "nn-0x20000090FA942779:pn-0x10000090fa942779").startswith(
        "nn-0x20000090fa"
    )
    assert opt.check_uuid("hostid", HOSTID.upper()) == HOSTID


@pytest.mark.parametrize("name", sorted(INT_RANGES))
def test_integer_bounds(name: str) -> None:
    lo, hi = (*INT_RANGES[name], opt.INT32_MAX)[:2]
    assert getattr(req(**{name: lo}), name) == lo
    assert getattr(req(**{name: hi}), name) == hi
    for bad in (lo - 1, hi + 1, True, "5", 5.0, 2**63):
        with pytest.raises(InvalidOption, match=name):
            req(**{name: bad})


def test_kernel_ranges_spelled_out() -> None:
    assert INT_RANGES["queue_size"] == (16, 1024)
    assert INT_RANGES["tos"] == (0, 255)  # the kernel refuses a negative tos
    assert INT_RANGES["reconnect_delay"] == (1,) and INT_RANGES["nr_io_queues"] == (1,)


@pytest.mark.parametrize("flag", ["hdr_digest", "data_digest", "disable_sqflow", "discovery"])
def test_flags_must_be_bools(flag: str) -> None:
    with pytest.raises(InvalidOption, match=flag):
        req(**{flag: "true"})


def test_hostile_value_is_shortened_in_the_message() -> None:
    with pytest.raises(InvalidOption) as info:
        req(subsysnqn="," * 10_000)
    assert len(str(info.value)) < 200


# --- the injection property --------------------------------------------------------------------

STRING_FIELDS = [
    "transport",
    "traddr",
    "trsvcid",
    "subsysnqn",
    "hostnqn",
    "hostid",
    "host_traddr",
    "host_iface",
    "dhchap_secret",
    "dhchap_ctrl_secret",
]
OPTIONAL = {"hostid", "host_traddr", "host_iface"}
HOSTILE = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(",=\n\r\t %:.-/0123456789abcdefnqDHC+")),
        st.characters(codec="utf-8"),
    ),
    max_size=80,
)
EXPECTED_KEYS = keys(full().option_string())


@settings(max_examples=400)
@given(field=st.sampled_from(STRING_FIELDS), value=HOSTILE)
def test_no_string_can_inject_options(field: str, value: str) -> None:
    try:
        r = full(**{field: value})
    except InvalidOption as exc:
        if field != "transport":  # another transport may make other fields wrong
            assert exc.field == field
        return
    s = r.option_string(redact=False)
    expected = [k for k in EXPECTED_KEYS if not (k == field and field in OPTIONAL and not value)]
    assert keys(s) == expected
    assert "\n" not in s and "\r" not in s and "\0" not in s
    assert s.isascii()


@given(name=st.sampled_from(sorted(INT_RANGES)), value=st.integers())
def test_integers_render_as_one_token(name: str, value: int) -> None:
    try:
        r = req(**{name: value})
    except InvalidOption:
        return
    key = "keep_alive_tmo" if name == "kato" else name
    tokens = r.option_string().split(",")
    assert (f"{key}={value}" in tokens) or (value == 0 and name.startswith("nr_"))


def test_auth_failures_get_a_hint_that_names_the_settings() -> None:
    """The kernel's EKEYREJECTED/ENOKEY texts say nothing about which setting to check."""
    import errno

    rejected = opt.auth_failure_hint(errno.EKEYREJECTED)
    assert "authentication failed" in rejected and "dhchap-ctrl-secret" in rejected
    assert "requires DH-HMAC-CHAP" in opt.auth_failure_hint(errno.ENOKEY)
    assert opt.auth_failure_hint(errno.ECONNREFUSED) == ""
    assert opt.auth_failure_hint(None) == ""
