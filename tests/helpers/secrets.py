"""Secrets as the tests write them, independent of the code under test: DH-HMAC-CHAP keys in
nvme gen-dhchap-key's format, and where a secret must never show (processes' arguments)."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path


def dhchap_key(secret: bytes, hh: str = "00") -> str:
    """A DHHC-1 secret as nvme gen-dhchap-key prints it: base64(secret + CRC-32 LE); ``hh``:
    the transformation hash (00 none, 01 SHA-256, 02 SHA-384, 03 SHA-512)."""
    crc = zlib.crc32(secret).to_bytes(4, "little")
    return f"DHHC-1:{hh}:{base64.b64encode(secret + crc).decode()}:"


def all_cmdlines() -> str:
    """Every running process's arguments, one line each (a process gone meanwhile skipped)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                out.append((p / "cmdline").read_bytes().replace(b"\0", b" ").decode("latin-1"))
            except OSError:
                continue
    return "\n".join(out)
