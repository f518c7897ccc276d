"""Builders for the values tests keep writing: a log page entry as the wire carries it
(``log_entry``), as stafd publishes it over D-Bus (``dlpe``) and as stacd types it (``entry``),
and Tids of discovery and I/O controllers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stas.constants import WELL_KNOWN_DISC_NQN
from stas.messages import DcLogPages, Dlpe, Tid

if TYPE_CHECKING:
    from stas.nvme.logpage import LogPageEntry

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
HOSTID = "0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
WK = WELL_KNOWN_DISC_NQN


def dlpe(nqn: str, traddr: str = "::1", **fields: str) -> dict[str, str]:
    """An NVM subsystem entry (TCP, port 4420) as a DLPE dict; ``fields`` override any key."""
    d = {
        "trtype": "tcp",
        "adrfam": "ipv6" if ":" in traddr else "ipv4",
        "traddr": traddr,
        "trsvcid": "4420",
        "subnqn": nqn,
        "subtype": "nvme",
        "eflags": "0",
    }
    return d | fields


def entry(nqn: str, traddr: str = "::1", **fields: str) -> Dlpe:
    """The same entry, typed as the stafd client hands it on."""
    parsed = Dlpe.parse(dlpe(nqn, traddr, **fields))
    assert parsed is not None
    return parsed


def log_entry(
    nqn: str = WELL_KNOWN_DISC_NQN,
    traddr: str = "::1",
    trsvcid: str = "4420",
    *,
    subtype: int = 2,
    eflags: int = 0,
    treq: int = 0,
) -> LogPageEntry:
    """A TCP entry of a discovery log page (subtype 2 NVM subsystem, 1 referral), adrfam
    following ``traddr``."""
    from stas.nvme.logpage import LogPageEntry  # the codec: only the tests that need it

    adrfam = 2 if ":" in traddr else 1
    return LogPageEntry(
        trtype=3, adrfam=adrfam, subtype=subtype, treq=treq, portid=1, cntlid=0xFFFF, asqsz=32,
        eflags=eflags, trsvcid=trsvcid, subnqn=nqn, traddr=traddr,
    )  # fmt: skip


def dc_tid(traddr: str = "::1", trsvcid: str = "8009", host_nqn: str = HOSTNQN, **kw: str) -> Tid:
    """A TCP discovery controller (the well-known discovery NQN)."""
    return Tid("tcp", traddr, trsvcid, WK, host_nqn=host_nqn, **kw)


def tid(nqn: str, traddr: str = "::1", trsvcid: str = "4420", host_nqn: str = HOSTNQN) -> Tid:
    """A TCP I/O controller, as ``dlpe(nqn, traddr)`` listed by a DC on the same host side."""
    return Tid("tcp", traddr, trsvcid, nqn, "", "", host_nqn)


def page(dc: Tid, *nqns: str) -> DcLogPages:
    """DC ``dc``'s log page listing ``nqns`` (one I/O subsystem entry each), as stacd gets it."""
    return DcLogPages(dc, tuple(dlpe(n) for n in nqns))
