"""Who this host is on the fabric (host NQN, host ID): the part of the host that daemons need
at start, kept apart from the protocol code so that knowing it costs no codec imports.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import attrs

NQN_UUID_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"
# Namespace for deriving a host UUID from /etc/machine-id without exposing the machine id.
_HOSTNQN_NAMESPACE = uuid.UUID("5e0cdc5a-57a5-4e1c-9d1b-0a57a5a1d000")


def _os_version() -> str:
    """``Linux 6.1.0-...``, as platform.system() and release() say it (without importing it)."""
    u = os.uname()
    return f"{u.sysname} {u.release}".strip()


SYMNAME_MAX = 256  # bytes of UTF-8: our cap (libnvme sends whatever sys.conf holds)


def symname_problem(value: str) -> str | None:
    """Why ``value`` cannot be the host symbolic name, or None: the one rule for sys.conf,
    stasadm and DIM (printable text, at most SYMNAME_MAX bytes in UTF-8). Here, not in the
    DIM codec, so that config can check a name without importing the codec."""
    if not value.isprintable():
        return "contains a non-printable character"
    if len(value.encode("utf-8")) > SYMNAME_MAX:
        return f"longer than {SYMNAME_MAX} bytes"
    return None


@attrs.frozen
class HostIdentity:
    """Who this host says it is in Connect and DIM."""

    hostnqn: str
    hostid: bytes = attrs.field()
    hostname: str = attrs.field(factory=socket.gethostname)
    os_version: str = attrs.field(factory=_os_version)
    symname: str | None = None

    @hostid.validator
    def _check_hostid(self, _attr: attrs.Attribute[bytes], value: bytes) -> None:
        if not isinstance(value, bytes) or len(value) != 16:
            raise ValueError(f"hostid must be 16 bytes (a UUID), got {value!r}")


def _read_first_line(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return line or None


def _uuid_from(text: str | None) -> uuid.UUID | None:
    if text is None:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def default_host_identity(etc: Path = Path("/etc")) -> HostIdentity:
    """The identity nvme-cli would use, derived without root.

    /etc/nvme/hostnqn and /etc/nvme/hostid win when readable. Otherwise the host NQN is the
    UUID NQN upstream's ``stasadm hostnqn`` derives (hashed, so the machine id itself is not
    disclosed) from /etc/machine-id, the same after a switch from upstream and stable across
    runs; a random UUID is the last resort.
    The host ID defaults to the UUID inside the host NQN, as libnvme does.
    """
    hostnqn = _read_first_line(etc / "nvme" / "hostnqn")
    hostid = _uuid_from(_read_first_line(etc / "nvme" / "hostid"))
    if hostnqn is None:
        from stas.config.identity import machine_id_uuid  # upstream stasadm's derivation

        hostnqn = NQN_UUID_PREFIX + (machine_id_uuid(etc / "machine-id") or str(uuid.uuid4()))
    if hostid is None:
        hostid = _uuid_from(hostnqn.removeprefix(NQN_UUID_PREFIX)) or uuid.uuid5(
            _HOSTNQN_NAMESPACE, hostnqn
        )
    return HostIdentity(hostnqn=hostnqn, hostid=hostid.bytes)
