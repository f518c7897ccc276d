"""Our NBFT parser and libnvme's (``libnvme.nvme.nbft_get``) read the same generated table alike.

libnvme's bindings give HFI positions (0-based) where the table has HFI indexes (1-based),
'::' for an absent address, and no index fields; the comparison maps between the two.
libnvme drops a discovery descriptor without an NQN and an SSNS without a secondary HFI list
(the specification allows both), so the shared table has both. libnvme 1.16 reports every
primary-administrative-host flag as 'not indicated' (its mask is compared unshifted), so the
shared table says 'not indicated'; test_nbft_parser.py checks 'selected'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbft_gen as gen
import pytest

from stas.nbft import parse_nbft


def libnvme_nbft(path: Path) -> dict[str, Any]:
    from stas.kernel.libnvme_loader import LibnvmeUnavailable, load_libnvme

    try:
        nvme = load_libnvme()
    except LibnvmeUnavailable as exc:
        pytest.skip(f"libnvme bindings: {exc}")
    if not hasattr(nvme, "nbft_get"):
        pytest.skip("these libnvme bindings have no nbft_get()")
    got = nvme.nbft_get(str(path))
    assert got is not None, "libnvme could not parse the generated table"
    return got


def shared_table() -> gen.Table:
    return gen.Table(
        hostnqn="nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555",
        hostid="11111111-2222-3333-4444-555555555555",
        host_flags=0x01 | 0x02,
        hfis=[
            gen.Hfi(
                mac="52:54:00:12:34:56",
                ip="10.0.2.15",
                prefix=24,
                gateway="10.0.2.2",
                vlan=7,
                route_metric=200,
                primary_dns="10.0.2.3",
                dhcp_server="10.0.2.2",
                default_route=True,
                ip_origin=2,
            ),
            gen.Hfi(mac="52:54:00:12:34:57", ip="fd00::15", prefix=64),
        ],
        discoveries=[
            gen.Discovery(
                uri="nvme+tcp://10.0.2.2:8009/", hfi=1, nqn="nqn.2014-08.org.nvmexpress.discovery"
            ),
            gen.Discovery(uri="nvme+tcp://10.0.2.9:8009/", hfi=1, nqn="nqn.2014-08.org.x:dc"),
        ],
        subsystems=[
            gen.Subsys(
                traddr="10.0.2.2",
                trsvcid="4420",
                nqn="nqn.2014-08.org.x:boot",
                hfi=1,
                secondary_hfis=(2,),
                disc=1,
                nsid=3,
                hdr_digest=True,
                data_digest=True,
                cntlid=9,
                asqsz=64,
            ),
            gen.Subsys(
                traddr="fd00::2",
                trsvcid="4421",
                nqn="nqn.2014-08.org.x:data",
                hfi=2,
                secondary_hfis=(1,),
                nidt=3,
            ),
        ],
    )


def _addr(text: str) -> str:
    return "" if text in ("::", "0.0.0.0") else text


def test_same_answers_as_libnvme(tmp_path: Path) -> None:
    path = tmp_path / "NBFT"
    path.write_bytes(gen.build(shared_table()))
    theirs = libnvme_nbft(path)
    ours = parse_nbft(path.read_bytes())
    assert ours.problems == ()
    host = theirs["host"]
    assert ours.host is not None
    assert (ours.host.nqn, ours.host.hostid) == (host["nqn"], host["id"])
    assert ours.host.hostid_configured == host["host_id_configured"]
    assert ours.host.hostnqn_configured == host["host_nqn_configured"]
    assert ours.host.primary_admin == host["primary_admin_host_flag"]

    assert len(ours.hfis) == len(theirs["hfi"]) == 2
    for mine, t in zip(ours.hfis, theirs["hfi"], strict=True):
        assert (mine.transport, mine.mac, mine.vlan, mine.ip) == (
            t["trtype"],
            t["mac_addr"],
            t["vlan"],
            t["ipaddr"],
        )
        assert (mine.prefix, mine.gateway, mine.route_metric, mine.ip_origin) == (
            t["subnet_mask_prefix"],
            _addr(t["gateway_ipaddr"]),
            t["route_metric"],
            t["ip_origin"],
        )
        assert (mine.primary_dns, mine.secondary_dns) == (
            _addr(t["primary_dns_ipaddr"]),
            _addr(t["secondary_dns_ipaddr"]),
        )
        assert (mine.dhcp_override, mine.dhcp_server, mine.default_route) == (
            t["dhcp_override"],
            _addr(t["dhcp_server_ipaddr"]),
            t["this_hfi_is_default_route"],
        )
    positions = {h.index: i for i, h in enumerate(ours.hfis)}

    assert len(ours.discoveries) == len(theirs["discovery"]) == 2
    for mine, t in zip(ours.discoveries, theirs["discovery"], strict=True):
        assert (mine.uri, mine.nqn, positions[mine.hfi_index]) == (
            t["uri"],
            t["nqn"],
            t["hfi_index"],
        )

    assert len(ours.subsystems) == len(theirs["subsystem"]) == 2
    for mine, t in zip(ours.subsystems, theirs["subsystem"], strict=True):
        assert (mine.transport, mine.traddr, mine.trsvcid, mine.nqn) == (
            t["trtype"],
            t["traddr"],
            t["trsvcid"],
            t["subsys_nqn"],
        )
        assert [positions[i] for i in mine.hfi_indexes] == t["hfi_indexes"]
        assert (mine.hdr_digest, mine.data_digest) == (
            t["pdu_header_digest_required"],
            t["data_digest_required"],
        )
        assert (mine.nsid, mine.port_id, mine.controller_id, mine.asqsz) == (
            t["nsid"],
            t["subsys_port_id"],
            t["controller_id"],
            t["asqsz"],
        )
        assert str(__import__("uuid").UUID(bytes=mine.nid)) == t["nid"]
