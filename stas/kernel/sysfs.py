"""Read the kernel's NVMe controllers from /sys/class/nvme (the source of truth for stacd).

Attributes a kernel does not have (``cntrltype``/``dctype`` before 5.18, ``src_addr`` in
``address`` before 6.1) read as ''. A controller deleted while being read reads as mostly ''
rather than failing: the caller resyncs on the ``remove`` uevent anyway.
"""

from __future__ import annotations

import re
from pathlib import Path

from stas.kernel.api import KernelController

SYSFS_NVME = Path("/sys/class/nvme")
MAX_ATTR = 4096  # sysfs attributes are at most one page
_DEVICE = re.compile(r"nvme(0|[1-9][0-9]{0,8})")
_NS_DIR = re.compile(r"nvme\d+(c\d+)?n\d+")
_ADDRESS_KEYS = ("traddr", "trsvcid", "host_traddr", "host_iface", "src_addr")


def is_device_name(name: str) -> bool:
    """``nvmeN`` exactly: safe to join to a sysfs path (no '/', no '..')."""
    return _DEVICE.fullmatch(name) is not None


def _attr(d: Path, name: str) -> str:
    try:
        with open(d / name, "rb") as f:
            raw = f.read(MAX_ATTR)
    except OSError:
        return ""  # older kernels lack some attributes; a vanishing device lacks all
    return raw.decode("utf-8", errors="replace").strip()


def parse_address(text: str) -> dict[str, str]:
    """``traddr=...,trsvcid=...,host_traddr=...,host_iface=...,src_addr=...`` -> dict.

    'none' means unset; tokens without '=' (a PCIe address) and unknown keys are ignored.
    Where a key repeats, the first value wins.
    """
    out: dict[str, str] = {}
    for token in text.replace("\n", ",").split(","):
        key, sep, value = token.partition("=")
        key = key.strip()
        if sep and key in _ADDRESS_KEYS and key not in out:
            value = value.strip()
            out[key] = "" if value == "none" else value
    return out


def read_controller(d: Path) -> KernelController | None:
    """The controller in directory ``d`` (named ``nvmeN``), or None if it is not one."""
    if not is_device_name(d.name) or not d.is_dir():
        return None
    addr = parse_address(_attr(d, "address"))
    try:
        children = [c.name for c in d.iterdir()]
    except OSError:
        children = []
    return KernelController(
        device=d.name,
        transport=_attr(d, "transport"),
        traddr=addr.get("traddr", ""),
        trsvcid=addr.get("trsvcid", ""),
        subsysnqn=_attr(d, "subsysnqn"),
        host_traddr=addr.get("host_traddr", ""),
        host_iface=addr.get("host_iface", ""),
        src_addr=addr.get("src_addr", ""),
        hostnqn=_attr(d, "hostnqn"),
        hostid=_attr(d, "hostid"),
        cntrltype=_attr(d, "cntrltype"),
        dctype=_attr(d, "dctype"),
        state=_attr(d, "state"),
        model=_attr(d, "model"),
        serial=_attr(d, "serial"),
        has_namespaces=any(_NS_DIR.fullmatch(c) for c in children),
    )


def read_device(device: str, root: Path = SYSFS_NVME) -> KernelController | None:
    """One controller by name; None if the name is not ``nvmeN`` or it does not exist."""
    if not is_device_name(device):
        return None
    return read_controller(root / device)


def read_controllers(root: Path = SYSFS_NVME) -> list[KernelController]:
    """Every controller under ``root``, in device order; fabrics and PCIe alike."""
    try:
        dirs = list(root.iterdir())
    except OSError:
        return []
    found = [c for d in dirs if (c := read_controller(d)) is not None]
    return sorted(found, key=lambda c: int(c.device[4:]))
