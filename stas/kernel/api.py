"""The one small interface between stas and the Linux kernel's NVMe-oF host.

Real implementation: libnvme plus sysfs plus netlink (libnvme_kernel.py, sysfs.py,
actors/uevents.py). Test double: fake.py. Everything here is a value or a protocol.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from stas.kernel import options as opt

SECRET_FIELDS = ("dhchap_secret", "dhchap_ctrl_secret")


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

    def __attrs_post_init__(self) -> None:
        if self.transport not in ("tcp", "rdma", "fc", "loop"):
            raise opt.InvalidOption("transport", self.transport, "is not tcp, rdma, fc or loop")
        opt.check_traddr(self.transport, self.traddr)
        if self.transport in ("tcp", "rdma"):
            opt.check_port("trsvcid", self.trsvcid)
        elif self.trsvcid:
            raise opt.InvalidOption("trsvcid", self.trsvcid, f"must be empty for {self.transport}")
        opt.check_nqn("subsysnqn", self.subsysnqn)
        opt.check_nqn("hostnqn", self.hostnqn, must_be_nqn=True)
        if self.hostid:
            opt.check_uuid("hostid", self.hostid)
        if self.host_traddr:
            tr = self.transport if self.transport != "loop" else "tcp"
            opt.check_traddr(tr, self.host_traddr, field="host_traddr")
        if self.host_iface:
            opt.check_iface("host_iface", self.host_iface)
        ranges = {
            "kato": (0,),
            "queue_size": (16, 1024),
            "nr_io_queues": (1,),
            "nr_write_queues": (0,),
            "nr_poll_queues": (0,),
            "reconnect_delay": (1,),
            "ctrl_loss_tmo": (-1,),
            "fast_io_fail_tmo": (-1,),
            "tos": (-1, 255),
        }
        for name, bounds in ranges.items():
            value = getattr(self, name)
            if value is not None:
                opt.check_int(name, value, *bounds)
        for name in SECRET_FIELDS:
            value = getattr(self, name)
            if value is not None:
                opt.check_dhchap(name, value)

    def option_string(self, *, redact: bool = True) -> str:
        """The kernel's ``/dev/nvme-fabrics`` string (secrets hidden unless asked)."""
        parts = [f"transport={self.transport}"]
        if self.traddr:
            parts.append(f"traddr={self.traddr}")
        if self.trsvcid:
            parts.append(f"trsvcid={self.trsvcid}")
        parts += [f"nqn={self.subsysnqn}", f"hostnqn={self.hostnqn}"]
        kv = {
            "hostid": self.hostid,
            "host_traddr": self.host_traddr,
            "host_iface": self.host_iface,
            "keep_alive_tmo": self.kato,
            "queue_size": self.queue_size,
            "nr_io_queues": self.nr_io_queues,
            "nr_write_queues": self.nr_write_queues,
            "nr_poll_queues": self.nr_poll_queues,
            "reconnect_delay": self.reconnect_delay,
            "ctrl_loss_tmo": self.ctrl_loss_tmo,
            "fast_io_fail_tmo": self.fast_io_fail_tmo,
            "tos": self.tos,
        }
        parts += [f"{k}={v}" for k, v in kv.items() if v not in (None, "")]
        parts += [
            f
            for f in ("hdr_digest", "data_digest", "disable_sqflow", "discovery")
            if getattr(self, f)
        ]
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
        return self.cntrltype == "io" or (not self.cntrltype and self.has_namespaces)

    @property
    def is_discovery_controller(self) -> bool:
        return self.cntrltype == "discovery" or (
            not self.cntrltype and self.subsysnqn == "nqn.2014-08.org.nvmexpress.discovery"
        )


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


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
    """Is ``ctrl`` the connection these parameters describe? (upstream §5.9, adoption)."""
    if (ctrl.transport, ctrl.trsvcid) != (transport, trsvcid) or ctrl.subsysnqn != subsysnqn:
        return False
    if ctrl.hostnqn and ctrl.hostnqn != hostnqn:
        return False
    if transport in ("tcp", "rdma"):
        a, b = _ip(ctrl.traddr), _ip(traddr)
        if a is None or a != b:
            return False
        if host_traddr:
            src = _ip(ctrl.src_addr or ctrl.host_traddr)
            if src is not None and src != _ip(host_traddr):
                return False
        return not (host_iface and ctrl.host_iface and ctrl.host_iface != host_iface)
    if transport == "fc":
        return ctrl.traddr.lower() == traddr.lower() and (
            not host_traddr or ctrl.host_traddr.lower() == host_traddr.lower()
        )
    return ctrl.traddr == traddr


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
    """A kernel operation failed; ``errno`` when the kernel gave one."""

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
