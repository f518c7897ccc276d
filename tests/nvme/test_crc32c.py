"""CRC32C against published vectors and a bit-at-a-time reference."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stas.nvme.crc32c import crc32c


def _bitwise(data: bytes) -> int:
    """The textbook definition, one bit at a time: slow but obviously right."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def test_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283


def test_rfc3720_vectors() -> None:
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C


def test_empty_is_zero() -> None:
    assert crc32c(b"") == 0


def test_accepts_bytes_like() -> None:
    data = b"nvme over tcp digest"
    assert crc32c(bytearray(data)) == crc32c(data) == crc32c(memoryview(data))


@given(st.binary(max_size=100))
def test_matches_bitwise_reference(data: bytes) -> None:
    assert crc32c(data) == _bitwise(data)


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_continuation(first: bytes, second: bytes) -> None:
    assert crc32c(second, crc32c(first)) == crc32c(first + second)
