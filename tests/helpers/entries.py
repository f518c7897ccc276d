"""Builders for the values tests keep writing: a DLPE dict as stafd publishes it, the typed
entry stacd parses it into, and Tids of discovery and I/O controllers."""

from __future__ import annotations

from stas.constants import WELL_KNOWN_DISC_NQN
from stas.messages import Dlpe, Tid

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


def dc_tid(traddr: str = "::1", trsvcid: str = "8009", host_nqn: str = HOSTNQN, **kw: str) -> Tid:
    """A TCP discovery controller (the well-known discovery NQN)."""
    return Tid("tcp", traddr, trsvcid, WK, host_nqn=host_nqn, **kw)


def tid(nqn: str, traddr: str = "::1", trsvcid: str = "4420", host_nqn: str = HOSTNQN) -> Tid:
    """A TCP I/O controller, as ``dlpe(nqn, traddr)`` listed by a DC on the same host side."""
    return Tid("tcp", traddr, trsvcid, nqn, "", "", host_nqn)
