"""Read the kernel's NVMe controllers from /sys/class/nvme (the source of truth for stacd).

Attributes a kernel does not have (``cntrltype``/``dctype`` before 5.18, ``src_addr`` in
``address`` before 6.1) read as ''. A controller deleted while being read reads as mostly ''
rather than failing: the caller resyncs on the ``remove`` uevent anyway.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from stas.kernel.api import KernelController

SYSFS_NVME = Path("/sys/class/nvme")
MAX_ATTR = 4096  # sysfs attributes are at most one page
_DEVICE = re.compile(r"nvme(0|[1-9][0-9]{0,8})")
_NS_DIR = re.compile(r"nvme\d+(c\d+)?n\d+")
_ADDRESS_KEYS = ("traddr", "trsvcid", "host_traddr", "host_iface", "src_addr")

# How an attribute file is opened: injectable so that tests can count the reads a connect
# costs (it must not grow with the number of controllers).
Opener = Callable[[Path], BinaryIO]


def open_attr(path: Path) -> BinaryIO:
    return open(path, "rb")


def is_device_name(name: str) -> bool:
    """``nvmeN`` exactly: safe to join to a sysfs path (no '/', no '..')."""
    return _DEVICE.fullmatch(name) is not None


def _attr(d: Path, name: str, opener: Opener = open_attr) -> str:
    try:
        with opener(d / name) as f:
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


def read_controller(d: Path, opener: Opener = open_attr) -> KernelController | None:
    """The controller in directory ``d`` (named ``nvmeN``), or None if it is not one."""
    if not is_device_name(d.name) or not d.is_dir():
        return None

    def attr(name: str) -> str:
        return _attr(d, name, opener)

    addr = parse_address(attr("address"))
    try:
        children = [c.name for c in d.iterdir()]
    except OSError:
        children = []
    return KernelController(
        device=d.name,
        transport=attr("transport"),
        traddr=addr.get("traddr", ""),
        trsvcid=addr.get("trsvcid", ""),
        subsysnqn=attr("subsysnqn"),
        host_traddr=addr.get("host_traddr", ""),
        host_iface=addr.get("host_iface", ""),
        src_addr=addr.get("src_addr", ""),
        hostnqn=attr("hostnqn"),
        hostid=attr("hostid"),
        cntrltype=attr("cntrltype"),
        dctype=attr("dctype"),
        state=attr("state"),
        model=attr("model"),
        serial=attr("serial"),
        has_namespaces=any(_NS_DIR.fullmatch(c) for c in children),
    )


def read_device(
    device: str, root: Path = SYSFS_NVME, opener: Opener = open_attr
) -> KernelController | None:
    """One controller by name (its attributes only); None if not ``nvmeN`` or absent."""
    if not is_device_name(device):
        return None
    return read_controller(root / device, opener)


def read_controllers(root: Path = SYSFS_NVME, opener: Opener = open_attr) -> list[KernelController]:
    """Every controller under ``root``, in device order: the full scan (start, resync only)."""
    try:
        dirs = list(root.iterdir())
    except OSError:
        return []
    found = [c for d in dirs if (c := read_controller(d, opener)) is not None]
    return sorted(found, key=lambda c: int(c.device[4:]))
