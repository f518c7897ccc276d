"""LibnvmeKernel without a kernel: the config dict libnvme gets, and error mapping."""

from __future__ import annotations

import errno

import pytest

from stas.kernel.api import ConnectRequest, KernelError
from stas.kernel.libnvme_kernel import LibnvmeKernel, libnvme_config

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"


def req(**kw) -> ConnectRequest:
    return ConnectRequest(
        transport="tcp", traddr="::1", trsvcid="4420", subsysnqn="klingons", hostnqn=HOSTNQN, **kw
    )


def test_config_dict() -> None:
    assert libnvme_config(req(kato=30, ctrl_loss_tmo=-1, data_digest=True)) == {
        "hdr_digest": False,
        "data_digest": True,
        "disable_sqflow": False,
        "keep_alive_tmo": 30,
        "ctrl_loss_tmo": -1,
    }


class FakeNvme:
    """The few libnvme binding calls LibnvmeKernel makes."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple] = []
        outer = self

        class Ctrl:
            name = "nvme7"

            def __init__(self, root, **kw) -> None:
                outer.calls.append(("ctrl", kw))

            def connect(self, host, cfg) -> None:
                outer.calls.append(("connect", cfg))
                if outer.fail:
                    raise Exception(outer.fail)

        self.ctrl = Ctrl
        self.root = lambda: object()
        self.host = lambda root, **kw: outer.calls.append(("host", kw)) or object()


async def test_connect_passes_everything_and_maps_errors(tmp_path) -> None:
    fake = FakeNvme()
    kernel = LibnvmeKernel(nvme=fake, sysfs=tmp_path)
    ctrl = await kernel.connect(req(host_iface="eth0", kato=5))
    assert ctrl.device == "nvme7"
    assert ("host", {"hostnqn": HOSTNQN, "hostid": None}) in fake.calls
    assert (
        "ctrl",
        {
            "subsysnqn": "klingons",
            "transport": "tcp",
            "traddr": "::1",
            "host_traddr": None,
            "host_iface": "eth0",
            "trsvcid": "4420",
        },
    ) in fake.calls
    fake.fail = "failed to connect: already connected"
    with pytest.raises(KernelError) as info:
        await kernel.connect(req())
    assert info.value.errno == errno.EALREADY and "klingons" in str(info.value)


async def test_disconnect_missing_device_is_a_kernel_error(tmp_path) -> None:
    kernel = LibnvmeKernel(nvme=FakeNvme(), sysfs=tmp_path)
    with pytest.raises(KernelError, match="disconnect nvme3"):
        await kernel.disconnect("nvme3")
