"""Reading a configuration file: regular files only, size checked before reading.

Every config read (stafd.conf, stacd.conf, sys.conf and the host files it points to with
``file://``) goes through ``read_regular_file``. A FIFO at a config path would block ``open()``
forever and a device could feed endless data, so the file is opened with ``O_NONBLOCK`` (a
FIFO open returns at once), checked with ``fstat`` and refused unless it is a regular file; its
size is checked before a byte is read. Symlinks are followed (packagers link config files); a
symlink loop is refused with the kernel's reason.
"""

from __future__ import annotations

import os
import stat

from stas.config.errors import ConfigError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """What a non-regular file is, for a message ("a FIFO (named pipe)", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def read_regular_file(path: str | os.PathLike[str], limit: int) -> bytes | None:
    """The bytes of ``path``; ``None`` if it does not exist.

    Raises ``ConfigError`` naming the path when it cannot be opened, is not a regular file, or
    is larger than ``limit`` bytes (checked with ``fstat`` before reading, and again while
    reading in case the file grows).
    """
    shown = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{shown}: cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = file_kind(st.st_mode)
            raise ConfigError(f"{shown}: cannot read: {kind}, not a regular file")
        if st.st_size > limit:
            raise ConfigError(f"{shown}: {st.st_size} bytes, larger than {limit} bytes")
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as e:
        raise ConfigError(f"{shown}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if total > limit:
        raise ConfigError(f"{shown}: larger than {limit} bytes")
    return b"".join(chunks)
