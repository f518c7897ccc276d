"""stacd's D-Bus actor and stacctl against a real private dbus-daemon."""

from __future__ import annotations

import json
import pprint

from trio_util import AsyncValue

from stas.actors.stacd_dbus import run_stacd_dbus
from stas.ctl import stacctl
from stas.messages import IocStatus, StacdSnapshot, Tid
from tests.helpers.dbus_actors import Tron, run_main

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555"
SECRET = "DHHC-1:00:ia6zGodOr5SEG8f+M2DLUeJFMJ4UUJpo1iwxX2mzBRGrRmlq:"


def ioc(nqn: str, device: str, **kw) -> IocStatus:
    tid = Tid("tcp", "::1", "8009", nqn, "", "", HOSTNQN)
    return IocStatus(tid=tid, origin="discovered", device=device, connected=True, **kw)


async def serve(nursery, bus_address, snap, uid: int = 0) -> None:
    async def fixed_uid(sender: str) -> int:
        return uid

    await nursery.start(
        lambda task_status: run_stacd_dbus(
            snapshot=snap,
            info=lambda: {"hostnqn": HOSTNQN, "hostkey": SECRET},
            tron=Tron(),
            address=bus_address,
            uid_lookup=fixed_uid,
            task_status=task_status,
        )
    )


async def ctl(capsys, *argv: str) -> tuple[int, str, str]:
    return await run_main(stacctl.main, capsys, *argv)


async def test_ls_like_the_seed_document(bus_address, nursery, capsys) -> None:
    snap = AsyncValue(StacdSnapshot(iocs=(ioc("klingons", "nvme1"), ioc("starfleet", "nvme3"))))
    await serve(nursery, bus_address, snap)
    rc, out, _ = await ctl(capsys, "ls")
    expected = [
        {
            "device": dev,
            "host-iface": "",
            "host-nqn": HOSTNQN,
            "host-traddr": "",
            "subsysnqn": nqn,
            "traddr": "::1",
            "transport": "tcp",
            "trsvcid": "8009",
        }
        for nqn, dev in (("klingons", "nvme1"), ("starfleet", "nvme3"))
    ]
    assert rc == 0 and out == pprint.pformat(expected, width=120) + "\n"
    rc, out, _ = await ctl(capsys, "--json", "ls", "-d")
    assert {d["adopted"] for d in json.loads(out)} == {"False"}


async def test_status_hides_secrets_from_non_root(bus_address, nursery, capsys) -> None:
    snap = AsyncValue(
        StacdSnapshot(iocs=(ioc("klingons", "nvme1", params={"dhchap-secret": SECRET}),))
    )
    await serve(nursery, bus_address, snap, uid=1000)
    rc, out, _ = await ctl(capsys, "--json", "status")
    assert rc == 0 and SECRET not in out
    doc = json.loads(out)
    assert doc["hostkey"] == "<redacted>" and doc["controllers"][0]["state"] == "idle"


async def test_no_daemon_is_one_line(bus_address, capsys) -> None:
    rc, out, err = await ctl(capsys, "ls")
    assert (rc, out) == (1, "")
    assert err == "Unable to communicate with stacd over D-Bus. Is stacd running?\n"
