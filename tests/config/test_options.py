"""stafd.conf / stacd.conf options: defaults, converters, warnings, daemon validity."""

# ruff: noqa: E501  (tables of exact warning texts read best one per line)

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stas.config import (
    OPTIONS,
    ConfigError,
    ConfigWarning,
    ServiceConfig,
    load_service_config,
    parse_service_config,
)

STAFD_DEFAULTS = {
    "tron": False,
    "hdr_digest": False,
    "data_digest": False,
    "kato": 30,
    "queue_size": None,
    "reconnect_delay": None,
    "ctrl_loss_tmo": None,
    "disable_sqflow": None,
    "ignore_iface": False,
    "tls": False,
    "tls_key": None,
    "keyring": None,
    "ip_family": (4, 6),
    "pleo": True,
    "dc_backend": "auto",
    "zeroconf": True,
    "persistent_connections": True,
    "zeroconf_connections_persistence": 259200.0,
}
STACD_DEFAULTS = {
    "tron": False,
    "hdr_digest": False,
    "data_digest": False,
    "kato": None,
    "queue_size": None,
    "reconnect_delay": None,
    "ctrl_loss_tmo": None,
    "disable_sqflow": None,
    "nr_io_queues": None,
    "nr_write_queues": None,
    "nr_poll_queues": None,
    "ignore_iface": False,
    "tls": False,
    "tls_key": None,
    "keyring": None,
    "ip_family": (4, 6),
    "udev_rule": True,
    "disconnect_scope": "only-stas-connections",
    "disconnect_trtypes": ("tcp",),
    "connect_attempts_on_ncc": 0,
}


@pytest.mark.parametrize(
    ("daemon", "expected"), [("stafd", STAFD_DEFAULTS), ("stacd", STACD_DEFAULTS)]
)
def test_every_option_default(daemon: str, expected: dict[str, object]) -> None:
    config, warnings = parse_service_config("", daemon)  # type: ignore[arg-type]
    assert warnings == []
    assert config == ServiceConfig.defaults(daemon)  # type: ignore[arg-type]
    assert config.daemon == daemon
    assert {o.attr for o in OPTIONS if daemon in o.defaults} == set(expected)
    for attr, value in expected.items():
        assert getattr(config, attr) == value, attr
    assert config.controllers == () and config.excluded == ()


def test_missing_file_gives_defaults_without_warnings(tmp_path: Path) -> None:
    config, warnings = load_service_config(tmp_path / "stacd.conf", "stacd")
    assert (config, warnings) == (ServiceConfig.defaults("stacd"), [])


def test_load_file_names_the_path_in_warnings(tmp_path: Path) -> None:
    path = tmp_path / "stafd.conf"
    path.write_text("[Global]\nkato=-5\n")
    config, warnings = load_service_config(path, "stafd")
    assert config.kato == 30
    assert warnings == [f"{path}: [Global] kato=-5: out of range 0..2147483647, using default (30)"]


def test_unparseable_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "stafd.conf"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_service_config(path, "stafd")


def test_unknown_daemon_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="daemon must be 'stafd' or 'stacd'"):
        parse_service_config("", "stasd")  # type: ignore[arg-type]


# (daemon, section, line, attr, value)
GOOD_VALUES = [
    ("stafd", "Global", "tron=TRUE", "tron", True),
    ("stafd", "Global", "hdr-digest=true", "hdr_digest", True),
    ("stacd", "Global", "data-digest=true", "data_digest", True),
    ("stafd", "Global", "kato=0", "kato", 0),
    ("stacd", "Global", "kato=+120", "kato", 120),
    ("stafd", "Global", "queue-size=16", "queue_size", 16),
    ("stacd", "Global", "queue-size=1024", "queue_size", 1024),
    ("stacd", "Global", "reconnect-delay=1", "reconnect_delay", 1),
    ("stacd", "Global", "ctrl-loss-tmo=-1", "ctrl_loss_tmo", -1),
    ("stafd", "Global", "disable-sqflow=false", "disable_sqflow", False),
    ("stacd", "Global", "nr-io-queues=8", "nr_io_queues", 8),
    ("stacd", "Global", "nr-write-queues=0", "nr_write_queues", 0),
    ("stacd", "Global", "nr-poll-queues=2", "nr_poll_queues", 2),
    ("stacd", "Global", "ignore-iface=true", "ignore_iface", True),
    ("stafd", "Global", "ip-family=ipv4", "ip_family", (4,)),
    ("stafd", "Global", "ip-family=IPv6", "ip_family", (6,)),
    ("stacd", "Global", "ip-family=ipv6+ipv4", "ip_family", (4, 6)),
    ("stafd", "Global", "pleo=disabled", "pleo", False),
    ("stafd", "Global", "dc-backend=userspace", "dc_backend", "userspace"),
    ("stafd", "Global", "dc-backend=Kernel", "dc_backend", "kernel"),
    ("stafd", "Service Discovery", "zeroconf=disabled", "zeroconf", False),
    (
        "stafd",
        "Discovery controller connection management",
        "persistent-connections=false",
        "persistent_connections",
        False,
    ),
    (
        "stafd",
        "Discovery controller connection management",
        "zeroconf-connections-persistence=1:01",
        "zeroconf_connections_persistence",
        61.0,
    ),
    (
        "stafd",
        "Discovery controller connection management",
        "zeroconf-connections-persistence=-1",
        "zeroconf_connections_persistence",
        -1.0,
    ),
    (
        "stacd",
        "I/O controller connection management",
        "disconnect-scope=no-disconnect",
        "disconnect_scope",
        "no-disconnect",
    ),
    (
        "stacd",
        "I/O controller connection management",
        "disconnect-trtypes=tcp+rdma+fc+tcp",
        "disconnect_trtypes",
        ("tcp", "rdma", "fc"),
    ),
    (
        "stacd",
        "I/O controller connection management",
        "connect-attempts-on-ncc=5",
        "connect_attempts_on_ncc",
        5,
    ),
]


@pytest.mark.parametrize(("daemon", "section", "line", "attr", "value"), GOOD_VALUES)
def test_good_values(daemon: str, section: str, line: str, attr: str, value: object) -> None:
    config, warnings = parse_service_config(f"[{section}]\n{line}\n", daemon)  # type: ignore[arg-type]
    assert warnings == []
    assert getattr(config, attr) == value


G = "Global"
DCM = "Discovery controller connection management"
IOM = "I/O controller connection management"
# (daemon, section, line, reason, default shown)
BAD_VALUES = [
    ("stafd", G, "tron=yes", "expected true or false", "false"),
    ("stafd", G, "hdr-digest=1", "expected true or false", "false"),
    ("stacd", G, "data-digest=on", "expected true or false", "false"),
    ("stafd", G, "kato=abc", "not an integer", "30"),
    ("stacd", G, "kato=-1", "out of range 0..2147483647", "none"),
    ("stafd", G, "kato=1.5", "not an integer", "30"),
    ("stafd", G, "queue-size=2000", "out of range 16..1024", "none"),
    ("stacd", G, "queue-size=15", "out of range 16..1024", "none"),
    ("stacd", G, "reconnect-delay=0", "out of range 1..2147483647", "none"),
    ("stacd", G, "ctrl-loss-tmo=-2", "out of range -1..2147483647", "none"),
    ("stacd", G, "ctrl-loss-tmo=99999999999", "out of range -1..2147483647", "none"),
    ("stafd", G, "disable-sqflow=maybe", "expected true or false", "none"),
    ("stacd", G, "nr-io-queues=0", "out of range 1..2147483647", "none"),
    ("stacd", G, "nr-write-queues=-1", "out of range 0..2147483647", "none"),
    ("stacd", G, "nr-poll-queues=x", "not an integer", "none"),
    ("stacd", G, "ignore-iface=enabled", "expected true or false", "false"),
    ("stafd", G, "ip-family=ipv5", "expected ipv4, ipv6, ipv4+ipv6 or ipv6+ipv4", "ipv4+ipv6"),
    ("stafd", G, "pleo=true", "expected enabled or disabled", "enabled"),
    ("stafd", G, "dc-backend=spdk", "expected auto, kernel or userspace", "auto"),
    ("stafd", "Service Discovery", "zeroconf=off", "expected enabled or disabled", "enabled"),
    ("stafd", DCM, "persistent-connections=no", "expected true or false", "true"),
    (
        "stafd",
        DCM,
        "zeroconf-connections-persistence=2 years",
        "not a time span (unknown time unit 'years')",
        "259200 s",
    ),
    (
        "stafd",
        DCM,
        "zeroconf-connections-persistence=-5",
        "negative; only -1 (forever) is allowed",
        "259200 s",
    ),
    (
        "stacd",
        IOM,
        "disconnect-scope=all",
        "expected only-stas-connections, all-connections-matching-disconnect-trtypes "
        "or no-disconnect",
        "only-stas-connections",
    ),
    ("stacd", IOM, "disconnect-trtypes=pcie", "no valid item", "tcp"),
    ("stacd", IOM, "connect-attempts-on-ncc=-3", "out of range 0..2147483647", "0"),
]


@pytest.mark.parametrize(("daemon", "section", "line", "reason", "shown"), BAD_VALUES)
def test_bad_values_warn_and_use_the_default(
    daemon: str, section: str, line: str, reason: str, shown: str
) -> None:
    source = f"{daemon}.conf"
    config, warnings = parse_service_config(f"[{section}]\n{line}\n", daemon, source=source)  # type: ignore[arg-type]
    extra = [f"{source}: [{section}] {line}: 'pcie' dropped: expected tcp, rdma or fc"]
    expected = [f"{source}: [{section}] {line}: {reason}, using default ({shown})"]
    assert warnings == (extra + expected if "pcie" in line else expected)
    assert all(isinstance(w, ConfigWarning) for w in warnings)
    assert config == ServiceConfig.defaults(daemon)  # type: ignore[arg-type]


def test_brief_example_warning_text() -> None:
    _, warnings = parse_service_config("[Global]\nqueue-size=2000\n", "stafd")
    assert warnings == [
        "stafd.conf: [Global] queue-size=2000: out of range 16..1024, using default (none)"
    ]


def test_list_option_drops_bad_items_with_a_warning() -> None:
    config, warnings = parse_service_config(f"[{IOM}]\ndisconnect-trtypes=rdma+pcie+\n", "stacd")
    assert config.disconnect_trtypes == ("rdma",)
    assert warnings == [
        f"stafd.conf: [{IOM}] disconnect-trtypes=rdma+pcie+: 'pcie' dropped: "
        "expected tcp, rdma or fc"
    ]


def test_connect_attempts_on_ncc_one_is_raised_to_two() -> None:
    config, warnings = parse_service_config(
        f"[{IOM}]\nconnect-attempts-on-ncc=1\n", "stacd", source="stacd.conf"
    )
    assert config.connect_attempts_on_ncc == 2
    assert warnings == [f"stacd.conf: [{IOM}] connect-attempts-on-ncc=1: 1 is raised to 2"]


def test_bare_key_warns_and_uses_default() -> None:
    config, warnings = parse_service_config("[Global]\ntron\n", "stafd")
    assert not config.tron
    assert warnings == ["stafd.conf: [Global] tron: no value, using default (false)"]


def test_empty_value_warns_and_uses_default() -> None:
    config, warnings = parse_service_config("[Global]\nkato=\n", "stafd")
    assert config.kato == 30
    assert warnings == ["stafd.conf: [Global] kato=: not an integer, using default (30)"]


def test_multiline_value_is_shown_escaped() -> None:
    _, warnings = parse_service_config("[Global]\nkato=1\n  2\n", "stafd")
    assert warnings == ["stafd.conf: [Global] kato=1\\n2: not an integer, using default (30)"]


def test_last_scalar_wins_even_if_bad() -> None:
    config, warnings = parse_service_config("[Global]\nkato=10\nkato=20\n", "stafd")
    assert config.kato == 20 and warnings == []
    config, warnings = parse_service_config("[Global]\nkato=10\nkato=x\n", "stafd")
    assert config.kato == 30
    assert warnings == ["stafd.conf: [Global] kato=x: not an integer, using default (30)"]


def test_duplicate_sections_merge_and_option_names_ignore_case() -> None:
    config, warnings = parse_service_config("[Global]\nKATO=5\n[Global]\nTron=true\n", "stafd")
    assert (config.kato, config.tron, warnings) == (5, True, [])


def test_inline_comment_stripped_from_values() -> None:
    text = "[Global]\ntron=true   # debugging\nkato = 10 ; short\n"
    config, warnings = parse_service_config(text, "stafd")
    assert (config.tron, config.kato, warnings) == (True, 10, [])


def test_unknown_sections_and_options() -> None:
    text = "[Global]\nfoo=1\nzeroconf=enabled\n[Bogus]\nx=1\n[Bogus]\n[global]\ntron=true\n"
    config, warnings = parse_service_config(text, "stafd")
    assert warnings == [
        "stafd.conf: [Bogus]: unknown section, ignored",
        "stafd.conf: [global]: unknown section, ignored "
        "(section names are case-sensitive: did you mean [Global]?)",
        "stafd.conf: [Global] foo: unknown option, ignored",
        "stafd.conf: [Global] zeroconf: unknown option in this section "
        "(it belongs in [Service Discovery]), ignored",
    ]
    assert config.tron is False


@pytest.mark.parametrize(
    ("daemon", "text", "warning"),
    [
        ("stacd", "[Global]\npleo=disabled\n", "[Global] pleo: not a stacd option (only stafd reads it), ignored"),
        ("stafd", "[Global]\nnr-io-queues=4\n", "[Global] nr-io-queues: not a stafd option (only stacd reads it), ignored"),
        ("stacd", "[Global]\ndc-backend=kernel\n", "[Global] dc-backend: not a stacd option (only stafd reads it), ignored"),
        ("stacd", "[Service Discovery]\nzeroconf=disabled\n", "[Service Discovery]: section only used by stafd, ignored"),
        ("stafd", f"[{IOM}]\ndisconnect-scope=no-disconnect\n", f"[{IOM}]: section only used by stacd, ignored"),
    ],
)  # fmt: skip
def test_options_invalid_for_the_daemon(daemon: str, text: str, warning: str) -> None:
    config, warnings = parse_service_config(text, daemon, source="x.conf")  # type: ignore[arg-type]
    assert warnings == [f"x.conf: {warning}"]
    assert config == ServiceConfig.defaults(daemon)  # type: ignore[arg-type]


def test_obsolete_options_are_named_as_such() -> None:
    _, warnings = parse_service_config(
        "[Global]\nsticky-connections=disabled\n", "stacd", source="stacd.conf"
    )
    assert warnings == [
        "stacd.conf: [Global] sticky-connections: obsolete since 2.0, replaced by "
        f"[{IOM}] disconnect-scope, ignored",
    ]


@pytest.mark.parametrize(("text", "value"), [("enabled", True), ("Disabled", False)])
def test_udev_rule_is_a_stacd_option_again(text: str, value: bool) -> None:
    """Upstream 2.x's udev-rule= (stas.coexist.udev_rule): enabled by default."""
    assert ServiceConfig.defaults("stacd").udev_rule is True
    config, warnings = parse_service_config(f"[Global]\nudev-rule={text}\n", "stacd")
    assert (config.udev_rule, warnings) == (value, [])
    _, warnings = parse_service_config("[Global]\nudev-rule=off\n", "stacd", source="s.conf")
    assert warnings == [
        "s.conf: [Global] udev-rule=off: expected enabled or disabled, using default (enabled)"
    ]
    _, warnings = parse_service_config("[Global]\nudev-rule=disabled\n", "stafd", source="f")
    assert warnings == ["f: [Global] udev-rule: not a stafd option (only stacd reads it), ignored"]


UPSTREAM_STYLE_TEMPLATE = """\
# Configuration file for stafd, in the style of the shipped template
[Global]
#tron=false
#hdr-digest=false
#kato=30
#ip-family=ipv4+ipv6
tron=true

[Service Discovery]
#zeroconf=enabled

[Discovery controller connection management]
#persistent-connections=true
#zeroconf-connections-persistence=72hours
zeroconf-connections-persistence=72hours

[Controllers]
#controller=
controller=transport=tcp;traddr=localhost
#exclude=transport=tcp;traddr=10.10.10.10
#exclude = host-iface=enp0s8   # comment
"""


def test_upstream_style_template_loads_cleanly() -> None:
    config, warnings = parse_service_config(UPSTREAM_STYLE_TEMPLATE, "stafd")
    assert warnings == []
    assert config.tron and config.zeroconf_connections_persistence == 259200
    assert [(c.traddr, c.trsvcid) for c in config.controllers] == [("localhost", "8009")]


def test_legacy_global_persistent_connections() -> None:
    config, warnings = parse_service_config("[Global]\npersistent-connections=false\n", "stafd")
    assert config.persistent_connections is False
    assert warnings == [
        "stafd.conf: [Global] persistent-connections is deprecated, use "
        f"[{DCM}] persistent-connections instead"
    ]


def test_new_section_wins_over_legacy_alias_whatever_the_order() -> None:
    text = f"[{DCM}]\npersistent-connections=true\n[Global]\npersistent-connections=false\n"
    config, _ = parse_service_config(text, "stafd")
    assert config.persistent_connections is True


def test_legacy_alias_is_not_a_stacd_option() -> None:
    _, warnings = parse_service_config("[Global]\npersistent-connections=false\n", "stacd")
    assert warnings == ["stafd.conf: [Global] persistent-connections: unknown option, ignored"]


def test_warnings_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stas.config"):
        _, warnings = parse_service_config("[Global]\ntron=maybe\n", "stafd")
    assert [r.getMessage() for r in caplog.records if r.name == "stas.config"] == warnings


def test_persistence_forever_property() -> None:
    config, _ = parse_service_config(f"[{DCM}]\nzeroconf-connections-persistence=-1\n", "stafd")
    assert config.zeroconf_persistence_forever
    assert not ServiceConfig.defaults("stafd").zeroconf_persistence_forever


_KEYS = [o.name for o in OPTIONS] + ["controller", "exclude", "blacklist", "foo"]
_LINES = st.one_of(
    st.text(max_size=60),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(_KEYS), st.text(max_size=60)),
    st.sampled_from(
        ["[Global]", "[Controllers]", "[Service Discovery]", f"[{DCM}]", f"[{IOM}]", "  x", ""]
    ),
)


@settings(max_examples=300)
@given(st.lists(_LINES, max_size=20), st.sampled_from(["stafd", "stacd"]))
def test_arbitrary_text_gives_config_and_warnings_or_config_error(
    lines: list[str], daemon: str
) -> None:
    text = "\n".join(lines)
    try:
        config, warnings = parse_service_config(text, daemon)  # type: ignore[arg-type]
    except ConfigError as e:
        assert str(e).startswith("stafd.conf: ")
    else:
        assert isinstance(config, ServiceConfig)
        assert all(isinstance(w, ConfigWarning) and w.startswith("stafd.conf:") for w in warnings)


@given(st.text(max_size=300))
def test_fully_arbitrary_text_never_crashes(text: str) -> None:
    with contextlib.suppress(ConfigError):
        config, warnings = parse_service_config("[Global]\n" + text, "stafd")
        assert isinstance(config, ServiceConfig) and all(isinstance(w, str) for w in warnings)
