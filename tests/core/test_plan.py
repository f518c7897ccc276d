"""stas.plan: wanted controllers, decisions per disconnect-scope, and the printed plan."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from stas.kernel.api import KernelController
from stas.kernel.options import InvalidOption
from stas.messages import IocStatus, IocWanted, Tid
from stas.plan import KernelIndex, connect_request, decide, format_plan, wanted_iocs
from tests.helpers.config import stacd_config
from tests.helpers.entries import HOSTID, HOSTNQN, WK, dc_tid, dlpe, tid

DC1 = dc_tid("::1")
DC2 = dc_tid("192.168.1.2", host_traddr="192.168.1.1", host_iface="eth0")


CONF = stacd_config()


def io(tid: Tid, device: str, **kw) -> KernelController:
    fields = dict(
        transport=tid.transport,
        traddr=tid.traddr,
        trsvcid=tid.trsvcid,
        subsysnqn=tid.subsysnqn,
        hostnqn=HOSTNQN,
        cntrltype="io",
        state="live",
    )
    return KernelController(device, **(fields | kw))  # type: ignore[arg-type]


def ioc(nqn: str, traddr: str = "::1") -> Tid:
    return tid(nqn, traddr)


def test_discovered_iocs_inherit_the_dc_host_side() -> None:
    w = wanted_iocs(
        config=stacd_config(),
        log_pages={
            DC2: [dlpe("vol", "192.168.1.9"), dlpe("ref", "192.168.1.3", subtype="referral")]
        },
        host_nqn="nqn.other",
    )
    (tid,) = w
    assert tid == Tid("tcp", "192.168.1.9", "4420", "vol", "192.168.1.1", "eth0", HOSTNQN)
    assert w[tid].origin == "discovered" and w[tid].dcs == (DC2,)
    w = wanted_iocs(
        config=stacd_config(),
        log_pages={DC2: [dlpe("vol", "192.168.1.9")]},
        host_nqn="",
        ignore_iface=True,
    )
    assert next(iter(w)).host_iface == ""


def test_ncc_from_eflags_and_every_listing_dc() -> None:
    one = wanted_iocs(
        config=stacd_config(), log_pages={DC1: [dlpe("a", eflags="4")]}, host_nqn=HOSTNQN
    )
    assert one[ioc("a")].ncc
    other_bits = wanted_iocs(
        config=stacd_config(), log_pages={DC1: [dlpe("a", eflags="3")]}, host_nqn=""
    )
    assert not other_bits[ioc("a")].ncc
    dc1b = Tid("tcp", "::2", "8009", WK, "", "", HOSTNQN)
    both = wanted_iocs(
        config=stacd_config(),
        log_pages={DC1: [dlpe("a", eflags="4")], dc1b: [dlpe("a", eflags="0")]},
        host_nqn=HOSTNQN,
    )
    assert not both[ioc("a")].ncc and both[ioc("a")].dcs == (DC1, dc1b)


def test_configured_wins_and_exclusion_wins_over_all() -> None:
    config = stacd_config(
        "[Controllers]\n"
        "controller=transport=tcp;traddr=::1;trsvcid=4420;nqn=a;kato=5\n"
        "exclude=nqn=b\n"
    )
    w = wanted_iocs(config=config, log_pages={DC1: [dlpe("a"), dlpe("b")]}, host_nqn=HOSTNQN)
    assert list(w) == [ioc("a")]
    assert w[ioc("a")].origin == "configured" and w[ioc("a")].params == {"kato": "5"}


def test_invalid_entries_are_skipped_and_logged_once(caplog) -> None:
    caplog.set_level(logging.WARNING, "stas.plan")
    pages = {
        DC1: [
            dlpe("evil,hostnqn=nqn.x"),
            dlpe("bad-addr", traddr="1.2.3.4,x"),
            dlpe("wrong-family", traddr="10.0.0.1", adrfam="ipv6"),
            dlpe("no-port", trsvcid="0"),
            dlpe("zero-addr", traddr="0.0.0.0"),
            dlpe("fine"),
        ]
    }
    assert list(wanted_iocs(config=stacd_config(), log_pages=pages, host_nqn=HOSTNQN)) == [
        ioc("fine")
    ]
    assert len(caplog.messages) == 5 and "'1.2.3.4,x'" in " ".join(caplog.messages)


def test_ip_family_filter() -> None:
    config = stacd_config("[Global]\nip-family=ipv4\n")
    pages = {DC1: [dlpe("six"), dlpe("four", traddr="10.0.0.1")]}
    assert [t.subsysnqn for t in wanted_iocs(config=config, log_pages=pages, host_nqn="")] == [
        "four"
    ]


VALID_DLPES = [
    dlpe("nqn.2014-08.io.x:a"),
    dlpe("klingons", "10.0.0.1", eflags="4"),
    dlpe("link-local", "fe80::1%eth0"),
    dlpe("r", "10.0.0.2", trtype="rdma"),
    dlpe("f", "nn-0x1000000044001123:pn-0x2000000055001123", trtype="fc", adrfam="fc", trsvcid=""),
    dlpe("l", "", trtype="loop", adrfam="", trsvcid=""),
]
# A coherent entry with some fields replaced by anything at all (or by a near miss).
DLPES = st.builds(
    lambda base, bad: base | bad,
    st.sampled_from(VALID_DLPES),
    st.dictionaries(
        st.sampled_from(["trtype", "adrfam", "traddr", "trsvcid", "subnqn", "eflags"]),
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(["", "0", "65536", "::", "1.2.3.4,x", "a,b=c", "eth0", "tcp"]),
        ),
        max_size=2,
    ),
)


@settings(max_examples=300, deadline=None)
@given(DLPES, st.sampled_from([DC1, DC2]))
def test_any_dlpe_is_skipped_or_becomes_a_valid_request(d: dict[str, str], dc: Tid) -> None:
    """Nothing a log page says can make an invalid (unsafe) ConnectRequest."""
    for w in wanted_iocs(config=CONF, log_pages={dc: [d]}, host_nqn=HOSTNQN).values():
        try:
            req = connect_request(w, CONF, HOSTID)
        except InvalidOption as exc:  # pragma: no cover - the assertion names it
            raise AssertionError(f"{d} passed the plan but not ConnectRequest: {exc}") from exc
        assert "," not in req.subsysnqn + req.traddr + req.trsvcid


def test_connect_request_global_and_overrides() -> None:
    config = stacd_config(
        "[Global]\nkato=20\nqueue-size=64\n[Controllers]\n"
        "controller=transport=tcp;traddr=::1;trsvcid=4420;nqn=a;kato=5;data-digest=true\n"
    )
    w = wanted_iocs(config=config, log_pages={DC1: [dlpe("b")]}, host_nqn=HOSTNQN)
    a, b = (
        connect_request(w[ioc("a")], config, HOSTID),
        connect_request(w[ioc("b")], config, HOSTID),
    )
    assert (a.kato, a.queue_size, a.data_digest, a.hostid) == (5, 64, True, HOSTID)
    assert (b.kato, b.queue_size, b.data_digest, b.hostnqn) == (20, 64, False, HOSTNQN)


def status(tid: Tid, device: str = "", origin: str = "discovered") -> IocStatus:
    return IocStatus(tid, origin, device=device or "nvme?", connected=bool(device))


def test_decide_connect_keep_adopt() -> None:
    wanted = {t: IocWanted(t, "discovered", dcs=(DC1,)) for t in (ioc("a"), ioc("b"), ioc("c"))}
    plan = decide(wanted, {ioc("a"): status(ioc("a"), "nvme0")}, [io(ioc("b"), "nvme3")])
    assert [t for t, _ in plan.connect] == [ioc("c")]
    assert plan.adopt == ((ioc("b"), "nvme3"),)
    assert plan.keep == ((ioc("a"), f"listed by DC {DC1}; connected as nvme0"),)
    assert plan.disconnect == ()


def test_discovery_controllers_are_never_adopted_as_iocs() -> None:
    dc = io(ioc("a"), "nvme1", cntrltype="discovery")
    plan = decide({ioc("a"): IocWanted(ioc("a"), "discovered")}, {}, [dc])
    assert plan.adopt == () and [t for t, _ in plan.connect] == [ioc("a")]


def scope_plan(scope: str, trtypes=("tcp",)):
    gone = ioc("gone")
    external = [
        io(ioc("ext"), "nvme5"),  # nvme-cli made it, in no page
        io(ioc("disc"), "nvme6", cntrltype="discovery"),
        KernelController("nvme7", transport="pcie", cntrltype="io"),
        io(Tid("rdma", "10.0.0.1", "4420", "r"), "nvme8", transport="rdma"),
        io(gone, "nvme2"),
    ]
    return decide({}, {gone: status(gone, "nvme2")}, external, scope=scope, trtypes=trtypes)


def test_scope_only_stas_connections() -> None:
    plan = scope_plan("only-stas-connections")
    assert [(d, t.subsysnqn) for d, t, _ in plan.disconnect] == [("nvme2", "gone")]
    assert plan.disconnect[0][2] == (
        "no longer in any log page; disconnect-scope=only-stas-connections"
    )


def test_scope_all_connections_matching_trtypes() -> None:
    plan = scope_plan("all-connections-matching-disconnect-trtypes")
    assert [d for d, _, _ in plan.disconnect] == ["nvme2", "nvme5"]  # never disc, pcie, rdma
    plan = scope_plan("all-connections-matching-disconnect-trtypes", ("rdma",))
    assert [d for d, _, _ in plan.disconnect] == ["nvme8"]  # tcp is kept when not listed


def test_scope_no_disconnect() -> None:
    assert scope_plan("no-disconnect").disconnect == ()


def test_removal_reasons_name_config_and_exclusion() -> None:
    config = stacd_config("[Controllers]\nexclude=nqn=a\n")
    current = {
        ioc("a"): status(ioc("a"), "nvme0"),
        ioc("b"): status(ioc("b"), "nvme1", "configured"),
    }
    plan = decide({}, current, [], config)
    assert [r for _, _, r in plan.disconnect] == [
        "excluded in stacd.conf; disconnect-scope=only-stas-connections",
        "no longer configured in stacd.conf; disconnect-scope=only-stas-connections",
    ]


def test_kernel_index_finds_by_subsystem() -> None:
    idx = KernelIndex([io(ioc("a"), "nvme0"), io(ioc("a", "::2"), "nvme1")])
    assert idx.find(ioc("a", "::2")).device == "nvme1"  # type: ignore[union-attr]
    assert idx.find(ioc("a"), skip={"nvme0": 1}) is None
    idx.remove("nvme0")
    assert idx.find(ioc("a")) is None and len(idx) == 1


def test_plan_text_for_a_mixed_case() -> None:
    config = stacd_config(
        "[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.9;trsvcid=4420;nqn=vol\n"
        "[I/O controller connection management]\n"
        "disconnect-scope=all-connections-matching-disconnect-trtypes\n"
    )
    wanted = wanted_iocs(
        config=config,
        log_pages={DC1: [dlpe("klingons"), dlpe("starfleet"), dlpe("romulans")]},
        host_nqn=HOSTNQN,
    )
    current = {
        ioc("romulans"): status(ioc("romulans"), "nvme4"),
        ioc("gone"): status(ioc("gone"), "nvme2"),
    }
    kernel = [
        io(ioc("klingons"), "nvme1"),
        io(ioc("gone"), "nvme2"),
        io(ioc("romulans"), "nvme4"),
        io(ioc("cli-made", "10.9.9.9"), "nvme5"),
    ]
    text = format_plan(decide(wanted, current, kernel, config))
    assert text.splitlines() == [
        "connect     (tcp, 10.0.0.9, 4420, vol)  <- configured in stacd.conf",
        f"connect     (tcp, ::1, 4420, starfleet)  <- listed by DC {DC1}",
        f"adopt       (tcp, ::1, 4420, klingons) as nvme1  <- listed by DC {DC1}",
        f"keep        (tcp, ::1, 4420, romulans)  <- listed by DC {DC1}; connected as nvme4",
        "disconnect  nvme2 (tcp, ::1, 4420, gone)  <- no longer in any log page; "
        "disconnect-scope=all-connections-matching-disconnect-trtypes",
        "disconnect  nvme5 (tcp, 10.9.9.9, 4420, cli-made)  <- not configured and in no log "
        "page; disconnect-trtypes=tcp",
    ]
    assert format_plan(decide({}, {}, [])) == "nothing to do"


def test_every_transport_makes_a_request() -> None:
    for dc in (DC1, DC2):
        w = wanted_iocs(config=CONF, log_pages={dc: VALID_DLPES}, host_nqn=HOSTNQN)
        reqs = {connect_request(x, CONF, HOSTID).transport for x in w.values()}
        assert len(w) == len(VALID_DLPES) and reqs == {"tcp", "rdma", "fc", "loop"}
