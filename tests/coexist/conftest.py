"""tests/coexist: the private-bus fixtures for the stacd process tests, and a registry under a
temporary root (``reg``, with ``put`` to plant another owner's entry)."""

from pathlib import Path

import pytest

from stas.coexist.registry import Registry
from tests.helpers.fixtures import bus_address, world  # noqa: F401 - fixtures


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    seq = tmp_path / "uevent_seqnum"
    seq.write_text("4242\n")
    return Registry(tmp_path / "run" / "nvme" / "registry", seqnum_file=seq)


def put(reg: Registry, device: str, owner: str) -> None:
    (reg.root / device).mkdir(parents=True)
    (reg.root / device / "owner").write_text(owner + "\n")
