"""The NVMe wire formats in tests: little-endian fields read at a byte offset (struct: a
buffer too short raises), and hypothesis strategies for field values and for hostile bytes."""

from __future__ import annotations

import struct

from hypothesis import strategies as st


def u8(buf: bytes, off: int) -> int:
    return buf[off]


def u16(buf: bytes, off: int) -> int:
    return int(struct.unpack_from("<H", buf, off)[0])


def u32(buf: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", buf, off)[0])


def u64(buf: bytes, off: int) -> int:
    return int(struct.unpack_from("<Q", buf, off)[0])


def uint(bits: int) -> st.SearchStrategy[int]:
    """Any value of an unsigned ``bits``-bit field."""
    return st.integers(0, (1 << bits) - 1)


printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E))


def patched(base: bytes, max_patch: int) -> st.SearchStrategy[bytes]:
    """``base`` with a random stretch (up to ``max_patch`` bytes) overwritten, length kept:
    hits both the good and the bad paths of a decoder."""

    def apply(args: tuple[int, bytes]) -> bytes:
        off, patch = args
        return (base[:off] + patch + base[off + len(patch) :])[: len(base)]

    return st.tuples(st.integers(0, len(base) - 1), st.binary(max_size=max_patch)).map(apply)
