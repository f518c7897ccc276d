"""When stacd and stafd use TLS (stas.tls_policy): configuration, and what a log page entry's
TREQ/TSAS demand (connected with TLS or not at all); ``tsas`` in the DLPE dicts; the
userspace discovery host's refusal."""

from __future__ import annotations

import pytest

from stas.actors.dc import connection_params
from stas.actors.dc_backend import UserspaceBackend
from stas.config import parse_service_config
from stas.kernel.options import InvalidOption
from stas.messages import Dlpe, IocWanted, Tid
from stas.messages_stacd import treq_number
from stas.nvme.errors import DiscoveryError
from stas.nvme.host_ops import HostIdentity
from stas.nvme.logpage import LogPageEntry
from stas.nvme.tls_psk import ConfiguredPsk, format_interchange
from stas.plan import connect_request
from stas.tls_policy import USERSPACE_REFUSAL, dlpe_requires_tls, tls_fields
from tests.helpers.config import stacd_config

PSK = format_interchange(ConfiguredPsk(bytes(range(32)), 1))
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:7a1c0000-0000-4000-8000-0000000071a1"
TID = Tid("tcp", "::1", "4420", "sealed", "", "", HOSTNQN)


def dlpe(treq: int, sectype: int, trtype: int = 3) -> dict[str, str]:
    tsas = bytes([sectype]) + bytes(255)
    e = LogPageEntry(trtype, 2, 2, treq, 1, 0xFFFF, 32, 0, "4420", "sealed", "::1", tsas)
    return e.to_dlpe()


def typed(treq: int, sectype: int) -> Dlpe:
    """stacd's entry for ``dlpe(treq, sectype)``, parsed where the dict enters stacd."""
    e = Dlpe.parse(dlpe(treq, sectype))
    assert e is not None
    return e


def test_tsas_in_the_dlpe_dict_as_libnvme_spells_the_sectype() -> None:
    assert dlpe(1, 2)["tsas"] == "tls1.3"
    assert dlpe(1, 1)["tsas"] == "tls"
    assert dlpe(1, 7)["tsas"] == "reserved"
    assert "tsas" not in dlpe(0, 0)  # plain entries look as before (libnvme 1.x, nvme-stas 2.x)
    assert "tsas" not in dlpe(1, 2, trtype=1)  # RDMA's TSAS is not a security type


@pytest.mark.parametrize(
    ("treq", "sectype", "required"),
    [(1, 2, True), (1, 0, True), (5, 2, True), (2, 2, False), (0, 2, False), (0, 0, False)],
)
def test_which_entries_require_tls(treq: int, sectype: int, required: bool) -> None:
    assert dlpe_requires_tls(typed(treq, sectype)) is required


def test_an_entry_requiring_tls_1_2_is_refused_naming_it() -> None:
    with pytest.raises(InvalidOption) as info:
        dlpe_requires_tls(typed(1, 1))
    assert "sealed at ::1:4420" in str(info.value) and "TLS 1.3" in str(info.value)


@pytest.mark.parametrize(
    ("text", "bits"), [("required", 1), ("not required", 2), ("5", 1), ("x", 0), ("", 0)]
)
def test_treq_text(text: str, bits: int) -> None:
    """The DLPE dict's ``treq`` (libnvme's word or a number) as stacd's ``Dlpe`` reads it."""
    assert treq_number(text) & 0x3 == bits
    e = Dlpe.parse({**dlpe(0, 0), "treq": text})
    assert e is not None and e.treq & 0x3 == bits


def test_tls_fields() -> None:
    off = {"tls": False, "tls_key": None, "keyring": None}
    assert tls_fields({}, "tcp") == off
    assert tls_fields({}, "tcp", tls=True, tls_key=PSK) == {
        "tls": True, "tls_key": PSK, "keyring": None,
    }  # fmt: skip
    assert tls_fields({"tls": "false"}, "tcp", tls=True) == off  # the controller wins
    assert tls_fields({"tls": "true", "keyring": "5"}, "tcp", keyring=".nvme")["keyring"] == "5"
    assert tls_fields({}, "rdma", tls=True) == off  # [Global] tls=true: tcp only
    assert tls_fields({}, "tcp", dlpe(1, 2))["tls"] is True  # the entry forces it
    assert tls_fields({}, "tcp", dlpe(2, 2)) == off  # TLS offered, not required
    with pytest.raises(InvalidOption, match="requires TLS: not connected"):
        tls_fields({"tls": "false"}, "tcp", dlpe(1, 2))


def test_stacds_typed_entry_decides_by_its_fields_not_a_dict() -> None:
    """The connector hands tls_fields the ``Dlpe`` itself: TREQ and SECTYPE typed once where
    the dict entered stacd. Built here with no dict behind it (its mapping is empty), so only
    the typed fields can demand TLS."""
    bare = Dlpe("tcp", "ipv6", "::1", "4420", "sealed", "nvme", treq=1, sectype="tls1.3")
    assert dict(bare) == {}
    assert tls_fields({}, "tcp", bare)["tls"] is True
    with pytest.raises(InvalidOption, match=r"sealed at ::1:4420 requires TLS: not connected"):
        tls_fields({"tls": "false"}, "tcp", bare)
    tls12 = Dlpe("tcp", "ipv6", "::1", "4420", "sealed", "nvme", treq=5, sectype="tls")
    with pytest.raises(InvalidOption, match=r"other than TLS 1\.3"):
        tls_fields({}, "tcp", tls12)
    parsed = Dlpe.parse(dlpe(1, 2))
    assert parsed is not None and (parsed.treq, parsed.sectype) == (1, "tls1.3")
    req = connect_request(IocWanted(TID, "discovered", dcs=(TID,)), stacd_config(), "", parsed)
    assert req.tls and req.option_string().endswith(",tls")
    offered = Dlpe.parse(dlpe(2, 2))
    assert offered is not None and tls_fields({}, "tcp", offered)["tls"] is False


def test_stacd_connects_a_tls_required_entry_with_tls() -> None:
    w = IocWanted(TID, "discovered", dcs=(TID,))
    req = connect_request(w, stacd_config(), "", dlpe(1, 2))
    assert req.tls and req.option_string().endswith(",tls")
    plain = connect_request(w, stacd_config(), "", dlpe(0, 0))
    assert not plain.tls and "tls" not in plain.option_string().split(",")


def test_stacd_tls_from_global_and_per_controller() -> None:
    config = stacd_config(f"[Global]\ntls=true\ntls-key={PSK}\nkeyring=.nvme\n")
    req = connect_request(IocWanted(TID, "discovered"), config, "")
    assert (req.tls, req.tls_key, req.keyring) == (True, PSK, ".nvme")
    assert PSK not in req.option_string()
    w = IocWanted(TID, "configured", params={"tls": "false"})
    assert not connect_request(w, config, "").tls
    with pytest.raises(InvalidOption, match="requires TLS"):
        connect_request(w, config, "", dlpe(1, 2))


def test_stafd_passes_global_tls_to_dcs() -> None:
    config, _ = parse_service_config(f"[Global]\ntls=true\ntls-key={PSK}\n", "stafd")
    params = connection_params(config)
    assert (params["tls"], params["tls-key"]) == ("true", PSK)
    plain, _ = parse_service_config("", "stafd")
    assert not {"tls", "tls-key", "keyring"} & set(connection_params(plain))


async def test_the_userspace_host_refuses_a_tls_dc_with_one_message() -> None:
    backend = UserspaceBackend(HostIdentity(hostnqn=HOSTNQN, hostid=bytes(16)))
    with pytest.raises(DiscoveryError) as info:
        async with backend.connect(TID, {"tls": "true"}, persistent=False):
            pytest.fail("connected")
    assert str(info.value) == f"{TID}: {USERSPACE_REFUSAL}"


async def test_the_connector_honours_the_entrys_treq_and_tsas(autojump_clock: object) -> None:
    """Through stacd's connector on the fake kernel: the TLS-required entry is connected with
    ``tls``, the plain one without, the TLS 1.2 one not at all (one warning naming it)."""
    import logging

    import trio
    from trio_util import AsyncValue

    from stas.actors.connector import Connector
    from stas.actors.ioc import IocSettings
    from stas.kernel.fake import FakeKernel
    from stas.messages import DcLogPages, StacdSnapshot
    from tests.helpers.entries import HOSTID, dc_tid
    from tests.helpers.entries import dlpe as plain_dlpe

    kernel = FakeKernel()
    published = AsyncValue(StacdSnapshot())
    connector = Connector(
        config=stacd_config(), host_nqn=HOSTNQN, hostid=HOSTID, kernel=kernel,
        published=published, settings=IocSettings(jitter=0.0),
    )  # fmt: skip
    entries = (
        plain_dlpe("sealed", treq="required", tsas="tls1.3"),
        plain_dlpe("open"),
        plain_dlpe("old", treq="required", tsas="tls"),
    )
    send, receive = trio.open_memory_channel[object](100)
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Grab(logging.WARNING)
    logging.getLogger("stas").addHandler(handler)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(connector.run, receive)
            await send.send(DcLogPages(dc_tid("::1"), entries))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    finally:
        logging.getLogger("stas").removeHandler(handler)
    by_nqn = {r.subsysnqn: r for r in kernel.connect_log}
    assert set(by_nqn) == {"sealed", "open"}
    assert by_nqn["sealed"].tls and not by_nqn["open"].tls
    refusals = [m for m in records if "old at ::1:4420" in m]
    assert len(refusals) == 1 and "TLS 1.3" in refusals[0], records


def test_a_referral_requiring_tls_is_followed_with_tls_or_not_at_all() -> None:
    """stafd's finder (pure core): a referral entry whose TREQ/TSAS demand TLS 1.3 gives the
    referred DC ``tls=true``; one demanding TLS 1.2 is not followed, with a warning naming it."""
    import attrs

    from stas.actors import finder_core
    from stas.messages import DcStatus

    def ref(addr: str, treq: int, sectype: int) -> LogPageEntry:
        wk = "nqn.2014-08.org.nvmexpress.discovery"
        tsas = bytes([sectype]) + bytes(255)
        return LogPageEntry(3, 2, 1, treq, 1, 0xFFFF, 32, 0, "8009", wk, addr, tsas)

    config, _ = parse_service_config("", "stafd")
    parent = Tid("tcp", "::1", "8009", "nqn.2014-08.org.nvmexpress.discovery", "", "", HOSTNQN)
    pages = (ref("::2", 1, 2), ref("::3", 0, 0), ref("::4", 1, 1))
    s = attrs.evolve(
        finder_core.initial_state(config, HOSTNQN),
        nbft=(parent,),
        statuses={parent: DcStatus(tid=parent, origin="nbft", connected=True, log_pages=pages)},
    )
    wanted, warnings = finder_core.wanted(s)
    params = {t.traddr: w.params for t, w in wanted.items()}
    assert params == {"::1": {}, "::2": {"tls": "true"}, "::3": {}}
    assert len(warnings) == 1 and "::4" in warnings[0] and "TLS 1.3" in warnings[0]
