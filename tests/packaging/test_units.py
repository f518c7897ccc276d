"""systemd units: `systemd-analyze verify` accepts them and the key directives are there."""

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "units"
PROGRAMS = ("/usr/sbin/stafd", "/usr/sbin/stacd", "/usr/bin/stasadm")


def unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(UNITS / name)
    return cp


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for prog in PROGRAMS:  # verify wants the programs to exist: point at stand-ins
        stand_in = bindir / Path(prog).name
        stand_in.write_text("#!/bin/sh\nexit 0\n")
        stand_in.chmod(0o755)
    for src in UNITS.iterdir():
        text = src.read_text()
        for prog in PROGRAMS:
            text = text.replace(prog, str(bindir / Path(prog).name))
        (tmp_path / src.name).write_text(text)
    names = ["stafd.service", "stacd.service", "stas-config.target", "stas-config@hostnqn.service"]
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(f"./{n}" for n in names)],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


@pytest.mark.parametrize(
    "name,bus", [("stafd", "org.nvmexpress.staf"), ("stacd", "org.nvmexpress.stac")]
)
def test_daemon_units_notify_watchdog_restart(name: str, bus: str) -> None:
    svc = unit(f"{name}.service")["Service"]
    assert svc["Type"] == "notify" and svc["BusName"] == bus
    assert svc["Restart"] == "on-failure" and svc["WatchdogSec"]
    assert svc["ExecStart"] == f"/usr/sbin/{name} --syslog"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["RuntimeDirectory"] == name and svc["RuntimeDirectoryPreserve"] == "yes"
    for hardening in ("ProtectHome", "ProtectKernelModules", "ProtectKernelLogs",
                      "ProtectControlGroups", "ProtectProc", "RestrictRealtime",
                      "LockPersonality", "MemoryDenyWriteExecute"):  # fmt: skip
        assert hardening in svc, f"{hardening} missing (upstream has it)"


def test_stacd_is_ordered_after_stafd() -> None:
    u = unit("stacd.service")["Unit"]
    assert "stafd.service" in u["After"].split()


def test_stas_config_creates_missing_host_files() -> None:
    t = unit("stas-config.target")["Unit"]
    assert set(t["Wants"].split()) == {"stas-config@hostnqn.service", "stas-config@hostid.service"}
    s = unit("stas-config@.service")
    assert s["Unit"]["ConditionFileNotEmpty"] == "|!/etc/nvme/%i"
    assert s["Service"]["ExecStart"] == "/usr/bin/stasadm %i -f /etc/nvme/%i"
