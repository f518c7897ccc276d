"""stafctl / stacctl / stasadm as an admin meets them when things go wrong: every bad input or
broken environment ends in one line on stderr and a non-zero exit, never a traceback.

The tools run as processes where the process itself is the point (a closed pipe, Ctrl-C, a
full disk, argv bytes that are not UTF-8, another uid), in-process otherwise; the bus is a real
private dbus-daemon (with the shipped policy files where the policy is what is tested).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from jeepney import HeaderFields, MessageType, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, open_dbus_connection

from stas.ctl import bus, stacctl, stafctl, stasadm
from tests.helpers import fixtures
from tests.helpers.dbus_actors import HOSTNQN, ctl, seed_dc, serve, snapshot
from tests.helpers.fixtures import need_dbus_daemon

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
NOBODY = 65534
TIMEOUT = 60  # seconds; only reached when something is wrong


def tool(name: str, *args: str | bytes, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """``python -m stas.ctl.<name> args`` to completion (bytes: argv need not be UTF-8)."""
    argv: list[str | bytes] = [sys.executable, "-m", f"stas.ctl.{name}", *args]
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        argv, stderr=subprocess.PIPE, cwd=ROOT, timeout=TIMEOUT, check=False, **kw
    )


def err_lines(proc: subprocess.CompletedProcess[bytes]) -> list[str]:
    return proc.stderr.decode().splitlines()


@contextmanager
def mute_daemon(address: str, name: str = "org.nvmexpress.staf") -> Iterator[DBusConnection]:
    """A bus connection that owns the daemon's name and never answers (a stuck stafd)."""
    conn = open_dbus_connection(address)
    try:
        conn.send_and_get_reply(new_method_call(message_bus, "RequestName", "su", (name, 4)))
        yield conn
    finally:
        conn.close()


def first_call(conn: DBusConnection) -> str:
    """The member of the first method call that reaches the mute daemon."""
    while True:
        msg = conn.receive(timeout=TIMEOUT)
        if msg.header.message_type is MessageType.method_call:
            return str(msg.header.fields[HeaderFields.member])


# --- output: pipes, full disks, closed stdout ------------------------------------------------


async def test_reader_gone_is_quiet(bus_address: str, nursery: trio.Nursery) -> None:
    """``stafctl adlp | head``: head left; no BrokenPipeError traceback, exit 141 (SIGPIPE)."""
    await serve(nursery, bus_address, snapshot(seed_dc()))
    for name, args in (("stafctl", ("adlp",)), ("stafctl", ("-v",)), ("stasadm", ("-v",))):
        read, write = os.pipe()
        os.close(read)
        try:
            run = functools.partial(tool, name, *args, stdout=write)
            proc = await trio.to_thread.run_sync(run)
        finally:
            os.close(write)
        assert (proc.returncode, proc.stderr) == (141, b""), (name, args)


async def test_output_the_terminal_cannot_encode(bus_address: str, nursery: trio.Nursery) -> None:
    """A non-ASCII symbolic name shown to an ASCII-only stdout: escaped, not a traceback."""
    await serve(nursery, bus_address, snapshot(seed_dc()), info=lambda: {"symname": "caf\u00e9"})
    env = dict(os.environ, PYTHONIOENCODING="ascii")
    proc = await trio.to_thread.run_sync(functools.partial(tool, "stafctl", "status", env=env))
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert b"'symname': 'caf\\xe9'" in proc.stdout


def test_full_disk_is_one_line() -> None:
    with open("/dev/full", "wb") as full:
        proc = tool("stafctl", "-v", stdout=full)
    assert proc.returncode == 1
    assert err_lines(proc) == ["stafctl: cannot write the output: No space left on device"]


def test_closed_stdout_is_an_error_not_silence() -> None:
    proc = tool("stacctl", "-v", stdout=None, preexec_fn=lambda: os.close(1))
    assert (proc.returncode, err_lines(proc)) == (1, ["stacctl: standard output is closed"])


# --- Ctrl-C and a daemon that does not answer ------------------------------------------------


def test_ctrl_c_during_a_call(bus_address: str) -> None:
    with mute_daemon(bus_address) as mute:
        argv = [sys.executable, "-m", "stas.ctl.stafctl", "ls"]
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert first_call(mute) == "list_controllers"  # stafctl now waits for the answer
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            proc.kill()
    assert (proc.returncode, out, err) == (130, b"", b"stafctl: interrupted\n")


async def test_stuck_daemon_is_named_as_stuck(
    bus_address: str, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not upstream's "Is stafd running?": it is running, it just did not answer."""
    monkeypatch.setattr(bus, "CALL_TIMEOUT", 0.2)
    with mute_daemon(bus_address):
        rc, out, err = await ctl(capsys, "ls")
    assert (rc, out) == (1, "")
    assert err.startswith("Unable to communicate with stafd over D-Bus: stafd is running but")
    assert "list_controllers" in err and "journalctl -u stafd" in err and err.count("\n") == 1


async def test_json_tron_is_json(bus_address: str, nursery: trio.Nursery, capsys: Any) -> None:
    """``--json`` promises JSON: tron/troff printed upstream's ``tron = True`` text."""
    tron = await serve(nursery, bus_address, snapshot(seed_dc()))
    assert await ctl(capsys, "--json", "tron") == (0, '{"tron": true}\n', "")
    assert await ctl(capsys, "troff", "--json") == (0, '{"tron": false}\n', "")
    assert tron.value is False
    assert await ctl(capsys, "tron") == (0, "tron = True\n", "")  # upstream's text unchanged


def test_daemon_gone_mid_call_is_not_called_stuck(bus_address: str) -> None:
    """stafd restarting: it took the call and left; say so, not "is it stuck?"."""
    with mute_daemon(bus_address) as mute:
        argv = [sys.executable, "-m", "stas.ctl.stafctl", "ls"]
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert first_call(mute) == "list_controllers"
            mute.close()  # as a stafd stopping for its restart does
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            proc.kill()
    assert (proc.returncode, out) == (1, b"")
    assert err == (
        b"Unable to communicate with stafd over D-Bus: stafd exited before answering"
        b" (stopped or restarting?); try again\n"
    )


# --- the bus: absent, unusable ---------------------------------------------------------------


async def test_no_bus_names_the_bus_not_the_daemon(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    rc, out, err = await ctl(capsys, "ls")
    assert (rc, out) == (1, "")
    assert err == (
        f"Unable to communicate with stafd over D-Bus: no system bus at unix:path={tmp_path}"
        "/no-bus (from DBUS_SYSTEM_BUS_ADDRESS): No such file or directory. Is dbus running?\n"
    )
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "garbage")
    rc, out, err = await ctl(capsys, "ls")
    assert (rc, out) == (1, "")
    assert err == (
        "Unable to communicate with stafd over D-Bus: 'garbage' is not a usable D-Bus address"
        " (DBUS_SYSTEM_BUS_ADDRESS)\n"
    )


@pytest.mark.parametrize("tool_main", [stafctl.main, stacctl.main])
def test_a_bus_that_never_answers_hello_is_named_within_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, tool_main: Any
) -> None:
    """The bus authenticates, then says nothing: the tools hung forever in jeepney's Hello.
    Now one line after the tools' timeout (here 0.2 s), exit 1 as for no bus at all."""
    from tests.dbus.scripted_bus import SILENT, fake_bus, within_guard

    address = f"unix:path={tmp_path}/bus"
    fake_bus(f"{tmp_path}/bus", lambda msg: SILENT)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
    monkeypatch.setattr(bus, "CALL_TIMEOUT", 0.2)
    assert within_guard(tool_main, ["ls"]) == 1
    out, err = capsys.readouterr()
    daemon = "stafd" if tool_main is stafctl.main else "stacd"
    assert (out, err) == (
        "",
        f"Unable to communicate with {daemon} over D-Bus: the system bus at {address} did not"
        " answer within 0.2 s (from DBUS_SYSTEM_BUS_ADDRESS). Is dbus-daemon stuck?"
        " (systemctl status dbus)\n",
    )


# --- arguments: malformed TIDs, bytes that are not UTF-8, very long values -------------------

BAD_DLP = [
    (["-s", "abc"], "argument -s/--trsvcid: 'abc' is not a port number 1..65535"),
    (["-s", "0"], "argument -s/--trsvcid: '0' is not a port number 1..65535"),
    (["-s", "65536"], "argument -s/--trsvcid: '65536' is not a port number 1..65535"),
    (["-s", "\uff18\uff10\uff10\uff19"], "'\uff18\uff10\uff10\uff19' is not a port number"),
    (["-a", ""], "argument -a/--traddr: transport address must not be empty"),
    (["-a", "::1\n"], "argument -a/--traddr: '::1\\n': a transport address has no spaces"),
    (["-a", "a" * 5000], "argument -a/--traddr: 'aaaaaaaaaaaaaaaaaaaaaaaa'... is 5000 bytes"),
    (["-f", "eth0 "], "argument -f/--host-iface: 'eth0 ': a host interface name has no spaces"),
    (["-f", "x" * 16], "is 16 bytes long; a host interface name has at most 15"),
    (["-q", "n" * 224], "is 224 bytes long; a host NQN has at most 223"),
    (["-n", ""], "argument -n/--nqn: subsystem NQN must not be empty"),
]


@pytest.mark.parametrize(("args", "says"), BAD_DLP)
def test_malformed_dlp_tid_is_a_usage_error(
    args: list[str], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Rejected before any D-Bus call (no bus here): exit 2 and a line naming the value."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    argv = {"-a": "::1", "-s": "8009"}
    argv.update(zip(args[::2], args[1::2], strict=True))
    with pytest.raises(SystemExit) as exited:
        stafctl.main(["dlp", *[w for kv in argv.items() for w in kv]])
    assert exited.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("stafctl dlp: error: ") and says in last


def test_fc_and_an_empty_port_are_not_port_errors(tmp_path, monkeypatch, capsys) -> None:
    """'' is "the transport's default" (upstream); fc's service id is not a port number."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    for args in (["-s", ""], ["-t", "fc", "-a", "nn-0x1:pn-0x2", "-s", "none"]):
        argv = ["dlp", "-a", "::1", *args]
        assert stafctl.main(argv) == 1  # reached D-Bus (absent here): the arguments were fine
        assert "Unable to communicate with stafd" in capsys.readouterr().err


def test_argv_that_is_not_utf8() -> None:
    proc = tool("stafctl", "dlp", "-a", b"\xff\xfe", "-s", "8009")
    assert proc.returncode == 2
    assert (
        err_lines(proc)[-1]
        == "stafctl dlp: error: argument -a/--traddr: '\\xff\\xfe' is not UTF-8 text"
    )
    proc = tool("stasadm", "-c", "/nonexistent/sys.conf", "set-symname", b"\xff")
    assert proc.returncode == 1 and len(err_lines(proc)) == 1
    assert err_lines(proc)[0].startswith("stasadm: symname: value must be")


# --- permissions: a non-root user on a bus with the shipped policy ---------------------------


def need_nobody() -> None:
    need_dbus_daemon()
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run the tools as nobody")


system_like_bus = fixtures.system_like_bus  # the shipped policy enforced (a fixture)


@pytest.fixture
def policy_bus(system_like_bus: str) -> str:
    """The shipped policy enforced, and a way to be nobody."""
    need_nobody()
    return system_like_bus


def as_nobody(address: str, name: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The tool run by the user nobody (setpriv: the interpreter may live where only an exec
    through it works, e.g. a pyenv under /root)."""
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address, PYTHONDONTWRITEBYTECODE="1")
    ids = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    argv = ["setpriv", *ids, sys.executable, "-m", f"stas.ctl.{name}", *args]
    return subprocess.run(argv, capture_output=True, env=env, cwd=ROOT, timeout=TIMEOUT)


async def test_non_root_is_told_what_needs_root(policy_bus: str, nursery: trio.Nursery) -> None:
    await serve(nursery, policy_bus, snapshot(seed_dc()))
    for args, call in (
        (("tron",), "changing a property"),
        (("status",), "org.nvmexpress.staf.debug.process_info"),
    ):
        run = functools.partial(as_nobody, policy_bus, "stafctl", *args)
        proc = await trio.to_thread.run_sync(run)
        what = f"stafctl {args[0]}"
        assert (proc.returncode, proc.stdout) == (1, b"")
        assert err_lines(proc) == [
            f"{what}: permission denied: the D-Bus policy allows {call} for root only;"
            f" run it as root (sudo {what})"
        ]
    proc = await trio.to_thread.run_sync(lambda: as_nobody(policy_bus, "stafctl", "ls"))
    assert proc.returncode == 0 and b"'subsysnqn'" in proc.stdout


async def test_non_root_dlp_of_an_unknown_dc(policy_bus: str, nursery: trio.Nursery) -> None:
    """The note about an unmatched TID used a root-only call and failed the whole command."""
    await serve(nursery, policy_bus, snapshot(seed_dc()))
    known = ("dlp", "-a", "::1", "-s", "8009", "-q", HOSTNQN)
    proc = await trio.to_thread.run_sync(lambda: as_nobody(policy_bus, "stafctl", *known))
    assert (proc.returncode, proc.stderr) == (0, b"") and b"klingons" in proc.stdout
    unknown = ("dlp", "-a", "::2", "-s", "8009", "-q", HOSTNQN)
    proc = await trio.to_thread.run_sync(lambda: as_nobody(policy_bus, "stafctl", *unknown))
    assert (proc.returncode, proc.stdout) == (0, b"[]\n")
    (line,) = err_lines(proc)
    assert line.startswith("stafctl: no discovery controller matches transport='tcp', traddr='::2'")


# --- stacctl plan ----------------------------------------------------------------------------


def test_plan_with_an_unreadable_config_is_one_line(tmp_path: Path, capsys: Any) -> None:
    rc = stacctl.main(["plan", "-f", str(tmp_path), "--sys-conf", str(tmp_path / "sys.conf")])
    assert rc == 1
    assert capsys.readouterr().err == (
        f"stacctl plan: {tmp_path}: cannot read: a directory, not a regular file\n"
    )


def test_plan_refuses_json_instead_of_printing_text(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exited:
        stacctl.main(["--json", "plan"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == "stacctl: error: plan has no --json output\n"


# --- stasadm ---------------------------------------------------------------------------------


def test_symname_the_daemons_would_refuse_is_refused(tmp_path: Path, capsys: Any) -> None:
    conf = tmp_path / "sys.conf"
    assert stasadm.main(["-c", str(conf), "set-symname", "x" * 257]) == 1
    assert capsys.readouterr().err == (
        f"stasadm: symname: value {'x' * 64!r}...: longer than 256 bytes\n"
    )
    assert not conf.exists()
    assert stasadm.main(["-c", str(conf), "set-symname", "x" * 256]) == 0


def test_file_path_sys_conf_cannot_hold_writes_nothing(tmp_path: Path) -> None:
    """-f with a path sys.conf cannot refer to: refused up front, no orphan value file."""
    conf = tmp_path / "sys.conf"
    proc = tool("stasadm", "-c", str(conf), "hostid", "-f", os.fsencode(tmp_path) + b"/\xfe")
    assert proc.returncode == 1
    assert err_lines(proc) == [
        f"stasadm: -f '{tmp_path}/\\xfe': sys.conf can only refer to a file whose path is"
        " printable UTF-8 text without ' #' or ' ;'; choose another path"
    ]
    assert os.listdir(tmp_path) == []


def test_non_root_stasadm_is_told_to_be_root(tmp_path: Path) -> None:
    need_nobody()
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    argv += [sys.executable, "-m", "stas.ctl.stasadm", "-c", f"{tmp_path}/sys.conf", "hostid"]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(argv, capture_output=True, env=env, cwd=ROOT, timeout=TIMEOUT)
    (line,) = err_lines(proc)  # "cannot read" or "cannot write", as far as nobody gets
    assert proc.returncode == 1 and line.startswith(f"stasadm: {tmp_path}/sys.conf: cannot ")
    assert line.endswith(": Permission denied; run it as root (sudo stasadm hostid ...)")
