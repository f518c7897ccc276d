"""stafd's D-Bus actor and stafctl against a real private dbus-daemon."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from stas.actors.daemon_dbus import WatchedTron
from stas.ctl import common, stafctl
from stas.dbus.trio_client import DcRemoved, LogPagesChanged, StafdAppeared, open_stafd_client
from stas.messages import DcStatus, StafdSnapshot
from tests.helpers.dbus_actors import (
    DC,
    HOSTKEY,
    HOSTNQN,
    SECRET,
    SEED,
    WK,
    Tron,
    ctl,
    entry,
    pformat,
    seed_dc,
    serve,
    snapshot,
)

LS_SEED = [  # the seed document's `stafctl ls`, plus upstream 2.x's host-nqn key
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
]
DETAIL_KEYS = {
    "connect attempts",
    "retry connect timer",
    "connected",
    "origin",
    "dctype",
    "cntrltype",
    "state",
    "last error",
    "genctr",
    "registered",
}


@pytest.fixture
def no_host_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Neither sys.conf nor /etc/nvme/hostnqn exist, as on a host without nvme-cli set up."""
    monkeypatch.setenv("STAS_SYS_CONF", str(tmp_path / "missing-sys.conf"))
    monkeypatch.setattr(common, "DEFAULT_HOSTNQN_FILE", str(tmp_path / "missing-hostnqn"))
    return tmp_path


async def test_ls_is_the_seed_documents_format(bus_address, nursery, capsys) -> None:
    await serve(nursery, bus_address, snapshot(seed_dc()))
    assert await ctl(capsys, "ls") == (0, pformat(LS_SEED), "")
    rc, out, _ = await ctl(capsys, "ls", "--json")  # --json also after the command
    assert rc == 0 and json.loads(out) == LS_SEED


async def test_ls_detailed_has_upstream_detail_keys(bus_address, nursery, capsys) -> None:
    dc = seed_dc(params={"kato": "30"}, state="backoff", connected=False, connect_attempts=3)
    await serve(nursery, bus_address, snapshot(dc))
    rc, out, _ = await ctl(capsys, "--json", "ls", "-d")
    (row,) = json.loads(out)
    assert rc == 0 and row.keys() >= DETAIL_KEYS
    assert all(isinstance(v, str) for v in row.values())
    assert row["kato"] == "30"  # per-controller config keys are part of the dict
    assert (row["connected"], row["origin"], row["connect attempts"]) == (
        "False",
        "configured",
        "3",
    )
    assert row["retry connect timer"] == "60.0s [on]" and row["genctr"] == "1"
    rc, out, _ = await ctl(capsys, "ls", "-d")
    assert "'connected': 'False'" in out and "'state': 'backoff'" in out


async def test_userspace_dc_details_name_the_connection(bus_address, nursery, capsys) -> None:
    """A userspace DC's device is upstream's 'nvme?'; ``connection`` says what it really is."""
    link = "userspace tcp [::1]:48812 -> [::1]:8009"
    kernel_dc = seed_dc(tid=attrs.evolve(DC, trsvcid="4420"))
    await serve(nursery, bus_address, snapshot(seed_dc(device="nvme?", link=link), kernel_dc))
    rc, out, _ = await ctl(capsys, "--json", "ls", "-d")
    rows = {r["trsvcid"]: r for r in json.loads(out)}
    assert rc == 0 and (rows["8009"]["device"], rows["8009"]["connection"]) == ("nvme?", link)
    assert (rows["4420"]["device"], rows["4420"]["connection"]) == ("nvme0", "")
    rc, out, _ = await ctl(capsys, "ls", "-d")
    assert f"'connection': '{link}'" in out
    rc, out, _ = await ctl(capsys, "--json", "status")  # controller_info carries it too
    assert [c["connection"] for c in json.loads(out)["controllers"]] == [link, ""]
    rc, out, _ = await ctl(capsys, "--json", "ls")  # not in the plain listing (upstream's keys)
    assert all("connection" not in r for r in json.loads(out))


async def test_adlp_and_dlp_show_the_three_subsystems(bus_address, nursery, capsys) -> None:
    await serve(nursery, bus_address, snapshot(seed_dc()))
    dlpes = [entry(n).to_dlpe() for n in SEED]
    expected = [{"discovery-controller": LS_SEED[0], "log-pages": dlpes}]
    assert await ctl(capsys, "adlp") == (0, pformat(expected), "")
    rc, out, _ = await ctl(capsys, "--json", "adlp", "-d")
    (item,) = json.loads(out)
    assert [e["subnqn"] for e in item["log-pages"]] == list(SEED)
    assert item["discovery-controller"].keys() >= DETAIL_KEYS
    tid_args = ["-a", "::1", "-s", "8009", "-q", HOSTNQN]
    assert await ctl(capsys, "dlp", *tid_args) == (0, pformat(dlpes), "")
    # '' trsvcid takes tcp's default (8009) and '' host NQN matches the DC's, like upstream.
    rc, out, _ = await ctl(capsys, "--json", "dlp", "-a", "::1", "-s", "", "-q", "")
    assert rc == 0 and json.loads(out) == dlpes


async def test_dlp_naming_no_dc_says_so(bus_address, nursery, capsys, no_host_files) -> None:
    """stdout and the exit code stay upstream's ([], 0); stderr says no DC matched."""
    empty = seed_dc((), tid=attrs.evolve(DC, trsvcid="4420"))  # a DC whose log page is empty
    await serve(nursery, bus_address, snapshot(seed_dc(), empty))
    rc, out, err = await ctl(capsys, "dlp", "-a", "::2", "-s", "8009")
    assert (rc, out) == (0, "[]\n")
    assert err == (
        "stafctl: no discovery controller matches transport='tcp', traddr='::2',"
        f" trsvcid='8009', subsysnqn='{WK}' (see stafctl ls)\n"
    )
    rc, out, err = await ctl(capsys, "--json", "dlp", "-a", "::1", "-s", "8009", "-q", "nqn.other")
    assert (rc, json.loads(out)) == (0, [])
    assert err.startswith("stafctl: no discovery controller matches") and "nqn.other" in err
    assert err.count("\n") == 1
    # a DC that exists with an empty log page: [] and nothing on stderr
    assert await ctl(capsys, "dlp", "-a", "::1", "-s", "4420", "-q", HOSTNQN) == (0, "[]\n", "")


async def test_dlp_without_host_files(bus_address, nursery, capsys, no_host_files) -> None:
    """Upstream's stafctl failed on every command without /etc/nvme/hostnqn; ours does not."""
    await serve(nursery, bus_address, snapshot(seed_dc()))
    rc, out, err = await ctl(capsys, "--json", "dlp", "-a", "::1", "-s", "8009")
    assert (rc, err) == (0, "") and [e["subnqn"] for e in json.loads(out)] == list(SEED)


async def test_dlp_host_nqn_default_comes_from_sys_conf(
    bus_address, nursery, capsys, no_host_files, monkeypatch
) -> None:
    await serve(nursery, bus_address, snapshot(seed_dc()))
    conf = no_host_files / "sys.conf"
    conf.write_text("[Host]\nnqn = nqn.somebody-else\n")
    monkeypatch.setenv("STAS_SYS_CONF", str(conf))
    rc, out, err = await ctl(capsys, "dlp", "-a", "::1", "-s", "8009")
    assert (rc, out) == (0, "[]\n") and "host-nqn='nqn.somebody-else'" in err
    (no_host_files / "hostnqn").write_text(HOSTNQN + "\n")
    conf.write_text(f"[Host]\nnqn = file://{no_host_files}/hostnqn\n")
    rc, out, _ = await ctl(capsys, "--json", "dlp", "-a", "::1", "-s", "8009")
    assert rc == 0 and len(json.loads(out)) == 3


async def test_signals_on_content_change_only(bus_address, nursery) -> None:
    """One log_pages_changed per content change, none for a re-fetch; dc_removed on removal.

    Signals from one sender arrive in order, so each step is checked by what arrives next: a
    spurious signal would show up before the expected one (the device names tell them apart).
    """
    snap = snapshot(seed_dc())
    await serve(nursery, bus_address, snap)
    send, receive = trio.open_memory_channel[Any](100)

    async def publish(*dcs: DcStatus) -> None:
        snap.value = StafdSnapshot(dcs=dcs, generation=snap.value.generation + 1)
        await trio.testing.wait_all_tasks_blocked()  # the actor has looked at it

    async def next_event() -> Any:
        with trio.fail_after(5):
            return await receive.receive()

    async with open_stafd_client(send, address=bus_address):
        assert isinstance(await next_event(), StafdAppeared)
        await publish(seed_dc(genctr=2))  # re-fetched, same entries: no signal
        await publish(seed_dc(SEED[1:], device="nvme1", genctr=3))
        ev = await next_event()
        assert isinstance(ev, LogPagesChanged)
        assert ev.dc.dbus_args()[:4] == ("tcp", "::1", "8009", WK)
        assert (ev.dc.host_nqn, ev.device) == (HOSTNQN, "nvme1")
        await publish(seed_dc(SEED[1:], device="nvme1", genctr=4, state="backoff"))  # no signal
        await publish()
        assert isinstance(await next_event(), DcRemoved)
        await publish(seed_dc(device="nvme9"))  # a new DC with entries: announced
        ev = await next_event()
        assert isinstance(ev, LogPagesChanged) and ev.device == "nvme9"
        assert receive.statistics().current_buffer_used == 0


async def test_secrets_hidden_from_non_root(bus_address, nursery, capsys) -> None:
    dc = seed_dc(params={"dhchap-secret": SECRET, "dhchap-ctrl-secret": SECRET})
    tron = await serve(nursery, bus_address, snapshot(dc), uid=1000)
    for argv in (["ls"], ["ls", "-d"], ["adlp", "-d"], ["status"]):
        rc, out, err = await ctl(capsys, "--json", *argv)
        assert (rc, err) == (0, "") and SECRET not in out and HOSTKEY not in out
    rc, out, _ = await ctl(capsys, "--json", "ls")
    assert json.loads(out)[0]["dhchap-secret"] == "<redacted>"
    rc, out, _ = await ctl(capsys, "--json", "adlp")
    assert json.loads(out)[0]["discovery-controller"]["dhchap-ctrl-secret"] == "<redacted>"
    rc, out, _ = await ctl(capsys, "--json", "status")
    status = json.loads(out)
    assert status["hostkey"] == "<redacted>" and status["hostnqn"] == HOSTNQN
    assert status["controllers"][0]["dhchap-secret"] == "<redacted>"  # controller_info too
    rc, out, err = await ctl(capsys, "tron")
    assert (rc, out, err) == (1, "", "stafd: permission denied: only root may set tron\n")
    assert tron.value is False


async def test_root_sees_secrets_and_can_trace(bus_address, nursery, capsys) -> None:
    dc = seed_dc(params={"dhchap-secret": SECRET})
    tron = await serve(nursery, bus_address, snapshot(dc), uid=0)
    _, out, _ = await ctl(capsys, "--json", "ls")
    assert json.loads(out)[0]["dhchap-secret"] == SECRET
    _, out, _ = await ctl(capsys, "--json", "status")
    status = json.loads(out)
    assert status["hostkey"] == HOSTKEY
    ctrl = status["controllers"][0]
    assert [p["subnqn"] for p in ctrl["log_pages"]] == list(SEED)
    assert ctrl["dhchap-secret"] == SECRET and ctrl["origin"] == "configured"
    assert await ctl(capsys, "tron") == (0, "tron = True\n", "") and tron.value is True
    assert await ctl(capsys, "troff") == (0, "tron = False\n", "") and tron.value is False


async def test_no_daemon_is_one_line(bus_address, capsys) -> None:
    for argv in (["ls"], ["status"], ["tron"], ["dlp", "-a", "::1", "-s", "8009"], ["adlp"]):
        rc, out, err = await ctl(capsys, *argv)
        assert (rc, out) == (1, "")
        assert err == "Unable to communicate with stafd over D-Bus. Is stafd running?\n"


async def test_no_bus_at_all_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    rc, out, err = await ctl(capsys, "ls")
    assert (rc, out) == (1, "")  # the bus is named, not stafd (tests/ctl/test_ctl_errors.py)
    assert err.startswith("Unable to communicate with stafd over D-Bus: no system bus at ")


def test_usage_version_and_bad_args(capsys) -> None:
    assert stafctl.main([]) == 1 and capsys.readouterr().out.startswith("usage: stafctl")
    assert stafctl.main(["-v"]) == 0
    assert capsys.readouterr().out.startswith("nvme-stas ")
    for bad in (["dlp"], ["dlp", "-a", "::1", "-s", "8009", "-t", "udp"], ["frobnicate"]):
        with pytest.raises(SystemExit) as info:
            stafctl.main(bad)
        assert info.value.code == 2  # argparse's usage error, as upstream


def test_host_nqn_default_reader(no_host_files: Path, monkeypatch) -> None:
    tmp = no_host_files
    assert common.host_nqn_default() == ""  # no sys.conf, no hostnqn: no error either
    (tmp / "hostnqn").write_text(HOSTNQN + "\n")
    conf = tmp / "sys.conf"
    conf.write_text(f"[Host]\n; nqn = ignored\nnqn = file://{tmp}/hostnqn  # comment\n")
    monkeypatch.setenv("STAS_SYS_CONF", str(conf))
    assert common.host_nqn_default() == HOSTNQN
    conf.write_text("[Global]\nnqn = not-this\n[Host]\nNQN = nqn.direct\n")
    assert common.host_nqn_default() == "nqn.direct"
    conf.write_bytes(b"[Host]\nnqn = \xff\xfe\n")  # undecodable: treated as unreadable
    assert common.host_nqn_default() == ""


async def test_as_a_program(bus_address, nursery) -> None:
    await serve(nursery, bus_address, snapshot(seed_dc()))
    cmd = [sys.executable, "-m", "stas.ctl.stafctl"]
    proc = await trio.run_process([*cmd, "ls"], capture_stdout=True, capture_stderr=True)
    assert (proc.returncode, proc.stdout.decode(), proc.stderr) == (0, pformat(LS_SEED), b"")
    proc = await trio.run_process([*cmd, "-v"], capture_stdout=True)
    assert proc.stdout.decode().startswith("nvme-stas ")


async def properties_changed(nursery: trio.Nursery, bus_address: str) -> Any:
    """A receive channel of the PropertiesChanged signals on the bus (only those: the bus's
    own NameAcquired reached a catch-all listener now and then)."""
    from tests.helpers.fixtures import watch_signals

    return await watch_signals(nursery, bus_address, interface="org.freedesktop.DBus.Properties",
                               member="PropertiesChanged")  # fmt: skip


async def test_tron_changed_by_the_daemon_is_announced_once(bus_address, nursery, capsys) -> None:
    """A reload's tron change (not a D-Bus Set) is announced; a Set is announced once, though
    both the Set and the watched switch see it. Signals arrive in order, so a duplicate would
    be received before the next change's signal."""
    tron = WatchedTron(Tron())
    await serve(nursery, bus_address, snapshot(seed_dc()), tron=tron)
    signals = await properties_changed(nursery, bus_address)
    on = ("org.nvmexpress.staf.debug", {"tron": ("b", True), "log_level": ("s", "DEBUG")}, [])
    off = ("org.nvmexpress.staf.debug", {"tron": ("b", False), "log_level": ("s", "INFO")}, [])
    with trio.fail_after(5):
        tron.set(True)  # what stafd's reload does
        assert (await signals.receive()).body == on
        tron.set(True)  # no change, no signal
        assert await ctl(capsys, "troff") == (0, "tron = False\n", "")
        assert (await signals.receive()).body == off
        assert await ctl(capsys, "tron") == (0, "tron = True\n", "")
        assert (await signals.receive()).body == on
        tron.set(False)
        assert (await signals.receive()).body == off


async def test_stafctl_tron_emits_properties_changed(bus_address, nursery, capsys) -> None:
    """Issue 9 item 6: `stafctl tron` is seen by PropertiesChanged subscribers."""
    await serve(nursery, bus_address, snapshot(seed_dc()))
    receive = await properties_changed(nursery, bus_address)
    assert await ctl(capsys, "tron") == (0, "tron = True\n", "")
    with trio.fail_after(5):
        msg = await receive.receive()
    assert msg.body == (
        "org.nvmexpress.staf.debug",
        {"tron": ("b", True), "log_level": ("s", "DEBUG")},
        [],
    )
