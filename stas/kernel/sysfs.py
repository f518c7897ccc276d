"""Read the kernel's NVMe controllers from /sys/class/nvme (the source of truth for stacd)."""

from __future__ import annotations

import re
from pathlib import Path

from stas.kernel.api import KernelController

SYSFS_NVME = Path("/sys/class/nvme")
_NS_DIR = re.compile(r"nvme\d+(c\d+)?n\d+$")


def _attr(d: Path, name: str) -> str:
    try:
        return d.joinpath(name).read_text(errors="replace").strip()
    except OSError:
        return ""  # older kernels lack some attributes; a vanishing device lacks all


def parse_address(text: str) -> dict[str, str]:
    """``traddr=...,trsvcid=...,host_traddr=...,host_iface=...,src_addr=...`` -> dict.

    'none' means unset. Values never contain ',' (the kernel prints them that way).
    """
    out: dict[str, str] = {}
    for token in text.replace("\n", ",").split(","):
        key, sep, value = token.strip().partition("=")
        if sep and key:
            out[key] = "" if value == "none" else value
    return out


def read_controller(d: Path) -> KernelController | None:
    if not d.name.startswith("nvme") or not d.name[4:].isdigit():
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
        has_namespaces=any(_NS_DIR.match(c) for c in children),
    )


def read_controllers(root: Path = SYSFS_NVME) -> list[KernelController]:
    """Every controller under ``root``, in device order; fabrics and PCIe alike."""
    try:
        dirs = list(root.iterdir())
    except OSError:
        return []
    found = [c for d in dirs if (c := read_controller(d)) is not None]
    return sorted(found, key=lambda c: int(c.device[4:]))
