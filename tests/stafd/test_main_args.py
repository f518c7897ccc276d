"""stafd's command line, start-up refusals and logging: what a user sees before any actor runs."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import stas.stafd
from stas import __version__
from stas.config import SysConfig, load_service_config
from stas.logsetup import TronControl, setup_logging
from stas.main import stafd_main
from stas.stafd import FatalError, StafdOptions, choose_backend, host_identity, run_stafd

ROOT = Path(__file__).resolve().parents[2]
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"


def run_stafd_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stas.main", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
        env=env,
    )


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """setup_logging replaces the root handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    zc_level = logging.getLogger("zeroconf").level
    yield root
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("zeroconf").setLevel(zc_level)


# --- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["-v", "--version"])
def test_version(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert stafd_main([flag]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first == f"nvme-stas {__version__}"
    assert second.startswith("libnvme ")


def test_unknown_option_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        stafd_main(["--bogus"])
    assert exc.value.code == 2
    assert "--bogus" in capsys.readouterr().err


def test_options_reach_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[StafdOptions, TronControl]] = []
    monkeypatch.setattr(stas.stafd, "run_stafd", lambda opts, tron: seen.append((opts, tron)) or 7)
    monkeypatch.setattr(
        "stas.logsetup.setup_logging",
        lambda prog, *, syslog, tron: TronControl(logging.getLogger(f"test.{prog}.{syslog}")),
    )
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/x:/run/y")
    argv = [
        "-f",
        "a.conf",
        "--sys-conf",
        "s.conf",
        "--tron",
        "--mdns-interfaces",
        "127.0.0.1, ::1,",
    ]
    assert stafd_main(argv) == 7
    opts, tron = seen[-1]
    assert opts == StafdOptions(
        conf_file="a.conf",
        sys_conf="s.conf",
        state_dir="/run/x",
        tron=True,
        mdns_interfaces=("127.0.0.1", "::1"),
    )
    assert tron._logger.name == "test.stafd.False"

    monkeypatch.delenv("RUNTIME_DIRECTORY")
    assert stafd_main(["-s", "--state-dir", "/tmp/st"]) == 7
    opts, tron = seen[-1]
    assert (opts.conf_file, opts.sys_conf) == ("/etc/stas/stafd.conf", "/etc/stas/sys.conf")
    assert (opts.state_dir, opts.tron, opts.mdns_interfaces) == ("/tmp/st", False, ())
    assert tron._logger.name == "test.stafd.True"
    assert stafd_main([]) == 7
    assert seen[-1][0].state_dir == "/run/stafd"


# --- start-up refusals, as processes: one line, exit 1, never a traceback ------------------------


def test_unreadable_config_file_is_named_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "stafd.conf"
    bad.write_bytes(b"\x00\xff garbage")
    out = run_stafd_process("-f", str(bad), "--state-dir", str(tmp_path))
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    assert f"ERROR {bad}: " in out.stdout

    out = run_stafd_process("-f", str(tmp_path), "--state-dir", str(tmp_path))  # a directory
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert f"ERROR {tmp_path}: cannot read" in out.stdout


def test_unknown_option_as_a_process() -> None:
    out = run_stafd_process("--bogus")
    assert out.returncode == 2 and "unrecognized arguments: --bogus" in out.stderr


def test_explicit_kernel_backend_without_fabrics_device(tmp_path: Path) -> None:
    if Path("/dev/nvme-fabrics").exists():
        pytest.skip("this machine has /dev/nvme-fabrics")
    conf = tmp_path / "stafd.conf"
    conf.write_text("[Global]\ndc-backend=kernel\n")
    out = run_stafd_process("-f", str(conf), "--state-dir", str(tmp_path))
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert "dc-backend=kernel: /dev/nvme-fabrics is missing or not writable" in out.stdout


def test_no_bus_is_one_line(tmp_path: Path) -> None:
    """A missing stafd.conf means defaults; a bus that is not there is a clear exit 1."""
    env = {
        "PATH": "/usr/bin:/bin",
        "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus",
    }
    out = run_stafd_process(
        "-f", str(tmp_path / "absent.conf"), "--state-dir", str(tmp_path), env=env
    )
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert f"{tmp_path}/absent.conf: not found, using defaults" in out.stdout
    assert f"D-Bus: cannot connect to the D-Bus bus at unix:path={tmp_path}/no-bus" in out.stdout


def test_run_stafd_config_error_in_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "stafd.conf"
    bad.write_bytes(b"\x00\x01\x02")
    opts = StafdOptions(conf_file=str(bad), sys_conf=str(tmp_path / "sys"), state_dir=str(tmp_path))
    assert run_stafd(opts, TronControl(logging.getLogger("test.tron"))) == 1
    assert any(r.levelno == logging.ERROR and str(bad) in r.getMessage() for r in caplog.records)


# --- backend choice and host identity ----------------------------------------------------------


def _config(tmp_path: Path, backend: str):
    conf = tmp_path / "stafd.conf"
    conf.write_text(f"[Global]\ndc-backend={backend}\n")
    config, warnings = load_service_config(conf, "stafd")
    assert warnings == []
    return config


def test_backend_choice_without_fabrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stas.stafd.os, "access", lambda path, mode: False)
    ident = host_identity(SysConfig(hostnqn=HOSTNQN))
    for backend in ("auto", "userspace"):
        name, chosen, hub, kernel = choose_backend(_config(tmp_path, backend), ident)
        assert name == "userspace" and hub is None and kernel is None
        assert chosen.host == ident
    with pytest.raises(FatalError, match="dc-backend=kernel: /dev/nvme-fabrics"):
        choose_backend(_config(tmp_path, "kernel"), ident)


def test_missing_host_nqn_is_derived_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    ident = host_identity(SysConfig())
    assert ident.hostnqn.startswith("nqn.")
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "no host NQN configured" in warning.getMessage()
    assert ident.hostnqn in warning.getMessage()


def test_host_identity_from_sys_conf(caplog: pytest.LogCaptureFixture) -> None:
    uid = "0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
    ident = host_identity(SysConfig(hostnqn=HOSTNQN, hostid=uid, symname="lab-host"))
    assert (ident.hostnqn, ident.hostid.hex(), ident.symname) == (
        HOSTNQN,
        uid.replace("-", ""),
        "lab-host",
    )
    assert not caplog.records
    ident = host_identity(SysConfig(hostnqn=HOSTNQN, hostid="not-a-uuid"))
    assert len(ident.hostid) == 16
    assert [r.getMessage() for r in caplog.records] == [
        "host ID 'not-a-uuid' is not a UUID; using a derived one"
    ]


# --- logging -----------------------------------------------------------------------------------


def test_terminal_lines_and_tron_switch(
    root_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    tron = setup_logging("stafd", syslog=False, tron=False, stream=out)
    log = logging.getLogger("stafd")
    log.debug("hidden")
    log.info("shown")
    assert (tron.get(), tron.level_name()) == (False, "INFO")
    tron.set(True)
    log.debug("now visible")
    assert (tron.get(), tron.level_name()) == (True, "DEBUG")
    lines = out.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "stafd: INFO shown",
        "stafd: DEBUG now visible",
    ]
    assert len(root_logging.handlers) == 1  # a second setup replaces, never duplicates
    setup_logging("stafd", syslog=False, tron=True, stream=out)
    assert len(root_logging.handlers) == 1 and root_logging.level == logging.DEBUG


def test_journal_lines_carry_priorities(
    root_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    out = io.StringIO()
    setup_logging("stafd", syslog=True, tron=False, stream=out)
    log = logging.getLogger("stafd")
    log.info("ready")
    log.warning("no host NQN")
    log.error("two\nlines")
    assert out.getvalue().splitlines() == ["<6>ready", "<4>no host NQN", "<3>two", "<3>lines"]
