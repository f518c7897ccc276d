"""What the in-process simulator tests share: the seed nvmet.conf, its subsystems, host
identities. One place, so a change to the seed (a new subsystem, another port) is made once.

Used with ``open_simulator(conf, ephemeral=True)`` from ``nvmet-harness/sim_server.py``
(``nvmet-harness`` is on pytest's ``pythonpath``). Import the ``conf`` fixture into a test
module (``from tests.helpers.sim import conf``) to get the parsed seed.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from nvmet_config import NvmetConf, load_nvmet_conf

from stas.nvme.host_ops import NQN_UUID_PREFIX, HostIdentity

SEED_CONF = Path(__file__).resolve().parents[2] / "nvmet-harness" / "nvmet.conf"
DELL = "nqn.1988-11.com.dell:PowerSANxxx:01:20210225100113-454f73093ceb4847a7bdfc6e34ae8e28"
SEED_SUBSYSTEMS = ("klingons", DELL, "starfleet")  # port 1's log page, in its order


def host_identity(
    hostid: str, hostname: str = "testhost", os_version: str = "Linux 6.1"
) -> HostIdentity:
    """A host whose NQN is the uuid form of ``hostid`` (as nvme-cli's gen-hostnqn makes it)."""
    uid = uuid.UUID(hostid)
    return HostIdentity(
        hostnqn=NQN_UUID_PREFIX + str(uid),
        hostid=uid.bytes,
        hostname=hostname,
        os_version=os_version,
    )


def seed_conf() -> NvmetConf:
    return load_nvmet_conf(SEED_CONF)


@pytest.fixture
def conf() -> NvmetConf:
    """The shipped nvmet.conf, parsed: port 1 on ::1 with the three seed subsystems."""
    return seed_conf()
