"""Status code names, as shown in logs and errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.nvme.commands import Cqe, make_status
from stas.nvme.status import status_name


@pytest.mark.parametrize(
    ("sct", "sc", "name"),
    [
        (0, 0x00, "Success"),
        (0, 0x01, "Invalid Command Opcode"),
        (0, 0x02, "Invalid Field in Command"),
        (0, 0x03, "Command ID Conflict"),
        (0, 0x04, "Data Transfer Error"),
        (0, 0x06, "Internal Error"),
        (0, 0x07, "Command Abort Requested"),
        (0, 0x0B, "Invalid Namespace or Format"),
        (0, 0x0C, "Command Sequence Error"),
        (0, 0x0D, "Invalid SGL Segment Descriptor"),
        (0, 0x11, "SGL Descriptor Type Invalid"),
        (0, 0x19, "Keep Alive Timer Expired"),
        (0, 0x1A, "Keep Alive Timeout Invalid"),
        (0, 0x22, "Transient Transport Error"),
        (0, 0x82, "Namespace Not Ready"),
        (1, 0x05, "Asynchronous Event Request Limit Exceeded"),
        (1, 0x09, "Invalid Log Page"),
        (1, 0x80, "Incompatible Format"),
        (1, 0x81, "Controller Busy"),
        (1, 0x82, "Connect Invalid Parameters"),
        (1, 0x83, "Connect Restart Discovery"),
        (1, 0x84, "Connect Invalid Host"),
        (1, 0x85, "Invalid Queue Type"),
        (1, 0x90, "Discover Restart"),
        (1, 0x91, "Authentication Required"),
        (2, 0x81, "Unrecovered Read Error"),
        (3, 0x00, "Internal Path Error"),
        (3, 0x02, "Asymmetric Access Inaccessible"),
        (3, 0x70, "Host Pathing Error"),
        (3, 0x71, "Command Aborted By Host"),
    ],
)
def test_known_codes(sct: int, sc: int, name: str) -> None:
    assert status_name(make_status(sct, sc)) == name


def test_unknown_and_vendor_codes() -> None:
    assert status_name(make_status(0, 0x7E)) == "Unknown status (SCT 0, SC 0x7e)"
    assert status_name(make_status(5, 0x01)) == "Unknown status (SCT 5, SC 0x01)"
    assert status_name(make_status(7, 0xC0)) == "Vendor Specific status (SC 0xc0)"


def test_authentication_required_is_0x191() -> None:
    assert status_name(0x191) == "Authentication Required"


def test_dnr_crd_more_do_not_change_the_name() -> None:
    status = make_status(1, 0x84, dnr=True) | (0b11 << 11) | (1 << 13)
    assert status_name(status) == "Connect Invalid Host"


@given(st.integers(0, 0x7FFF))
def test_every_status_has_a_name(status: int) -> None:
    name = status_name(status)
    assert name
    assert Cqe(status=status).status_name == name
