"""`ls -d` and `status` carry upstream's keys (issue 9 item 5), besides the project's own.

Upstream's keys and formats (reference §3.4): sysfs hostid, hostnqn, model, serial on every
controller, dlpe on I/O controllers, 'retry connect timer' as '60.0s [off]', booleans as
'True'/'False'; process_info's 'config soak timer', 'kernel support.*', stafd's 'avahi',
stacd's 'last known config file' and 'terminator.*'.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import attrs
import pytest
import trio
from trio_util import AsyncValue

from stas.actors import daemon_dbus
from stas.actors.stacd_dbus import run_stacd_dbus
from stas.ctl import stacctl
from stas.kernel.api import KernelController
from stas.logsetup import TronControl
from stas.messages import IocStatus, StacdSnapshot, Tid
from stas.sdnotify import Notifier
from stas.stacd import Stacd, StacdOptions
from stas.stafd import Stafd, StafdOptions
from tests.helpers.config import host_files
from tests.helpers.dbus_actors import HOSTNQN, Tron, ctl, seed_dc, serve, snapshot

HOSTID = "0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
SYSFS_NQN = "nqn.2014-08.org.nvmexpress:uuid:from-sysfs"
UPSTREAM_DETAIL = {"hostid", "hostnqn", "model", "serial", "retry connect timer", "connected"}


@pytest.fixture
def fake_sysfs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """nvme0 exists in a fake /sys/class/nvme; every device read is recorded."""
    read: list[str] = []

    def reader(device: str) -> KernelController | None:
        read.append(device)
        if device != "nvme0":
            return None
        return KernelController(device, model="Linux", serial="2f0b9c1e", hostnqn=SYSFS_NQN,
                                hostid=HOSTID)  # fmt: skip

    monkeypatch.setattr(daemon_dbus, "read_kernel_device", reader)
    return read


async def test_dc_details_have_upstreams_sysfs_keys(
    bus_address, nursery, capsys, fake_sysfs
) -> None:
    kernel_dc = seed_dc()  # device nvme0: read from sysfs
    tid = attrs.evolve(kernel_dc.tid, traddr="::2")
    userspace_dc = seed_dc(tid=tid, device="nvme?", state="backoff", connected=False)
    info = {"hostnqn": HOSTNQN, "hostid": "11111111-2222-4333-8444-555555555555"}
    await serve(nursery, bus_address, snapshot(kernel_dc, userspace_dc), info=lambda: info)
    rc, out, _ = await ctl(capsys, "--json", "ls", "-d")
    first, second = json.loads(out)
    assert rc == 0 and first.keys() >= UPSTREAM_DETAIL
    assert (first["model"], first["serial"], first["hostnqn"], first["hostid"]) == (
        "Linux", "2f0b9c1e", SYSFS_NQN, HOSTID,
    )  # fmt: skip
    assert first["retry connect timer"] == "60.0s [off]" and first["connected"] == "True"
    # no kernel device: the identity it connects with, '' for what only the kernel knows
    assert (second["model"], second["serial"]) == ("", "")
    assert (second["hostnqn"], second["hostid"]) == (HOSTNQN, info["hostid"])
    assert second["retry connect timer"] == "60.0s [on]" and second["connected"] == "False"
    assert fake_sysfs == ["nvme0"]  # 'nvme?' is never joined to a sysfs path
    rc, out, _ = await ctl(capsys, "ls", "-d")
    assert "'model': 'Linux'" in out and "'registered': 'False'" in out
    rc, out, _ = await ctl(capsys, "--json", "ls")
    assert "model" not in json.loads(out)[0]  # the short listing stays upstream's


async def test_ioc_details_have_upstreams_keys(bus_address, nursery, capsys, fake_sysfs) -> None:
    ioc = IocStatus(Tid("tcp", "::1", "4420", "nqn.io", "", "", HOSTNQN), "discovered",
                    device="nvme0", state="connected", connected=True, ncc=True)  # fmt: skip
    snap = AsyncValue(StacdSnapshot(iocs=(ioc,), generation=1))
    await nursery.start(
        lambda task_status: run_stacd_dbus(
            snapshot=snap, info=lambda: {"hostid": HOSTID}, tron=Tron(), address=bus_address,
            task_status=task_status,
        )
    )  # fmt: skip
    rc = await trio.to_thread.run_sync(stacctl.main, ["--json", "ls", "-d"])
    (row,) = json.loads(capsys.readouterr().out)
    assert rc == 0 and row.keys() >= UPSTREAM_DETAIL | {"dlpe", "dlpe.eflags.ncc"}
    assert (row["model"], row["hostnqn"], row["dlpe.eflags.ncc"]) == ("Linux", SYSFS_NQN, "True")
    assert row["retry connect timer"] == "60.0s [off]" and row["dlpe"] == "{}"


def test_stafd_process_info_has_upstreams_keys(tmp_path: Path) -> None:
    (tmp_path / "stafd.conf").write_text("[Service Discovery]\nzeroconf=disabled\n")
    opts = StafdOptions(str(tmp_path / "stafd.conf"), str(host_files(tmp_path, HOSTNQN, HOSTID)),
                        str(tmp_path / "state"))  # fmt: skip
    info = Stafd(opts, TronControl(logging.getLogger("test.parity")), Notifier()).info()
    assert info["config soak timer"] == "0.0s [off]"
    assert info["kernel support.TP8013"] in ("True", "False")
    assert info["kernel support.host_iface"] in ("True", "False")
    assert info["avahi"] == {"avahi wake up timer": "0.0s [off]", "service types": [],
                             "services": {}}  # fmt: skip
    assert info["last known config file"].startswith(str(tmp_path / "state"))
    assert info["dc-backend"] == "userspace"  # the project's own keys stay


def test_stacd_process_info_has_upstreams_keys(tmp_path: Path) -> None:
    (tmp_path / "stacd.conf").write_text("")
    opts = StacdOptions(
        str(tmp_path / "stacd.conf"), str(host_files(tmp_path, HOSTNQN, HOSTID)), kernel="fake"
    )
    info = Stacd(opts, TronControl(logging.getLogger("test.parity")), Notifier()).info()
    assert info["last known config file"] == ""
    assert info["config soak timer"] == "0.0s [off]"
    assert info["terminator.audit timer"] == "0.0s [off]"
    assert {"kernel support.TP8013", "kernel support.host_iface", "disconnect-scope"} <= set(info)


def test_kernel_support_reads_the_fabrics_option_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from stas.kernel import fabrics

    daemon_dbus.kernel_support.cache_clear()
    monkeypatch.setattr(fabrics, "read_capabilities",
                        lambda: frozenset({"transport", "host_iface"}))  # fmt: skip
    try:
        assert daemon_dbus.kernel_support() == {
            "kernel support.TP8013": "False",
            "kernel support.host_iface": "True",
        }
    finally:
        daemon_dbus.kernel_support.cache_clear()
