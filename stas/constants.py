"""Names and numbers the NVMe-oF specs and upstream nvme-stas fix, defined once.

A leaf module (imports nothing of ours) so that config, kernel, actors and ctl can all use it.
``stas/nvme`` keeps its own copies on purpose: the protocol package imports nothing outside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

# NVMe Base spec: the discovery subsystem every discovery controller answers as.
WELL_KNOWN_DISC_NQN = "nqn.2014-08.org.nvmexpress.discovery"

# Ports a discovery controller listens on when none is given (TP8009 / upstream defaults).
DEFAULT_TRSVCID: Mapping[str, str] = MappingProxyType({"tcp": "8009", "rdma": "4420"})

# Upstream's TID dict keys, in the order ``stafctl ls`` shows them.
TID_KEYS: tuple[str, ...] = (
    "transport",
    "traddr",
    "trsvcid",
    "subsysnqn",
    "host-traddr",
    "host-iface",
    "host-nqn",
)

# The same seven strings as D-Bus argument names, in the order every method and signal uses.
TID_ARG_NAMES: tuple[str, ...] = tuple(k.replace("-", "_") for k in TID_KEYS)

# Transports whose addresses are IP addresses (ip-family applies, trsvcid is a port).
IP_TRANSPORTS = frozenset({"tcp", "rdma"})


def default_trsvcid(transport: str) -> str:
    """The port a discovery controller of ``transport`` listens on by default ('' for fc)."""
    return DEFAULT_TRSVCID.get(transport, "")


def tid_matches(tid: Sequence[str], wanted: Sequence[str]) -> bool:
    """Whether the controller ``tid`` is the one upstream's 7 strings ``wanted`` name (both in
    TID_KEYS order): '' trsvcid means the default port, '' host NQN any. stafd's lookups and
    stafctl's check of a name it was given share this rule."""
    transport, traddr, trsvcid, subsysnqn, host_traddr, host_iface, host_nqn = wanted
    port = trsvcid or default_trsvcid(transport)
    return tuple(tid[:6]) == (transport, traddr, port, subsysnqn, host_traddr, host_iface) and (
        host_nqn in ("", tid[6])
    )
