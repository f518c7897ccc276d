"""Admin commands to a kernel NVMe controller through the passthru ioctl (/dev/nvmeN).

The commands themselves come from stas.nvme.commands (the same encoders the userspace host
uses); only the transport differs. Blocking: callers run these in a worker thread.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

from stas.nvme.commands import Sqe
from stas.nvme.errors import NvmeStatusError
from stas.nvme.status import status_name

# struct nvme_passthru_cmd (linux/nvme_ioctl.h): 72 bytes
_CMD = struct.Struct("<BBHIIIQQII6III")
NVME_IOCTL_ADMIN_CMD = (3 << 30) | (_CMD.size << 16) | (ord("N") << 8) | 0x41
DEFAULT_TIMEOUT_MS = 10_000


def admin_command(
    device: str,
    sqe: Sqe,
    *,
    name: str,
    read_len: int = 0,
    data: bytes = b"",
    dev_dir: str = "/dev",
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> tuple[int, bytes]:
    """Run one admin command on ``/dev/<device>``; returns (DW0, data read)."""
    length = read_len or len(data)
    buf = ctypes.create_string_buffer(data, length) if data else ctypes.create_string_buffer(length)
    raw = bytearray(
        _CMD.pack(
            sqe.opcode,
            0,
            0,
            sqe.nsid,
            sqe.cdw2,
            sqe.cdw3,
            0,
            ctypes.addressof(buf) if length else 0,
            0,
            length,
            sqe.cdw10,
            sqe.cdw11,
            sqe.cdw12,
            sqe.cdw13,
            sqe.cdw14,
            sqe.cdw15,
            timeout_ms,
            0,
        )
    )
    fd = os.open(f"{dev_dir}/{device}", os.O_RDWR | os.O_CLOEXEC)
    try:
        status = fcntl.ioctl(fd, NVME_IOCTL_ADMIN_CMD, raw, True)
    finally:
        os.close(fd)
    if status:
        code = status & 0x7FFF
        raise NvmeStatusError(name, code, status_name(code))
    result = _CMD.unpack(bytes(raw))[-1]
    return result, buf.raw[:read_len] if read_len else b""
