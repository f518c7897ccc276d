"""stafd's D-Bus actor and stafctl against a real private dbus-daemon."""

from __future__ import annotations

import json
import pprint
import sys

import attrs
import pytest
import trio
from trio_util import AsyncValue

from stas.actors.stafd_dbus import run_stafd_dbus
from stas.ctl import stafctl
from stas.dbus.trio_client import DcRemoved, LogPagesChanged, StafdAppeared, open_stafd_client
from stas.messages import DcStatus, StafdSnapshot, Tid
from stas.nvme.logpage import LogPageEntry

WK = "nqn.2014-08.org.nvmexpress.discovery"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555"
SEED = (
    "klingons",
    "nqn.1988-11.com.dell:PowerSANxxx:01:20210225100113-454f73093ceb4847a7bdfc6e34ae8e28",
    "starfleet",
)
DC = Tid("tcp", "::1", "8009", WK, "", "", HOSTNQN)
SECRET = "DHHC-1:00:ia6zGodOr5SEG8f+M2DLUeJFMJ4UUJpo1iwxX2mzBRGrRmlq:"


def entry(nqn: str) -> LogPageEntry:
    return LogPageEntry(
        trtype=3,
        adrfam=2,
        subtype=2,
        treq=0,
        portid=1,
        cntlid=0xFFFF,
        asqsz=32,
        eflags=0,
        trsvcid="8009",
        subnqn=nqn,
        traddr="::1",
    )


def seed_dc(**kw) -> DcStatus:
    base = dict(
        tid=DC,
        origin="configured",
        device="nvme0",
        state="connected",
        connected=True,
        genctr=1,
        log_pages=tuple(entry(n) for n in SEED),
    )
    return DcStatus(**(base | kw))


class Tron:
    def __init__(self) -> None:
        self.value = False

    def get(self) -> bool:
        return self.value

    def set(self, value: bool) -> None:
        self.value = value

    def level_name(self) -> str:
        return "DEBUG" if self.value else "INFO"


async def serve(nursery, bus_address, snap: AsyncValue, *, uid: int = 0, info=None) -> Tron:
    tron = Tron()

    async def fixed_uid(sender: str) -> int:
        return uid

    await nursery.start(
        lambda task_status: run_stafd_dbus(
            snapshot=snap,
            info=info or (lambda: {"hostnqn": HOSTNQN, "hostkey": SECRET}),
            tron=tron,
            address=bus_address,
            uid_lookup=fixed_uid,
            task_status=task_status,
        )
    )
    return tron


async def ctl(capsys, *argv: str) -> tuple[int, str, str]:
    rc = await trio.to_thread.run_sync(stafctl.main, list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


async def test_ls_and_adlp_like_the_seed_document(bus_address, nursery, capsys) -> None:
    snap = AsyncValue(StafdSnapshot(dcs=(seed_dc(),), generation=1))
    await serve(nursery, bus_address, snap)
    rc, out, _ = await ctl(capsys, "ls")
    assert rc == 0
    assert (
        out
        == pprint.pformat(
            [
                {
                    "device": "nvme0",
                    "host-iface": "",
                    "host-nqn": HOSTNQN,
                    "host-traddr": "",
                    "subsysnqn": WK,
                    "traddr": "::1",
                    "transport": "tcp",
                    "trsvcid": "8009",
                }
            ],
            width=120,
        )
        + "\n"
    )
    rc, out, _ = await ctl(capsys, "--json", "adlp")
    doc = json.loads(out)
    assert [e["subnqn"] for e in doc[0]["log-pages"]] == list(SEED)
    assert doc[0]["discovery-controller"]["traddr"] == "::1"
    rc, out, _ = await ctl(capsys, "--json", "dlp", "-a", "::1", "-s", "8009", "-q", "")
    assert [e["subnqn"] for e in json.loads(out)] == list(SEED)
    rc, out, _ = await ctl(capsys, "ls", "-d")
    assert "'origin': 'configured'" in out and "'connected': 'True'" in out


async def test_signals_on_content_change_only(bus_address, nursery) -> None:
    snap = AsyncValue(StafdSnapshot(dcs=(seed_dc(),), generation=1))
    await serve(nursery, bus_address, snap)
    send, receive = trio.open_memory_channel(100)
    async with open_stafd_client(send, address=bus_address):
        assert isinstance(await receive.receive(), StafdAppeared)
        snap.value = StafdSnapshot(dcs=(seed_dc(),), generation=2)  # same content: no signal
        two = seed_dc(log_pages=tuple(entry(n) for n in SEED[1:]), genctr=2)
        snap.value = StafdSnapshot(dcs=(two,), generation=3)
        with trio.fail_after(5):
            ev = await receive.receive()
        assert isinstance(ev, LogPagesChanged) and (ev.traddr, ev.device) == ("::1", "nvme0")
        snap.value = StafdSnapshot(dcs=(), generation=4)
        with trio.fail_after(5):
            assert isinstance(await receive.receive(), DcRemoved)
        await trio.sleep(0.2)
        with pytest.raises(trio.WouldBlock):
            receive.receive_nowait()  # exactly one signal per change


async def test_secrets_hidden_from_non_root(bus_address, nursery, capsys) -> None:
    dc = seed_dc(params={"dhchap-secret": SECRET})
    snap = AsyncValue(StafdSnapshot(dcs=(dc,), generation=1))
    await serve(nursery, bus_address, snap, uid=1000)
    rc, out, _ = await ctl(capsys, "--json", "ls")
    assert SECRET not in out and json.loads(out)[0]["dhchap-secret"] == "<redacted>"
    rc, out, _ = await ctl(capsys, "--json", "status")
    assert rc == 0 and SECRET not in out
    rc, out, err = await ctl(capsys, "tron")
    assert rc == 1 and "permission denied" in err and err.count("\n") == 1


async def test_root_sees_secrets_and_can_trace(bus_address, nursery, capsys) -> None:
    dc = seed_dc(params={"dhchap-secret": SECRET})
    snap = AsyncValue(StafdSnapshot(dcs=(dc,), generation=1))
    tron = await serve(nursery, bus_address, snap, uid=0)
    _, out, _ = await ctl(capsys, "--json", "ls")
    assert json.loads(out)[0]["dhchap-secret"] == SECRET
    assert (await ctl(capsys, "tron"))[1] == "tron = True\n" and tron.value is True
    assert (await ctl(capsys, "troff"))[1] == "tron = False\n" and tron.value is False


async def test_no_daemon_is_one_line(bus_address, capsys) -> None:
    rc, out, err = await ctl(capsys, "ls")
    assert rc == 1 and out == ""
    assert err == "Unable to communicate with stafd over D-Bus. Is stafd running?\n"


def test_usage_version_and_bad_args(capsys) -> None:
    assert stafctl.main([]) == 1 and "usage: stafctl" in capsys.readouterr().out
    assert stafctl.main(["-v"]) == 0 and capsys.readouterr().out.startswith("nvme-stas ")
    with pytest.raises(SystemExit) as info:
        stafctl.main(["dlp"])  # -a and -s are required
    assert info.value.code == 2


def test_host_nqn_default_without_files(tmp_path, monkeypatch) -> None:
    from stas.ctl import common

    monkeypatch.setenv("STAS_SYS_CONF", str(tmp_path / "missing.conf"))
    monkeypatch.setattr(common, "DEFAULT_HOSTNQN_FILE", str(tmp_path / "no-hostnqn"))
    assert common.host_nqn_default() == ""  # no sys.conf, no hostnqn: no error either
    (tmp_path / "hostnqn").write_text(HOSTNQN + "\n")
    (tmp_path / "sys.conf").write_text(f"[Host]\nnqn = file://{tmp_path}/hostnqn  # comment\n")
    monkeypatch.setenv("STAS_SYS_CONF", str(tmp_path / "sys.conf"))
    assert common.host_nqn_default() == HOSTNQN


async def test_as_a_program(bus_address, nursery) -> None:
    snap = AsyncValue(StafdSnapshot(dcs=(seed_dc(),), generation=1))
    await serve(nursery, bus_address, snap)
    proc = await trio.run_process(
        [sys.executable, "-m", "stas.ctl.stafctl", "ls"], capture_stdout=True, capture_stderr=True
    )
    assert "'traddr': '::1'" in proc.stdout.decode()
    assert attrs.has(DcStatus)
