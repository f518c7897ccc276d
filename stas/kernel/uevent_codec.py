"""Sans-IO codec for netlink uevent datagrams (NETLINK_KOBJECT_UEVENT).

Two wire formats reach a uevent socket:

- kernel (multicast group 1): ``ACTION@DEVPATH\\0KEY=VALUE\\0KEY=VALUE\\0...``; the environment
  repeats ``ACTION`` and ``DEVPATH`` and carries ``SUBSYSTEM`` and ``SEQNUM``.
- libudev (group 2, re-broadcast by udevd after rule processing): the 8 bytes ``libudev\\0``,
  a fixed 40-byte header (big-endian magic 0xfeedcafe, then header size, properties offset
  and properties length in host byte order, then four filter hashes), then the same
  ``KEY=VALUE\\0`` properties as the kernel sends (without the ``ACTION@DEVPATH`` line).

Datagrams are untrusted bytes: sizes and counts are capped before anything is built, and
every defect raises ``ProtocolError`` naming what was wrong. Values are decoded as UTF-8 with
replacement characters, so odd bytes in, say, a model string never stop an event.
"""

from __future__ import annotations

import re
import struct
import sys
from collections.abc import Mapping

from stas.kernel.api import Uevent
from stas.nvme.errors import ProtocolError

MAX_DATAGRAM = 16 * 1024  # the kernel's env buffer is 2 KiB; udevd adds its own properties
MAX_FIELDS = 256  # the kernel allows 64 environment entries
MAX_KEY = 128
UDEV_PREFIX = b"libudev\0"
UDEV_MAGIC = 0xFEEDCAFE
_UDEV_HEADER = struct.Struct("=8sIIIIIIII")  # prefix, magic (BE), size, off, len, 4 hashes
_BIG_ENDIAN = sys.byteorder == "big"
_ACTION_RE = re.compile(r"[a-z][a-z_]{0,31}")
IDENTITY_KEYS = frozenset({"ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM"})


def _fields(blob: bytes, where: str) -> list[bytes]:
    """Split NUL-terminated fields; empty ones (a doubled NUL) carry nothing and are skipped."""
    parts = [p for p in blob.split(b"\0") if p]
    if len(parts) > MAX_FIELDS:
        raise ProtocolError(f"{where}: {len(parts)} fields (limit {MAX_FIELDS})")
    return parts


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _parse_env(parts: list[bytes], where: str) -> dict[str, str]:
    """KEY=VALUE fields -> dict. Lenient where it cannot matter, strict where it could mislead.

    A repeated ordinary key keeps its first value (a udev rule may set odd properties and that
    must not cost the event); a repeated identity key is ambiguous and rejected.
    """
    env: dict[str, str] = {}
    for part in parts:
        key_raw, sep, value_raw = part.partition(b"=")
        if not sep:
            raise ProtocolError(f"{where}: field {part[:40]!r} has no '='")
        if not key_raw or len(key_raw) > MAX_KEY:
            raise ProtocolError(f"{where}: bad key length {len(key_raw)} in {part[:40]!r}")
        key = _text(key_raw)
        if key in env:
            if key in IDENTITY_KEYS:
                raise ProtocolError(f"{where}: {key} appears twice")
            continue
        env[key] = _text(value_raw)
    return env


def _check_action_devpath(action: str, devpath: str, where: str) -> None:
    if not _ACTION_RE.fullmatch(action):
        raise ProtocolError(f"{where}: ACTION {action[:40]!r} is not a lower-case word")
    if not devpath.startswith("/") or devpath.rstrip("/") == "":
        raise ProtocolError(f"{where}: DEVPATH {devpath[:80]!r} is not an absolute device path")


def _build(action: str, devpath: str, env: dict[str, str], where: str) -> Uevent:
    _check_action_devpath(action, devpath, where)
    subsystem = env.get("SUBSYSTEM")
    if not subsystem:
        raise ProtocolError(f"{where}: no SUBSYSTEM for {devpath[:80]!r}")
    return Uevent(action=action, devpath=devpath, subsystem=subsystem, env=env)


def _decode_kernel(datagram: bytes) -> Uevent:
    where = "kernel uevent"
    parts = _fields(datagram, where)
    if not parts:
        raise ProtocolError(f"{where}: empty datagram")
    action_raw, at, devpath_raw = parts[0].partition(b"@")
    if not at:
        raise ProtocolError(f"{where}: header {parts[0][:40]!r} is not ACTION@DEVPATH")
    action, devpath = _text(action_raw), _text(devpath_raw)
    env = _parse_env(parts[1:], where)
    for key, expected in (("ACTION", action), ("DEVPATH", devpath)):
        if env.get(key, expected) != expected:
            raise ProtocolError(f"{where}: {key}={env[key][:80]!r} disagrees with the header")
    return _build(action, devpath, env, where)


def _decode_udev(datagram: bytes) -> Uevent:
    where = "libudev uevent"
    if len(datagram) < _UDEV_HEADER.size:
        raise ProtocolError(f"{where}: {len(datagram)} bytes, shorter than its header")
    _, magic, hsize, off, length, *_ = _UDEV_HEADER.unpack_from(datagram)
    if not _BIG_ENDIAN:
        magic = int.from_bytes(magic.to_bytes(4, "little"), "big")
    if magic != UDEV_MAGIC:
        raise ProtocolError(f"{where}: magic 0x{magic:08x} is not 0x{UDEV_MAGIC:08x}")
    if hsize < _UDEV_HEADER.size or off < hsize or off + length > len(datagram):
        raise ProtocolError(
            f"{where}: header size {hsize}, properties at {off} (+{length}) "
            f"do not fit {len(datagram)} bytes"
        )
    env = _parse_env(_fields(datagram[off : off + length], where), where)
    action, devpath = env.get("ACTION", ""), env.get("DEVPATH", "")
    return _build(action, devpath, env, where)


def decode_uevent(datagram: bytes) -> Uevent:
    """One netlink uevent datagram (kernel or libudev format) -> ``Uevent``, else ProtocolError."""
    if len(datagram) > MAX_DATAGRAM:
        raise ProtocolError(f"uevent of {len(datagram)} bytes exceeds {MAX_DATAGRAM}")
    if datagram.startswith(UDEV_PREFIX):
        return _decode_udev(datagram)
    return _decode_kernel(datagram)


def decode_for_subsystem(datagram: bytes, subsystem: str) -> Uevent | None:
    """``decode_uevent`` for one subsystem only; others are skipped before any parsing.

    Under a storm of unrelated uevents (block, net, ...) the cheap byte search keeps the
    monitor from decoding what it will throw away.
    """
    needle = b"\0SUBSYSTEM=" + subsystem.encode() + b"\0"
    if not datagram.startswith(UDEV_PREFIX) and needle not in b"\0" + datagram + b"\0":
        return None  # (a libudev header's last byte may precede SUBSYSTEM: no shortcut there)
    uevent = decode_uevent(datagram)
    return uevent if uevent.subsystem == subsystem else None


def _env_bytes(env: Mapping[str, str]) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())


def _full_env(action: str, devpath: str, env: Mapping[str, str]) -> dict[str, str]:
    full = {"ACTION": action, "DEVPATH": devpath}
    full.update(env)
    if "\0" in "".join([action, devpath, *full, *full.values()]):
        raise ValueError("uevent fields must not contain NUL")
    return full


def encode_kernel_uevent(action: str, devpath: str, env: Mapping[str, str]) -> bytes:
    """The datagram the kernel would send (for tests and simulation); ``env`` needs SUBSYSTEM."""
    full = _full_env(action, devpath, env)
    return f"{action}@{devpath}".encode() + b"\0" + _env_bytes(full)


def encode_udev_uevent(action: str, devpath: str, env: Mapping[str, str]) -> bytes:
    """The datagram udevd would send (filter hashes left zero: no socket filter uses them)."""
    props = _env_bytes(_full_env(action, devpath, env))
    size = _UDEV_HEADER.size
    header = _UDEV_HEADER.pack(UDEV_PREFIX, 0, size, size, len(props), 0, 0, 0, 0)
    magic = UDEV_MAGIC.to_bytes(4, "big")
    return header[:8] + magic + header[12:] + props
