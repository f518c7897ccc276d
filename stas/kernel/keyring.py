"""The kernel keyring for NVMe/TCP TLS: find ``.nvme``, put a PSK into it (as
``nvme check-tls-key --insert`` does), without keyutils or nvme-cli.

The pure part parses ``/proc/keys`` (how keyutils' find_key_by_type_and_desc finds a keyring
by name); the rest is three system calls through ctypes: add_key(2) (which updates a key of
the same type and description in place) and keyctl(KEYCTL_SEARCH). The psk key type's
default permissions are kept: only a possessor may read the key, and tlshd possesses it by
linking ``.nvme`` into its session keyring (``keyrings=.nvme`` in tlshd.conf).
Key material is never logged; errors name the keyring and the identity only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from collections.abc import Callable
from pathlib import Path

import attrs

from stas.nvme.tls_psk import TlsPsk

DEFAULT_KEYRING = ".nvme"
PSK_KEY_TYPE = "psk"
PROC_KEYS = Path("/proc/keys")
SYS_ADD_KEY = 248  # x86_64
SYS_KEYCTL = 250
KEYCTL_SEARCH = 10
_SERIAL = re.compile(r"[1-9][0-9]{0,9}|0x[0-9a-fA-F]{1,8}")
_NAME = re.compile(r"[.A-Za-z_][.A-Za-z0-9_-]{0,63}")


class KeyringError(OSError):
    """A keyring operation failed; the message names the keyring or identity, never a key."""


@attrs.frozen
class ProcKey:
    serial: int
    type: str
    description: str


def parse_proc_keys(text: str) -> list[ProcKey]:
    """The lines of /proc/keys: serial (hex), flags, usage, timeout, perm, uid, gid, type,
    then ``description: summary``. Malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        fields = line.split(None, 8)
        if len(fields) < 9:
            continue
        try:
            serial = int(fields[0], 16)
        except ValueError:
            continue
        description = fields[8].rsplit(": ", 1)[0] if ": " in fields[8] else fields[8]
        out.append(ProcKey(serial, fields[7], description))
    return out


def find_keyring(name: str, proc_keys: str) -> int | None:
    """The serial of the keyring called ``name`` in /proc/keys' text, or None."""
    for key in parse_proc_keys(proc_keys):
        if key.type == "keyring" and key.description == name:
            return key.serial
    return None


def parse_keyring_spec(text: str) -> int | str:
    """``keyring=``: a serial (decimal or 0x hex) or a keyring name (``.nvme``)."""
    if _SERIAL.fullmatch(text):
        value = int(text, 0)
        if 0 < value < 2**31:
            return value
    elif _NAME.fullmatch(text):
        return text
    raise ValueError(f"keyring {text!r} is neither a key serial nor a keyring name")


def resolve_keyring(spec: int | str, read_proc: Callable[[], str] | None = None) -> int:
    """A keyring serial from a serial or a name (looked up in /proc/keys)."""
    if isinstance(spec, int):
        return spec
    text = (read_proc or PROC_KEYS.read_text)()
    serial = find_keyring(spec, text)
    if serial is None:
        raise KeyringError(
            errno.ENOKEY,
            f"keyring {spec!r} not found in /proc/keys"
            + (" (is nvme-tcp or nvmet-tcp loaded?)" if spec == DEFAULT_KEYRING else ""),
        )
    return serial


def _libc() -> ctypes.CDLL:
    from stas.kernel.libc import process_libc

    return process_libc()  # type: ignore[no-any-return]


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise KeyringError(code, f"{what}: {os.strerror(code)}")
    return result


def insert_psk(keyring: int, psk: TlsPsk) -> int:
    """Add (or update) ``psk`` as a ``psk`` key in ``keyring``; returns its serial."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    serial = _check(
        libc.syscall(
            ctypes.c_long(SYS_ADD_KEY),
            ctypes.c_char_p(PSK_KEY_TYPE.encode()),
            ctypes.c_char_p(psk.identity.encode()),
            ctypes.c_char_p(psk.key),
            ctypes.c_size_t(len(psk.key)),
            ctypes.c_int32(keyring),
        ),
        f"add TLS PSK {psk.identity!r} to keyring {keyring:#x}",
    )
    return serial


def search_psk(keyring: int, description: str) -> int | None:
    """The serial of a ``psk`` key in ``keyring`` whose description starts with
    ``description`` (the psk key type matches prefixes), or None."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(
        ctypes.c_long(SYS_KEYCTL),
        ctypes.c_int(KEYCTL_SEARCH),
        ctypes.c_int32(keyring),
        ctypes.c_char_p(PSK_KEY_TYPE.encode()),
        ctypes.c_char_p(description.encode()),
        ctypes.c_int32(0),
    )
    if result < 0:
        code = ctypes.get_errno()
        if code in (errno.ENOKEY, errno.EKEYREVOKED, errno.EKEYEXPIRED):
            return None
        raise KeyringError(code, f"search keyring {keyring:#x}: {os.strerror(code)}")
    return int(result)
