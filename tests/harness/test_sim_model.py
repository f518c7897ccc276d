"""SimModel: links, GENCTR, log page contents, PLEO, referrals, DIM table."""

from __future__ import annotations

import time

import pytest
from nvmet_config import SIMULATOR_CAPS, NvmetConfError, parse_nvmet_conf
from sim_controller import DiscoveryControllerSession
from sim_model import GENCTR_MASK, WELL_KNOWN_DISCOVERY_NQN, SimModel

from stas.nvme import commands as cmd
from stas.nvme.commands import LogPageId
from stas.nvme.dim import host_registration
from stas.nvme.logpage import (
    ENTRY_SIZE,
    HEADER_SIZE,
    AdrFam,
    DiscoveryLogPage,
    EFlags,
    Limits,
    SubType,
    TrType,
)
from tests.helpers.sim import DELL, SEED_SUBSYSTEMS, seed_conf

TWO_PORTS = """{
    'ports': [
        {'id': 1, 'traddr': '::1', 'trsvcid': 8009, 'trtype': 'tcp'},
        {'id': 2, 'traddr': '127.0.0.1', 'trsvcid': 8010, 'trtype': 'tcp'},
    ],
    'subsystems': [
        {'subsysnqn': 'klingons', 'port': 1, 'namespaces': [1]},
        {'subsysnqn': 'vulcans', 'port': 2, 'namespaces': [1],
         'allowed_hosts': [{'nqn': 'nqn.2014-08.org.nvmexpress:uuid:spock'}]},
        {'subsysnqn': 'borg', 'port': None, 'namespaces': [1]},
    ],
}"""


@pytest.fixture
def default_model() -> SimModel:
    return SimModel(seed_conf())


@pytest.fixture
def model() -> SimModel:
    return SimModel(parse_nvmet_conf(TWO_PORTS))


def test_default_conf_log_page_like_nvmet(default_model: SimModel) -> None:
    page = default_model.log_page(1)
    assert page.genctr == 1
    assert [e.subnqn for e in page.entries] == list(SEED_SUBSYSTEMS)
    for entry in page.entries:
        assert entry.subtype == SubType.NVME
        assert (entry.trtype, entry.adrfam) == (TrType.TCP, AdrFam.IPV6)
        assert (entry.traddr, entry.trsvcid, entry.portid) == ("::1", "8009", 1)
        assert (entry.treq, entry.cntlid, entry.asqsz, entry.eflags) == (0, 0xFFFF, 32, 0)


def test_log_page_round_trips_through_encoding(default_model: SimModel) -> None:
    page = default_model.log_page(1)
    assert DiscoveryLogPage.decode(page.encode()) == page


def test_genctr_moves_on_link_and_unlink(default_model: SimModel) -> None:
    seen: list[int] = []
    default_model.subscribe(lambda: seen.append(default_model.genctr))
    default_model.unlink(1, "klingons")
    assert "klingons" not in default_model.linked(1)
    assert [e.subnqn for e in default_model.log_page(1).entries] == [DELL, "starfleet"]
    default_model.link(1, "klingons")
    assert seen == [2, 3]
    assert default_model.log_page(1).genctr == 3


def test_genctr_wraps_at_64_bits(default_model: SimModel) -> None:
    default_model._genctr = GENCTR_MASK
    default_model.bump()
    assert default_model.genctr == 0


def test_link_errors_name_the_problem(model: SimModel) -> None:
    with pytest.raises(ValueError, match="unknown port 9"):
        model.link(9, "klingons")
    with pytest.raises(ValueError, match="unknown subsystem 'andorians'"):
        model.unlink(1, "andorians")
    with pytest.raises(ValueError, match="already linked to port 1"):
        model.link(1, "klingons")
    with pytest.raises(ValueError, match="not linked to port 1"):
        model.unlink(1, "borg")
    assert model.genctr == 1  # failed changes do not count


def test_pleo_and_all_ports(model: SimModel) -> None:
    everything = model.log_page(1)
    assert [(e.subnqn, e.portid) for e in everything.entries] == [("klingons", 1), ("vulcans", 2)]
    vulcans = everything.entries[1]
    assert (vulcans.traddr, vulcans.trsvcid, vulcans.adrfam) == ("127.0.0.1", "8010", AdrFam.IPV4)
    local = model.log_page(1, pleo=True)
    assert [e.subnqn for e in local.entries] == ["klingons"]
    assert local.dlpf == 0x2


def test_host_acl_filters_entries(model: SimModel) -> None:
    spock = "nqn.2014-08.org.nvmexpress:uuid:spock"
    assert [e.subnqn for e in model.log_page(2, pleo=True, hostnqn=spock).entries] == ["vulcans"]
    assert (
        model.log_page(2, pleo=True, hostnqn="nqn.2014-08.org.nvmexpress:uuid:kirk").entries == ()
    )


def test_referrals(model: SimModel) -> None:
    ref = model.add_referral(1, "192.0.2.10", 8009)
    assert model.genctr == 2
    entries = model.log_page(1, pleo=True).entries
    assert [e.subtype for e in entries] == [SubType.NVME, SubType.REFERRAL]
    referral = entries[1]
    assert (referral.traddr, referral.trsvcid, referral.subnqn) == (
        "192.0.2.10",
        "8009",
        WELL_KNOWN_DISCOVERY_NQN,
    )
    assert referral.adrfam == AdrFam.IPV4 and referral.portid == 1
    assert model.log_page(2, pleo=True).entries[-1].subtype == SubType.NVME  # port 1 only
    model.remove_referral(ref)
    assert model.genctr == 3
    with pytest.raises(ValueError, match="no such referral"):
        model.remove_referral(ref)


def test_current_entry_and_epcsd() -> None:
    model = SimModel(parse_nvmet_conf(TWO_PORTS), current_entry=True, epcsd=True)
    entries = model.log_page(1, pleo=True).entries
    assert [e.subtype for e in entries] == [SubType.CURRENT_DISCOVERY, SubType.NVME]
    assert entries[0].subnqn == model.dc_nqn
    assert entries[0].eflags == EFlags.EPCSD | EFlags.DUPRETINFO
    assert entries[1].eflags == EFlags.EPCSD


def test_extended_flag_sets_dlpf(model: SimModel) -> None:
    assert model.log_page(1, extended=True, pleo=True).dlpf == 0x3


def test_registration_table(model: SimModel) -> None:
    data = host_registration(
        hostnqn="nqn.h", hostid=bytes(16), hostname="h1", os_version="Linux",
        symname=None, adrfam=AdrFam.IPV4,
    )  # fmt: skip
    model.register("nqn.h", data, when=12.5)
    assert model.registrations["nqn.h"].when == 12.5
    assert model.describe()["registrations"] == ["nqn.h"]
    assert model.deregister("nqn.h") is True
    assert model.deregister("nqn.h") is False
    assert model.genctr == 1


def test_set_endpoint_does_not_bump(model: SimModel) -> None:
    model.set_endpoint(1, "::1", 40000)
    assert model.log_page(1, pleo=True).entries[0].trsvcid == "40000"
    assert model.genctr == 1
    assert model.describe()["ports"][0]["trsvcid"] == "40000"


# --- scale: 100 DCs x 100 subsystems (bench/daemons.py row 4) -----------------------------


def _scale_conf(ports: int, per_port: int) -> str:
    port_list = ", ".join(
        f"{{'id': {p}, 'traddr': '::1', 'trsvcid': {8009 + p}, 'trtype': 'tcp'}}"
        for p in range(1, ports + 1)
    )
    subs = ", ".join(
        f"{{'subsysnqn': 'nqn.2026-01.io.t:dc{p:03d}-sub{s:04d}', 'port': {p}, 'namespaces': [1]}}"
        for p in range(1, ports + 1)
        for s in range(per_port)
    )
    return f"{{'ports': [{port_list}], 'subsystems': [{subs}]}}"


def test_simulator_accepts_and_models_10000_subsystems() -> None:
    """nvmet.py's configfs caps (1,024 subsystems) used to stop the simulator at start-up."""
    text = _scale_conf(100, 100)
    with pytest.raises(NvmetConfError, match="10000 items is more than the limit of 1024"):
        parse_nvmet_conf(text)  # the real-kernel tool keeps its caps
    conf = parse_nvmet_conf(text, caps=SIMULATOR_CAPS)
    started = time.perf_counter()
    model = SimModel(conf)
    page = model.log_page(42, pleo=True)
    assert time.perf_counter() - started < 1.0  # generous: ~10 ms on an idle machine
    assert len(model.subsystems) == 10_000
    assert len(page.entries) == 100  # only port 42's subsystems were turned into entries
    assert {e.portid for e in page.entries} == {42}


def test_a_10000_entry_page_read_in_chunks_is_built_once_and_not_copied_per_chunk() -> None:
    """The page used to be copied twice per 16 KiB chunk: 626 chunks x 10 MB took ~19 s."""
    model = SimModel(parse_nvmet_conf(_scale_conf(1, 10_000), caps=SIMULATOR_CAPS))
    builds: list[int] = []
    real_log_page = model.log_page

    def counting_log_page(*args: object, **kwargs: object) -> DiscoveryLogPage:
        builds.append(1)
        return real_log_page(*args, **kwargs)  # type: ignore[arg-type]

    model.log_page = counting_log_page  # type: ignore[method-assign]
    session = DiscoveryControllerSession(model, 1)
    total, chunk, parts = HEADER_SIZE + 10_000 * ENTRY_SIZE, 16384, []
    started = time.perf_counter()
    for offset in range(0, total, chunk):
        sqe = cmd.get_log_page(LogPageId.DISCOVERY, offset=offset, length=chunk, rae=True)
        parts.append(session._get_log_page(sqe, b"").data)
    elapsed = time.perf_counter() - started
    limits = Limits(max_records=10_000, max_bytes=total)
    page = DiscoveryLogPage.decode(b"".join(parts)[:total], limits=limits)
    assert len(page.entries) == 10_000
    assert len(builds) == 1
    assert elapsed < 5.0  # ~0.3 s here; the copying version took ~19 s
