"""What the fake kernel keeps per controller and per unread uevent: stacd's benchmark 4 runs
on it in stacd's own process (10,000 controllers), so its costs are counted as stacd's."""

from __future__ import annotations

import errno

import pytest
import trio

from stas.kernel.api import ConnectRequest, KernelError
from stas.kernel.fake import FakeKernel
from tests.helpers.kernel import drain
from tests.helpers.memory import traced

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
N = 2000


def requests() -> list[ConnectRequest]:
    return [
        ConnectRequest("tcp", "::1", str(4420 + i // 100), f"nqn.2026-01.io.t:s{i}", HOSTNQN)
        for i in range(N)
    ]


def test_a_controller_and_its_unread_uevent_stay_small() -> None:
    """Per controller: the controller, its name and the EALREADY index (a key tuple and a set
    each were 290 B more: 589 B, now 289 B); per unread 'add' uevent, a queued triple, the
    Uevent made when read (was 353 B, now 70 B)."""
    reqs = requests()
    sizes: list[float] = []

    async def main() -> None:
        k = FakeKernel()
        with traced() as memory:
            for r in reqs:
                await k.connect(r)
            queued = memory.held()
            events = drain(k)
            del events
            kept = memory.held(collect=True)
        sizes.extend([kept / N, (queued - kept) / N])

    trio.run(main)
    per_controller, per_event = sizes
    assert per_controller < 400, f"{per_controller:.0f} B per controller"
    assert per_event < 150, f"{per_event:.0f} B per unread uevent"


async def test_uevents_read_as_before_and_ealready_still_holds() -> None:
    """One subsystem at two addresses: each refused a second time (EALREADY) while connected;
    the uevents read as the kernel's, in order."""
    k = FakeKernel()
    at1 = ConnectRequest("tcp", "::1", "4420", "nqn.2026-01.io.t:s", HOSTNQN)
    at2 = ConnectRequest("tcp", "::2", "4420", "nqn.2026-01.io.t:s", HOSTNQN)
    a, b = await k.connect(at1), await k.connect(at2)
    for again in (at1, at2):
        with pytest.raises(KernelError) as info:
            await k.connect(again)
        assert info.value.errno == errno.EALREADY
    k.emit_aen(b.device, 0x70F002)
    await k.disconnect(a.device)
    with pytest.raises(KernelError):  # b is still there
        await k.connect(at2)
    assert (await k.connect(at1)).device == "nvme0"  # a's name, free again
    got = [(e.action, e.devpath, dict(e.env)) for e in drain(k)]
    path = "/devices/virtual/nvme-fabrics/ctl/"
    env1 = {"NVME_TRTYPE": "tcp", "NVME_TRADDR": "::1", "NVME_TRSVCID": "4420"}
    env2 = env1 | {"NVME_TRADDR": "::2"}
    assert got == [
        ("add", path + "nvme0", env1),
        ("add", path + "nvme1", env2),
        ("change", path + "nvme1", env2 | {"NVME_AEN": "0x70f002"}),
        ("remove", path + "nvme0", env1),
        ("add", path + "nvme0", env1),
    ]
