"""Kernel uevent datagrams (NETLINK_KOBJECT_UEVENT) to ``Uevent`` values, sans-IO.

Kernel format: ``ACTION@DEVPATH\\0KEY=VALUE\\0...``. udev's re-broadcasts start with
``libudev\\0`` and a binary header; we listen to the kernel group, so those are rejected with
a clear error rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping

from stas.kernel.api import Uevent
from stas.nvme.errors import ProtocolError

MAX_DATAGRAM = 64 * 1024
MAX_KEYS = 128


def decode_uevent(datagram: bytes) -> Uevent:
    if len(datagram) > MAX_DATAGRAM:
        raise ProtocolError(f"uevent of {len(datagram)} bytes is larger than {MAX_DATAGRAM}")
    if datagram.startswith(b"libudev\0"):
        raise ProtocolError("udev-format uevent (libudev header) is not a kernel uevent")
    parts = datagram.split(b"\0")
    head = parts[0].decode("utf-8", "replace")
    action, sep, devpath = head.partition("@")
    if not sep or not action or not devpath.startswith("/"):
        raise ProtocolError(f"uevent header {head[:60]!r} is not ACTION@DEVPATH")
    env: dict[str, str] = {}
    for raw in parts[1 : MAX_KEYS + 1]:
        if not raw:
            continue
        key, eq, value = raw.decode("utf-8", "replace").partition("=")
        if eq and key and key not in env:
            env[key] = value
    if env.get("ACTION", action) != action:
        raise ProtocolError(f"uevent ACTION {env['ACTION']!r} disagrees with header {action!r}")
    return Uevent(action, devpath, env.get("SUBSYSTEM", ""), env)


def encode_kernel_uevent(action: str, devpath: str, env: Mapping[str, str]) -> bytes:
    """The kernel's datagram for an event (tests and the storm generator use it)."""
    fields = {"ACTION": action, "DEVPATH": devpath, **env}
    body = b"\0".join(f"{k}={v}".encode() for k, v in fields.items())
    return f"{action}@{devpath}".encode() + b"\0" + body + b"\0"
