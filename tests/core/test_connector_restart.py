"""A restarted stacd and the controllers its previous run made (no pickle: the ownership
registry says which are ours). Pure core, no Trio: messages in, effects out."""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.actors.connector_core import PREVIOUS_REASON, ConnectorState, handle
from stas.actors.connector_model import Begin, Claim, Disconnect, StartIoc
from stas.actors.stafd_client import parse_listing
from stas.coexist.exclusions import Exclusions, parse_exclusions
from stas.coexist.registry import Registry, live_claim
from stas.config import parse_service_config
from stas.kernel.api import KernelController, Uevent
from stas.messages import (
    DcLogPages,
    DcRemoved,
    KernelResync,
    StafdAppeared,
    StafdSynced,
    StafdVanished,
)
from tests.helpers.entries import HOSTID, HOSTNQN, dc_tid, dlpe, tid

DC1, DC2 = dc_tid("::1"), dc_tid("::2")


def state(text: str = "", *exclusions: str) -> ConnectorState:
    config, warnings = parse_service_config(text, "stacd")
    assert warnings == []
    if exclusions:
        listing = "[exclusions]\n" + "".join(f"exclusion = {e}\n" for e in exclusions)
        found, _ = parse_exclusions(listing, "exclusions.conf")
        config = attrs.evolve(config, nvme_exclusions=Exclusions(tuple(found), HOSTID))
    return ConnectorState(config=config, host_nqn=HOSTNQN, hostid=HOSTID)


def io(nqn: str, device: str, transport: str = "tcp") -> KernelController:
    return KernelController(
        device, transport, "::1", "4420", nqn, hostnqn=HOSTNQN, cntrltype="io", state="live"
    )


def restarted(st: ConnectorState, *ctrls: KernelController, ours: set[str]) -> list:
    """Begin with the kernel's controllers, ``ours`` owned by stacd in the registry."""
    return handle(st, Begin(tuple(ctrls), frozenset(ours)))[1]


def disconnects(fx: list) -> list[tuple[str, str]]:
    return [(e.device, e.tid.subsysnqn) for e in fx if isinstance(e, Disconnect)]


KERNEL = (io("a", "nvme0"), io("gone", "nvme1"), io("cli", "nvme2"))


def test_after_a_complete_sync_ours_that_no_page_lists_are_disconnected_once(caplog) -> None:
    caplog.set_level(logging.INFO, "stas.connector")
    st = state()
    assert disconnects(restarted(st, *KERNEL, ours={"nvme0", "nvme1"})) == []
    handle(st, StafdAppeared(":1.5"))
    _, fx = handle(st, DcLogPages(DC1, (dlpe("a"),)))
    assert [e.adopt.device for e in fx if isinstance(e, StartIoc) and e.adopt] == ["nvme0"]
    assert Claim("nvme0", fresh=False) in fx
    _, fx = handle(st, StafdSynced(()))
    # nvme1 was ours and is listed nowhere; nvme2 (nvme-cli's, unowned) is left alone
    assert disconnects(fx) == [("nvme1", "gone")]
    assert fx[0].reason == PREVIOUS_REASON
    assert PREVIOUS_REASON == "connected by stacd before its restart; no log page lists it any more"
    _, again = handle(st, StafdSynced(()))
    assert disconnects(again) == []  # remembered once: the next syncs follow normal rules


def test_before_the_sync_completes_nothing_of_ours_is_disconnected() -> None:
    st = state()
    restarted(st, *KERNEL, ours={"nvme1"})
    for msg in (StafdAppeared(":1.5"), DcLogPages(DC1, ()), StafdVanished(), DcRemoved(DC1)):
        _, fx = handle(st, msg)
        assert disconnects(fx) == [], msg
    assert st.previous  # still remembered, for the first complete sync


def test_a_partial_sync_keeps_ours_until_a_complete_one(caplog) -> None:
    """A DC unreachable (its pages a cache) or never read: what it does not list proves
    nothing, so nothing is disconnected; the next complete sync does it."""
    caplog.set_level(logging.INFO, "stas.connector")
    st = state()
    restarted(st, *KERNEL, ours={"nvme1"})
    handle(st, DcLogPages(DC1, ()))
    for _ in range(2):
        _, fx = handle(st, StafdSynced((DC2,)))
        assert disconnects(fx) == []
    kept = [r for r in caplog.records if "kept until every DC's log page is current" in r.message]
    assert len(kept) == 1 and str(DC2) in kept[0].message  # said once, naming the DC
    _, fx = handle(st, StafdSynced(()))
    assert disconnects(fx) == [("nvme1", "gone")]


def test_stacd_conf_and_nbft_keep_ours() -> None:
    st = state("[Controllers]\ncontroller=transport=tcp;traddr=::1;trsvcid=4420;nqn=gone\n")
    st = ConnectorState(
        config=st.config, host_nqn=HOSTNQN, hostid=HOSTID, boot=((tid("root"), {}),)
    )
    kernel = (io("gone", "nvme1"), io("root", "nvme3"))
    _, fx = handle(st, Begin(kernel, frozenset({"nvme1", "nvme3"})))
    adopted = sorted(e.adopt.device for e in fx if isinstance(e, StartIoc) and e.adopt)
    assert adopted == ["nvme1", "nvme3"]
    del st.owner["nvme3"]  # even with no actor holding it, a boot subsystem stays
    _, fx = handle(st, StafdSynced(()))
    assert disconnects(fx) == []


@pytest.mark.parametrize(
    ("conf", "exclusion"),
    [
        ("[I/O controller connection management]\ndisconnect-scope=no-disconnect\n", ""),
        (
            "[I/O controller connection management]\n"
            "disconnect-scope=all-connections-matching-disconnect-trtypes\n"
            "disconnect-trtypes=rdma\n",  # the audit scope keeps other transports
            "",
        ),
        ("", "nqn=gone"),  # /etc/nvme/exclusions.conf: neither connected nor disconnected
    ],
)
def test_the_rules_of_a_normal_removal_apply(conf: str, exclusion: str) -> None:
    st = state(conf, *([exclusion] if exclusion else []))
    restarted(st, io("gone", "nvme1"), ours={"nvme1"})
    _, fx = handle(st, StafdSynced(()))
    assert disconnects(fx) == []


def test_a_controller_gone_or_renamed_meanwhile_is_not_touched() -> None:
    st = state()
    restarted(st, io("gone", "nvme1"), io("other", "nvme4"), ours={"nvme1", "nvme4"})
    handle(st, Uevent("remove", "/devices/virtual/nvme-fabrics/ctl/nvme1"))
    handle(st, KernelResync((io("other", "nvme5"),)))  # nvme4 went; its name not reused
    _, fx = handle(st, StafdSynced(()))
    assert disconnects(fx) == []


def test_discovery_controllers_are_never_remembered() -> None:
    st = state()
    dc = KernelController("nvme0", "tcp", "::1", "8009", "nqn.dc", cntrltype="discovery")
    restarted(st, dc, ours={"nvme0"})
    assert st.previous == {}


def test_without_the_registry_nothing_is_remembered() -> None:
    st = state()
    restarted(st, *KERNEL, ours=set())
    _, fx = handle(st, StafdSynced(()))
    assert disconnects(fx) == []


@pytest.mark.parametrize(
    ("owner", "seqnum", "kernel", "live"),
    [
        ("stas", "120", "400", True),
        ("stas", "400", "400", True),
        ("stas", "401", "400", False),  # from the future: another boot's entry
        ("stas", "", "400", False),  # no seqnum: a broken write
        ("stas", "12x", "400", False),
        ("stas", "120", "", True),  # the kernel's unreadable: no comparison
        ("nbft", "120", "400", False),
        (None, "120", "400", False),
    ],
)
def test_a_registry_entry_is_ours_when_owned_by_stas_and_not_stale(
    owner: str | None, seqnum: str, kernel: str, live: bool
) -> None:
    assert live_claim(owner, seqnum, kernel) is live


@pytest.mark.parametrize(
    ("dc_fields", "pages", "current"),
    [
        ({"genctr": "3", "connected": "True"}, [dlpe("a")], True),
        ({"genctr": "3", "connected": "False"}, [dlpe("a")], False),  # a cache
        ({"genctr": "None", "connected": "True"}, [], False),  # never read
        ({"genctr": "3"}, [dlpe("a")], False),  # says nothing: not current
    ],
)
def test_a_dc_is_current_only_when_read_and_connected(
    dc_fields: dict[str, str], pages: list, current: bool
) -> None:
    listing = [{"discovery-controller": {**DC1.as_dict(), **dc_fields}, "log-pages": pages}]
    (item,) = parse_listing(listing)
    assert item.current is current


def test_the_registry_names_what_a_previous_run_claimed(tmp_path: Path) -> None:
    """Real files: only live ``stas`` entries of controllers the kernel lists count."""
    seq = tmp_path / "uevent_seqnum"
    seq.write_text("500\n")
    reg = Registry(tmp_path / "registry", seqnum_file=seq)
    assert reg.claimed_before(["nvme1"]) == frozenset()  # no registry at all
    for device in ("nvme1", "nvme4"):
        assert reg.claim(device, fresh=True)  # seqnum 500
    for device, owner, seqnum in (("nvme2", "nbft", "100"), ("nvme3", "stas", "9000")):
        (reg.root / device).mkdir()
        (reg.root / device / "owner").write_text(owner + "\n")
        (reg.root / device / "seqnum").write_text(seqnum + "\n")
    seq.write_text("800\n")  # the kernel moved on
    kernel = ["nvme1", "nvme2", "nvme3", "nvme5", "../nvme1"]
    assert reg.claimed_before(kernel) == {"nvme1"}  # nvme3: stale; nvme4: not in the kernel


NQNS = ("a", "b", "c", "d", "e")


@given(
    ours=st.sets(st.sampled_from(NQNS)),
    listed=st.sets(st.sampled_from(NQNS)),
    partial=st.booleans(),
)
def test_only_ours_that_nothing_lists_go_and_only_after_a_complete_sync(
    ours: set[str], listed: set[str], partial: bool
) -> None:
    s = state()
    kernel = tuple(io(nqn, f"nvme{i}") for i, nqn in enumerate(NQNS))
    devices = {c.subsysnqn: c.device for c in kernel}
    restarted(s, *kernel, ours={devices[n] for n in ours})
    handle(s, DcLogPages(DC1, tuple(dlpe(n) for n in sorted(listed))))
    _, fx = handle(s, StafdSynced((DC2,) if partial else ()))
    expected = set() if partial else {(devices[n], n) for n in ours - listed}
    assert set(disconnects(fx)) == expected
