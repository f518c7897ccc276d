"""The one small interface between stas and the Linux kernel's NVMe-oF host.

Real implementation: /dev/nvme-fabrics, sysfs and netlink (libnvme_kernel.py, fabrics.py,
sysfs.py, actors/uevents.py; libnvme optional). Test double: fake.py. Everything here is a
value or a protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

import attrs

from stas.constants import WELL_KNOWN_DISC_NQN
from stas.kernel import options as opt
from stas.net import host_ip

TRANSPORTS = ("tcp", "rdma", "fc", "loop")
SECRET_FIELDS = ("dhchap_secret", "dhchap_ctrl_secret")
FLAGS = ("hdr_digest", "data_digest", "duplicate_connect", "disable_sqflow", "discovery")
# The kernel's accepted ranges (drivers/nvme/host/fabrics.c). nr_write_queues and
# nr_poll_queues of 0 mean "not set", as in libnvme: they are left out of the string.
INT_RANGES: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {
        "kato": (0, opt.KATO_MAX),
        "queue_size": (16, 1024),
        "nr_io_queues": (1,),
        "nr_write_queues": (0,),
        "nr_poll_queues": (0,),
        "reconnect_delay": (1,),
        "ctrl_loss_tmo": (-1,),
        "fast_io_fail_tmo": (-1,),
        "tos": (0, 255),
    }
)


@attrs.frozen
class ConnectRequest:
    """Everything a connect needs, validated on construction: unsafe values cannot exist."""

    transport: str
    traddr: str
    trsvcid: str
    subsysnqn: str
    hostnqn: str
    hostid: str = ""
    host_traddr: str = ""
    host_iface: str = ""
    kato: int | None = None
    queue_size: int | None = None
    nr_io_queues: int | None = None
    nr_write_queues: int | None = None
    nr_poll_queues: int | None = None
    reconnect_delay: int | None = None
    ctrl_loss_tmo: int | None = None
    fast_io_fail_tmo: int | None = None
    tos: int | None = None
    hdr_digest: bool = False
    data_digest: bool = False
    disable_sqflow: bool = False
    dhchap_secret: str | None = attrs.field(default=None, repr=False)
    dhchap_ctrl_secret: str | None = attrs.field(default=None, repr=False)
    discovery: bool = False
    duplicate_connect: bool = False  # the kernel's own opt-out of its EALREADY check
    # NVMe/TCP TLS: tls_key is a configured PSK (NVMeTLSkey-1:..., a secret) or a key serial,
    # keyring a serial or name; stas.kernel.tls.resolve_tls turns both into serials.
    tls: bool = False
    tls_key: str | None = attrs.field(default=None, repr=False)
    keyring: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise opt.InvalidOption("transport", self.transport, "is not tcp, rdma, fc or loop")
        opt.check_traddr(self.transport, self.traddr)
        if self.transport in ("tcp", "rdma"):
            opt.check_port("trsvcid", self.trsvcid)
        elif self.trsvcid != "":
            raise opt.InvalidOption("trsvcid", self.trsvcid, f"must be empty for {self.transport}")
        opt.check_nqn("subsysnqn", self.subsysnqn)
        opt.check_nqn("hostnqn", self.hostnqn, must_be_nqn=True)
        if self.hostid != "":
            opt.check_uuid("hostid", self.hostid)
        if self.host_traddr != "":
            if self.transport == "loop":
                raise opt.InvalidOption("host_traddr", self.host_traddr, "must be empty for loop")
            opt.check_traddr(self.transport, self.host_traddr, field="host_traddr")
        if self.host_iface != "":
            if self.transport != "tcp":
                raise opt.InvalidOption("host_iface", self.host_iface, "is only valid for tcp")
            opt.check_iface("host_iface", self.host_iface)
        for name, bounds in INT_RANGES.items():
            value = getattr(self, name)
            if value is not None:
                opt.check_int(name, value, *bounds)
        for name in FLAGS:
            opt.check_bool(name, getattr(self, name))
        for name in SECRET_FIELDS:
            value = getattr(self, name)
            if value is not None:
                opt.check_dhchap(name, value)
        opt.check_tls(self.transport, self.tls, self.tls_key, self.keyring)

    def option_string(self, *, redact: bool = True) -> str:
        """The kernel's ``/dev/nvme-fabrics`` string (secrets hidden unless asked)."""
        parts = [f"transport={self.transport}"]
        if self.traddr:
            parts.append(f"traddr={self.traddr}")
        if self.trsvcid:
            parts.append(f"trsvcid={self.trsvcid}")
        parts += [f"nqn={self.subsysnqn}", f"hostnqn={self.hostnqn}"]
        kv: dict[str, object] = {
            "hostid": self.hostid,
            "host_traddr": self.host_traddr,
            "host_iface": self.host_iface,
            "keep_alive_tmo": self.kato,
            "queue_size": self.queue_size,
            "nr_io_queues": self.nr_io_queues,
            "nr_write_queues": self.nr_write_queues or None,
            "nr_poll_queues": self.nr_poll_queues or None,
            "reconnect_delay": self.reconnect_delay,
            "ctrl_loss_tmo": self.ctrl_loss_tmo,
            "fast_io_fail_tmo": self.fast_io_fail_tmo,
            "tos": self.tos,
        }
        parts += [f"{k}={v}" for k, v in kv.items() if v is not None and v != ""]
        parts += [f for f in FLAGS if getattr(self, f)]
        parts += opt.tls_options(self.tls, self.tls_key, self.keyring, redact=redact)
        for name in SECRET_FIELDS:
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={'<redacted>' if redact else value}")
        return ",".join(parts)


@attrs.frozen
class KernelController:
    """One /sys/class/nvme/nvmeN as the kernel reports it ('' where the kernel is silent)."""

    device: str
    transport: str = ""
    traddr: str = ""
    trsvcid: str = ""
    subsysnqn: str = ""
    host_traddr: str = ""
    host_iface: str = ""
    src_addr: str = ""
    hostnqn: str = ""
    hostid: str = ""
    cntrltype: str = ""
    dctype: str = ""
    state: str = ""
    model: str = ""
    serial: str = ""
    has_namespaces: bool = False

    @property
    def is_io_controller(self) -> bool:
        """cntrltype 'io' (kernel >= 5.18), or namespaces below it (older kernels)."""
        return self.cntrltype == "io" or (not self.cntrltype and self.has_namespaces)

    @property
    def is_discovery_controller(self) -> bool:
        """cntrltype 'discovery', or the well-known NQN where the kernel has no cntrltype."""
        return self.cntrltype == "discovery" or (
            not self.cntrltype and self.subsysnqn == WELL_KNOWN_DISC_NQN
        )

    def matches(self, req_or_tid: Any) -> bool:
        """Is this the connection a ConnectRequest or a Tid describes? See controller_matches."""
        return controller_matches(self, **match_args(req_or_tid))


def _same_ip(a: str, b: str) -> bool:
    x = host_ip(a)
    return x is not None and x == host_ip(b)


def controller_matches(
    ctrl: KernelController,
    *,
    transport: str,
    traddr: str,
    trsvcid: str,
    subsysnqn: str,
    hostnqn: str,
    host_traddr: str = "",
    host_iface: str = "",
) -> bool:
    """Is ``ctrl`` the connection these parameters describe? (upstream §5.9, adoption).

    Transport, service id and host NQN must be equal. The subsystem NQN must be equal, or the
    candidate asks for the well-known discovery NQN and ``ctrl`` is a discovery controller
    (TP8013: the DC answered with its unique NQN). tcp/rdma addresses compare as IPs.
    A host address or interface the candidate names must agree with what the kernel reports;
    where the kernel reports nothing (no ``src_addr`` before 6.1) the match is optimistic.
    """
    if ctrl.transport != transport or ctrl.trsvcid != trsvcid:
        return False
    if ctrl.hostnqn and ctrl.hostnqn != hostnqn:
        return False
    if ctrl.subsysnqn != subsysnqn and not (
        subsysnqn == WELL_KNOWN_DISC_NQN and ctrl.is_discovery_controller
    ):
        return False
    if transport in ("tcp", "rdma"):
        if not _same_ip(ctrl.traddr, traddr):
            return False
        local = ctrl.src_addr or ctrl.host_traddr
        if host_traddr and local and not _same_ip(local, host_traddr):
            return False
        return not (host_iface and ctrl.host_iface and ctrl.host_iface != host_iface)
    if transport == "fc":
        return ctrl.traddr.lower() == traddr.lower() and (
            ctrl.host_traddr.lower() == host_traddr.lower() if host_traddr else True
        )
    return ctrl.traddr.lower() == traddr.lower()


def match_args(x: Any) -> dict[str, str]:
    """``controller_matches`` keywords from a Tid (``host_nqn``) or a ConnectRequest."""
    return {
        "transport": x.transport,
        "traddr": x.traddr,
        "trsvcid": x.trsvcid,
        "subsysnqn": x.subsysnqn,
        "hostnqn": getattr(x, "hostnqn", None) or getattr(x, "host_nqn", ""),
        "host_traddr": x.host_traddr,
        "host_iface": x.host_iface,
    }


class KernelError(Exception):
    """A kernel operation failed; the message names the operation and the controller.

    ``errno`` is the kernel's error number when one is known (EALREADY, ECONNREFUSED, ...).
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


@attrs.frozen
class Uevent:
    """A kernel uevent (from netlink or the fake): ACTION, DEVPATH, SUBSYSTEM, environment."""

    action: str
    devpath: str
    subsystem: str = "nvme"
    env: Mapping[str, str] = attrs.field(factory=dict)

    @property
    def device(self) -> str:
        return self.devpath.rsplit("/", 1)[-1]

    @property
    def aen(self) -> int | None:
        raw = self.env.get("NVME_AEN")
        try:
            return int(raw, 16) if raw else None
        except ValueError:
            return None

    @property
    def nvme_event(self) -> str | None:
        return self.env.get("NVME_EVENT") or None


class Kernel(Protocol):
    """What stacd (and stafd's kernel backend) need from the kernel."""

    def capabilities(self) -> frozenset[str]: ...

    async def connect(self, req: ConnectRequest) -> KernelController: ...

    async def disconnect(self, device: str) -> None: ...

    async def list_controllers(self) -> list[KernelController]: ...

    async def controller(self, device: str) -> KernelController | None: ...
