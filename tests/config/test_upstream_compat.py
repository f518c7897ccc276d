"""Upstream nvme-stas 2.4.1's own unit-test inputs (values, not code) give upstream's results.

Sources: upstream's test/test-timeparse.py and test/test-config.py of the 2.x line, and the
reference's description of [Controllers] (upstream section 2.6). Where this project is stricter
on purpose, the test says so and checks the stricter result.
"""

# ruff: noqa: E501  (tables of upstream inputs read best one per line)

from __future__ import annotations

from pathlib import Path

import pytest

from stas.config import (
    ConfigError,
    load_service_config,
    load_sys_config,
    parse_controller,
    parse_exclusion,
    parse_service_config,
    parse_timespan,
)

# --- timeparse (test-timeparse.py, 2.x: pytimeparse) -------------------------------------------

TIMEPARSE = [
    ("1", 1),
    ("1s", 1),
    ("1 sec", 1),
    ("1 second", 1),
    ("1 seconds", 1),
    ("1:01", 61),
    ("1 day", 24 * 60 * 60),
    ("1 hour", 60 * 60),
    ("1 min", 60),
    ("0.5", 0.5),
    ("-1", -1),
    (":22", 22),
    ("1 minute, 24 secs", 84),
    ("1.2 minutes", 72),
    ("1.2 seconds", 1.2),
    ("- 1 minute", -60),
    ("+ 1 minute", 60),
    # the reference's examples for zeroconf-connections-persistence
    ("72hours", 72 * 3600),
    ("3 days 5 hours", 3 * 86400 + 5 * 3600),
]


@pytest.mark.parametrize(("text", "seconds"), TIMEPARSE)
def test_timeparse_values(text: str, seconds: float) -> None:
    assert parse_timespan(text) == pytest.approx(seconds)


def test_timeparse_rejects_what_upstream_rejects() -> None:
    with pytest.raises(ValueError):
        parse_timespan("blah")


def test_timespan_option_takes_the_clock_forms() -> None:
    text = "[Discovery controller connection management]\nzeroconf-connections-persistence=:22\n"
    config, warnings = parse_service_config(text, "stafd")
    assert (config.zeroconf_connections_persistence, warnings) == (22, [])


# --- [Global] and [I/O controller connection management] (test-config.py, 2.x) ----------------

UPSTREAM_CONF = (
    "[Global]\n"
    "tron=true\n"
    "kato=200\n"
    "ip-family=ipv6\n"
    "\n"
    "[I/O controller connection management]\n"
    "disconnect-scope = joe\n"
    "disconnect-trtypes = bob\n"
    "connect-attempts-on-ncc = 1\n"
    "\n"
    "[Controllers]\n"
    "controller=transport=tcp;traddr=100.100.100.100;host-iface=enp0s8\n"
    "controller=transport=tcp;traddr=100.100.100.200;host-iface=enp0s7;dhchap-ctrl-secret=super-secret;hdr-digest=true;data-digest=true;nr-io-queues=8;nr-write-queues=6;nr-poll-queues=4;queue-size=400;kato=71;reconnect-delay=13;ctrl-loss-tmo=666;disable-sqflow=true\n"
    "exclude=transport=tcp;traddr=10.10.10.10\n"
)


def test_upstream_config_values() -> None:
    config, warnings = parse_service_config(UPSTREAM_CONF, "stacd", source="stacd.conf")
    assert config.tron is True
    assert (config.hdr_digest, config.data_digest) == (False, False)
    assert config.kato == 200
    assert config.ip_family == (6,)
    assert config.ignore_iface is False
    assert config.disconnect_scope == "only-stas-connections"  # "joe": warning, default
    assert config.disconnect_trtypes == ("tcp",)  # "bob": warning, default
    assert config.connect_attempts_on_ncc == 2  # 1 is raised to 2
    assert [e.as_dict() for e in config.excluded] == [{"transport": "tcp", "traddr": "10.10.10.10"}]
    assert any("disconnect-scope=joe" in w for w in warnings)
    assert any("disconnect-trtypes=bob" in w for w in warnings)
    # upstream's stacd drops controller= entries without nqn too (at connect planning time)
    assert config.controllers == ()
    assert sum("missing nqn" in w for w in warnings) == 2


def test_upstream_controller_entries() -> None:
    config, warnings = parse_service_config(UPSTREAM_CONF, "stafd", source="stafd.conf")
    first, second = config.controllers
    assert (first.transport, first.traddr, first.host_iface) == ("tcp", "100.100.100.100", "enp0s8")
    assert (second.traddr, second.host_iface) == ("100.100.100.200", "enp0s7")
    assert (second.hdr_digest, second.data_digest, second.disable_sqflow) == (True, True, True)
    assert (second.queue_size, second.kato, second.reconnect_delay, second.ctrl_loss_tmo) == (
        400, 71, 13, 666,
    )  # fmt: skip
    # I/O queue counts mean nothing for a discovery controller: stafd says so and drops them
    assert (second.nr_io_queues, second.nr_write_queues, second.nr_poll_queues) == (None,) * 3
    assert sum("not used for discovery controllers" in w for w in warnings) == 3
    # Stricter on purpose: upstream keeps "super-secret" and fails at connect time; here an
    # invalid DH-HMAC-CHAP value is dropped with a warning that never shows it.
    assert second.dhchap_ctrl_secret is None
    assert any("dhchap-ctrl-secret=***" in w for w in warnings)
    assert not any("super-secret" in w for w in warnings)
    io, _ = parse_controller(
        "transport=tcp;traddr=100.100.100.200;nqn=nqn.x;nr-io-queues=8;nr-write-queues=6;nr-poll-queues=4",
        "stacd", source="stacd.conf",
    )  # fmt: skip
    assert io is not None and (io.nr_io_queues, io.nr_write_queues, io.nr_poll_queues) == (8, 6, 4)


@pytest.mark.parametrize(
    ("text", "attr", "value"),
    [
        (
            "[I/O controller connection management]\ndisconnect-trtypes = tcp+rdma+fc\n",
            "disconnect_trtypes",
            {"fc", "tcp", "rdma"},
        ),
        (
            "[I/O controller connection management]\nconnect-attempts-on-ncc = hello\n",
            "connect_attempts_on_ncc",
            0,
        ),
        ("[Global]\nip-family=ipv4\n", "ip_family", {4}),
        ("[Global]\nip-family=ipv4+ipv6\n", "ip_family", {4, 6}),
        ("[Global]\nip-family=ipv6+ipv4\n", "ip_family", {4, 6}),
        ("[Global]\nqueue-size=5\n", "queue_size", None),  # below 16..1024: back to none
    ],
)
def test_upstream_reload_values(text: str, attr: str, value: object) -> None:
    config, _ = parse_service_config(text, "stacd")
    got = getattr(config, attr)
    assert (set(got) if isinstance(value, set) else got) == value


@pytest.mark.parametrize("text", ["[BadSection]\nfoo=bar\n", "[Global]\nbad-option=something\n"])
def test_unknown_sections_and_options_are_reported(text: str) -> None:
    _, warnings = parse_service_config(text, "stafd")
    assert len(warnings) == 1 and "unknown" in warnings[0]


# --- [Controllers] keys as upstream keeps them (issue 9 item 4) --------------------------------

SUBSYS = "nqn.2014-08.com.example:subsys1"


def test_controller_subsysnqn_is_an_alias_of_nqn() -> None:
    spec, notes = parse_controller(
        f"transport=tcp;traddr=10.0.0.1;subsysnqn={SUBSYS}", "stacd", source="stacd.conf"
    )
    assert notes == [] and spec is not None and spec.subsysnqn == SUBSYS
    spec, _ = parse_controller(
        f"transport=tcp;traddr=10.0.0.1;subsysnqn={SUBSYS}", "stafd", source="stafd.conf"
    )
    assert spec is not None and spec.subsysnqn == SUBSYS  # not the well-known NQN


def test_nqn_wins_over_subsysnqn_as_upstream() -> None:
    spec, notes = parse_controller(
        f"transport=tcp;traddr=10.0.0.1;subsysnqn=nqn.2014-08.com.example:other;nqn={SUBSYS}",
        "stacd", source="stacd.conf",
    )  # fmt: skip
    assert spec is not None and spec.subsysnqn == SUBSYS
    assert notes and notes[0].endswith(f"both nqn and subsysnqn given, nqn={SUBSYS} is used")


def test_exclude_subsysnqn_is_kept_and_matches() -> None:
    exclusion, notes = parse_exclusion(f"subsysnqn={SUBSYS}", source="stacd.conf")
    assert notes == [] and exclusion is not None
    assert exclusion.as_dict() == {"subsysnqn": SUBSYS}
    assert exclusion.matches({"transport": "tcp", "subsysnqn": SUBSYS})
    assert not exclusion.matches({"transport": "tcp", "subsysnqn": "nqn.2014-08.com.example:x"})


def test_exclude_subsysnqn_in_a_config_file() -> None:
    text = f"[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.1;nqn={SUBSYS}\nexclude=subsysnqn={SUBSYS}\n"
    config, warnings = parse_service_config(text, "stacd")
    assert warnings == []
    assert config.is_excluded(config.controllers[0].as_tid_dict())


@pytest.mark.parametrize(
    "line", ["exclude=", "exclude = ", "exclude=;;", "exclude=   # nothing yet", "blacklist="]
)
def test_empty_exclude_excludes_everything_with_a_warning(line: str) -> None:
    config, warnings = parse_service_config(f"[Controllers]\n{line}\n", "stafd")
    assert config.is_excluded({"transport": "tcp", "traddr": "10.0.0.1", "subsysnqn": SUBSYS})
    assert any(w.endswith("empty entry, every controller is excluded") for w in warnings)


def test_empty_controller_line_is_still_a_quiet_placeholder() -> None:
    config, warnings = parse_service_config("[Controllers]\ncontroller=\n", "stafd")
    assert (config.controllers, config.excluded, warnings) == ((), (), [])


def test_exclude_left_empty_by_host_traddr_is_dropped_stricter_than_upstream() -> None:
    # upstream removes host-traddr and would then match everything; a written key means
    # the user meant something narrower, so the entry is dropped with a warning here
    exclusion, notes = parse_exclusion("host-traddr=1.1.1.1", source="stacd.conf")
    assert exclusion is None and "it would exclude everything" in notes[-1]


# --- sys.conf (test-config.py, 2.x StasSysConfUnitTest) ----------------------------------------

NQN = "nqn.2014-08.org.nvmexpress:uuid:9aae2691-b275-4b64-8bfe-5da429a2bab9"
ID = "56529e15-0f3e-4ede-87e2-63932a4adb99"


def sys_conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sys.conf"
    path.write_text(text)
    return path


def test_sys_conf_direct_values(tmp_path: Path) -> None:
    config = load_sys_config(
        sys_conf(tmp_path, f"[Host]\nnqn={NQN}\nid={ID}\nsymname=Bart-Simpson\n")
    )
    assert (config.hostnqn, config.hostid, config.symname) == (NQN, ID, "Bart-Simpson")


def test_sys_conf_nqn_from_dev_null_is_none(tmp_path: Path) -> None:
    config = load_sys_config(sys_conf(tmp_path, "[Host]\nnqn=file:///dev/null\n"))
    assert config.hostnqn is None and config.symname is None


@pytest.mark.parametrize(
    "nqn",
    ["qnq.2014-08.org.nvmexpress:uuid:9aae2691-b275-4b64-8bfe-5da429a2bab9", "nqn." + "a" * 220],
)
def test_sys_conf_bad_nqn_is_none_and_id_kept(tmp_path: Path, nqn: str) -> None:
    # upstream exits; here the NQN is None with a reason and each daemon decides (it derives one)
    config = load_sys_config(sys_conf(tmp_path, f"[Host]\nnqn={nqn}\nid={ID}\n"))
    assert (config.hostnqn, config.hostid) == (None, ID)
    assert config.problems and config.problems[0].startswith("host NQN")


def test_sys_conf_missing_files(tmp_path: Path) -> None:
    missing = "file:///some/non/existing/file/!@#"
    config = load_sys_config(
        sys_conf(tmp_path, f"[Host]\nnqn={missing}\nid={missing}\nsymname={missing}\n")
    )
    assert (config.hostnqn, config.hostid, config.symname) == (None, None, None)


def test_missing_sys_conf_has_no_symname(tmp_path: Path) -> None:
    assert load_sys_config(tmp_path / "just-some-random-file-name").symname is None


def test_missing_service_conf_is_the_defaults(tmp_path: Path) -> None:
    config, warnings = load_service_config(tmp_path / "none.conf", "stafd")
    assert warnings == [] and config.kato == 30 and config.persistent_connections is True


def test_unreadable_conf_is_an_error_not_a_hang(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_service_config(tmp_path, "stafd")
