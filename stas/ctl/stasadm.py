"""stasadm: create the host NQN and ID, and set or clear the host symbolic name (upstream §4.3).

Same commands, options and derivation as upstream, so hosts keep their identity when they move
from upstream to us. One difference: sys.conf keeps its comments when it is rewritten.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from stas import __version__

DEFAULT_SYS_CONF = "/etc/stas/sys.conf"
MACHINE_ID = Path("/etc/machine-id")
DMI_PRODUCT_UUID = Path("/sys/class/dmi/id/product_uuid")
IBM_PARTITION_UUID = Path("/proc/device-tree/ibm,partition-uuid")
# systemd's sd_id128_get_machine_app_specific() with this app id, as upstream does.
NVME_APP_ID = b"$nvmexpress.org$"
NQN_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"


class StasadmError(Exception):
    """A user-facing failure: printed as one line, exit 1."""


def machine_app_specific_uuid(machine_id_hex: str, app_id: bytes = NVME_APP_ID) -> str:
    """HMAC-SHA256(machine id, app id) as a version-4 UUID (systemd's app-specific id)."""
    try:
        key = bytes.fromhex(machine_id_hex.strip())
    except ValueError as exc:
        raise StasadmError(f"/etc/machine-id is not hexadecimal: {machine_id_hex!r}") from exc
    if len(key) != 16:
        raise StasadmError(f"/etc/machine-id must hold 32 hex digits, not {len(key) * 2}")
    digest = bytearray(hmac.new(key, app_id, hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(digest)))


def dmi_uuid(text: str) -> str:
    """SMBIOS stores the first three UUID fields little-endian; swap them back (upstream)."""
    raw = uuid.UUID(text.strip()).bytes
    return str(uuid.UUID(bytes_le=raw))


def derive_host_uuid(
    machine_id: Path = MACHINE_ID,
    product_uuid: Path = DMI_PRODUCT_UUID,
    partition_uuid: Path = IBM_PARTITION_UUID,
) -> str:
    """The UUID behind the host NQN, in upstream's order of preference."""
    try:
        return machine_app_specific_uuid(machine_id.read_text())
    except OSError:
        pass
    try:
        return dmi_uuid(product_uuid.read_text())
    except (OSError, ValueError):
        pass
    try:
        return str(uuid.UUID(partition_uuid.read_bytes().rstrip(b"\0").decode().strip()))
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    return str(uuid.uuid4())


def _write_value_file(path: str, value: str) -> None:
    """Write ``value`` to ``path`` atomically (temp file, fsync, rename)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="ascii") as f:
            f.write(value + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise StasadmError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _set(conf: str, key: str, value: str | None) -> None:
    from stas.config import ConfigError, set_sys_option

    try:
        set_sys_option(conf, key, value)
    except ConfigError as exc:
        raise StasadmError(str(exc)) from exc


def save(conf: str, key: str, value: str, file: str | None) -> None:
    """Store ``value`` in sys.conf directly, or in ``file`` with ``key=file://FILE`` there."""
    if file:
        _write_value_file(file, value)
        _set(conf, key, f"file://{os.path.abspath(file)}")
    else:
        _set(conf, key, value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stasadm", description="STorage Appliance Services admin")
    p.add_argument("-v", "--version", action="store_true", help="print version and exit")
    p.add_argument("-c", "--conf-file", default=DEFAULT_SYS_CONF, metavar="FILE",
                   help=f"sys.conf to update (default: {DEFAULT_SYS_CONF})")  # fmt: skip
    sub = p.add_subparsers(dest="cmd", title="commands")
    for name, what in (("hostnqn", "host NQN"), ("hostid", "host ID")):
        c = sub.add_parser(name, help=f"create the {what}")
        c.add_argument("-f", "--file", metavar="FILE", help=f"write the {what} to FILE")
    c = sub.add_parser("set-symname", help="set the host symbolic name")
    c.add_argument("symname", metavar="SYMNAME")
    sub.add_parser("clear-symname", help="remove the host symbolic name")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(f"nvme-stas {__version__}")
        return 0
    if not args.cmd:
        parser.print_usage()
        return 1
    try:
        if args.cmd == "hostnqn":
            save(args.conf_file, "nqn", NQN_PREFIX + derive_host_uuid(), args.file)
        elif args.cmd == "hostid":
            save(args.conf_file, "id", str(uuid.uuid4()), args.file)
        elif args.cmd == "set-symname":
            save(args.conf_file, "symname", args.symname, None)
        else:
            _set(args.conf_file, "symname", None)
    except StasadmError as exc:
        print(f"stasadm: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
