"""Issue 8 on the real kernel: a connect reads the same few sysfs files at 4 or 24 controllers.

The kernel's nvmet target gets 24 subsystems; LibnvmeKernel connects them one by one with a
counting opener. The opens of the last four connects (20 controllers already there) must
equal those of the first four: no scan of the topology per connect. VM only (conftest.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import trio
from test_nvmet_kernel import nvmet, ok

from stas.kernel.api import ConnectRequest
from stas.kernel.libnvme_kernel import LibnvmeKernel
from tests.helpers.entries import HOSTID, HOSTNQN

# HOSTID is HOSTNQN's UUID: 6.12 refuses a host NQN whose host ID differs elsewhere
COUNT = 24


def write_conf(path: Path) -> list[str]:
    nqns = [f"nqn.2026-01.io.scale:s{i:02d}" for i in range(COUNT)]
    conf = {
        "ports": [{"id": 1, "adrfam": "ipv6", "traddr": "::1", "trsvcid": 8009, "trtype": "tcp"}],
        "subsystems": [{"subsysnqn": n, "port": 1, "namespaces": [1]} for n in nqns],
    }
    path.write_text(repr(conf) + "\n")
    return nqns


def test_connect_cost_does_not_grow_with_controllers(clean_kernel: None, tmp_path: Path) -> None:
    nqns = write_conf(tmp_path / "nvmet.conf")
    ok(nvmet("create", "-f", str(tmp_path / "nvmet.conf")))
    opens: list[int] = [0]

    def opener(path: Path) -> BinaryIO:
        opens[0] += 1
        return open(path, "rb")

    async def connect_all() -> list[int]:
        kernel = LibnvmeKernel(opener=opener)
        per_connect: list[int] = []
        for nqn in nqns:
            before = opens[0]
            req = ConnectRequest(
                transport="tcp",
                traddr="::1",
                trsvcid="8009",
                subsysnqn=nqn,
                hostnqn=HOSTNQN,
                hostid=HOSTID,
            )
            ctrl: Any = await kernel.connect(req)
            assert (ctrl.subsysnqn, ctrl.is_io_controller) == (nqn, True)
            per_connect.append(opens[0] - before)
        assert len(await kernel.list_controllers()) == COUNT
        return per_connect

    per_connect = trio.run(connect_all)
    assert per_connect[-4:] == per_connect[:4], per_connect
    assert max(per_connect) <= 12, per_connect  # one device's attributes
