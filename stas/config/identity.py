"""The host UUID behind a generated host NQN, derived exactly as upstream's stasadm does.

A host moving from upstream nvme-stas must keep its host NQN, so both ``stasadm hostnqn`` and
the daemons' fallback (no host NQN configured) use upstream's derivation:

1. ``/etc/machine-id`` (its first 32 characters, as a UUID) hashed with HMAC-SHA256 keyed with
   the application id ``$nvmexpress.org$``, first 16 bytes, made a version-4 UUID. Upstream
   says it follows systemd's ``sd_id128_get_machine_app_specific()``, but it passes the app id
   as the *key* and the machine id as the *message*, the reverse of systemd: so
   ``systemd-id128 machine-id --app-specific=...`` prints a different UUID. Upstream's order is
   what existing hosts have, so it is the one used here.
2. ``/sys/class/dmi/id/product_uuid`` with the first three fields byte-swapped (upstream swaps
   the text, keeping its case);
3. ``/proc/device-tree/ibm,partition-uuid`` as written;
4. a random UUID.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from pathlib import Path

NVME_APP_ID = b"$nvmexpress.org$"
NQN_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"
MACHINE_ID = Path("/etc/machine-id")
DMI_PRODUCT_UUID = Path("/sys/class/dmi/id/product_uuid")
IBM_PARTITION_UUID = Path("/proc/device-tree/ibm,partition-uuid")


def machine_app_specific_uuid(machine_id: str, app_id: bytes = NVME_APP_ID) -> str:
    """Upstream's app-specific UUID of a machine id; ``ValueError`` if it is not 32 hex digits."""
    text = machine_id.strip()
    if len(text) != 32:
        raise ValueError(f"a machine id has 32 hex digits, not {len(text)}: {text[:40]!r}")
    try:
        key_material = uuid.UUID(text).bytes
    except ValueError:
        raise ValueError(f"a machine id is hexadecimal: {text!r}") from None
    digest = hmac.new(app_id, key_material, hashlib.sha256).digest()[:16]
    return str(uuid.UUID(bytes=digest, version=4))


def dmi_uuid(text: str) -> str:
    """SMBIOS product UUID with its first three fields byte-swapped, case kept (upstream)."""
    s = text.strip()[:36]
    uuid.UUID(s)  # ValueError if it is not a UUID
    return f"{_swap(s[0:8])}-{_swap(s[9:13])}-{_swap(s[14:18])}{s[18:]}"


def _swap(hex_digits: str) -> str:
    """Reverse the byte order of a little-endian hex field ("03020100" -> "00010203")."""
    pairs = [hex_digits[i : i + 2] for i in range(0, len(hex_digits), 2)]
    return "".join(reversed(pairs))


def machine_id_uuid(path: Path = MACHINE_ID) -> str | None:
    """The app-specific UUID of ``path``'s machine id; ``None`` if absent or unusable."""
    try:
        return machine_app_specific_uuid(path.read_text(encoding="ascii")[:32])
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def derive_host_uuid(
    machine_id: Path = MACHINE_ID,
    product_uuid: Path = DMI_PRODUCT_UUID,
    partition_uuid: Path = IBM_PARTITION_UUID,
) -> str:
    """The UUID behind the host NQN, in upstream's order of preference (see the module)."""
    derived = machine_id_uuid(machine_id)
    if derived is not None:
        return derived
    try:
        return dmi_uuid(product_uuid.read_text(encoding="ascii"))
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    try:
        text = partition_uuid.read_bytes().rstrip(b"\0").decode("ascii").strip()[:36]
        uuid.UUID(text)
        return text
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    return str(uuid.uuid4())
