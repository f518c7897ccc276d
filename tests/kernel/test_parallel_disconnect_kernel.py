"""Issue 8 on the real kernel: zoning removes every subsystem at once, stacd's connector
disconnects them in parallel (delete_ctrl takes no global mutex), and they all go.

nvmet gets 24 subsystems; the connector (LibnvmeKernel, no uevent monitor: not needed for
removals) connects them from one log page, then an empty page removes them. Done twice in the
same boot: one disconnect at a time (the old connector's way) and with the default bound; the
second must overlap deletes and be faster. VM only (conftest.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import trio
from test_nvmet_kernel import nvmet, ok
from trio_util import AsyncValue

from stas.actors import connector as connector_mod
from stas.actors.connector import Connector
from stas.config import parse_service_config
from stas.kernel.libnvme_kernel import LibnvmeKernel
from stas.messages import DcLogPages, StacdSnapshot
from tests.helpers.entries import HOSTID, HOSTNQN, dc_tid, dlpe

COUNT = 24
NQNS = [f"nqn.2026-01.io.zap:s{i:02d}" for i in range(COUNT)]
DC = dc_tid("::1", "8009")


class Counting(LibnvmeKernel):
    def __init__(self) -> None:
        super().__init__()
        self.in_flight = self.peak = 0

    async def disconnect(self, device: str) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await super().disconnect(device)
        finally:
            self.in_flight -= 1


def controllers() -> set[str]:
    return {p.name for p in Path("/sys/class/nvme").glob("nvme*")}


async def removal_time(bound: int) -> tuple[float, int]:
    """Connect the 24 from one page, then remove them all: (seconds until the kernel has
    none, most deletes in flight at once)."""
    config, warnings = parse_service_config("", "stacd")
    assert warnings == []
    kernel = Counting()
    published = AsyncValue(StacdSnapshot())
    connector = Connector(
        config=config, host_nqn=HOSTNQN, hostid=HOSTID, kernel=kernel, published=published,
        parallel_disconnects=bound,
    )  # fmt: skip
    send, receive = trio.open_memory_channel[object](100)
    page = DcLogPages(DC, tuple(dlpe(n, trsvcid="8009") for n in NQNS))
    async with trio.open_nursery() as n:
        await n.start(connector.run, receive)
        await send.send(page)
        with trio.fail_after(120):
            while sum(s.connected for s in published.value.iocs) < COUNT:
                await trio.sleep(0.05)
        assert len(controllers()) == COUNT
        t0 = time.monotonic()
        await send.send(DcLogPages(DC, ()))
        with trio.fail_after(120):
            while controllers():
                await trio.sleep(0.005)
        took = time.monotonic() - t0
        n.cancel_scope.cancel()
    return took, kernel.peak


def test_zoning_removes_24_subsystems_with_overlapping_deletes(
    clean_kernel: None, tmp_path: Path
) -> None:
    conf = {
        "ports": [{"id": 1, "adrfam": "ipv6", "traddr": "::1", "trsvcid": 8009, "trtype": "tcp"}],
        "subsystems": [{"subsysnqn": n, "port": 1, "namespaces": [1]} for n in NQNS],
    }
    (tmp_path / "nvmet.conf").write_text(repr(conf) + "\n")
    ok(nvmet("create", "-f", str(tmp_path / "nvmet.conf")))
    serial, serial_peak = trio.run(removal_time, 1)
    parallel, parallel_peak = trio.run(removal_time, connector_mod.PARALLEL_DISCONNECTS)
    print(
        f"\n{COUNT} removals: one at a time {serial:.2f} s, "
        f"{connector_mod.PARALLEL_DISCONNECTS} at once {parallel:.2f} s "
        f"(peak {parallel_peak} deletes in flight)"
    )
    assert serial_peak == 1 and parallel_peak > 1
    assert parallel < serial
