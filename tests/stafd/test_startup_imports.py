"""Start-up cost (issue 8): what the daemons import before they run, and when they first log.

Each check runs a fresh interpreter, so the answer does not depend on what other tests loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Loaded on first use only: the userspace NVMe/TCP host (a kernel-backend stafd and stacd never
# need it), mDNS (only when zeroconf is enabled), the syslog handler (only with --syslog).
NOT_AT_START = [
    "stas.nvme.commands",
    "stas.nvme.host_ops",
    "stas.nvme.identify",
    "stas.nvme.session",
    "stas.nvme.pdu",
    "zeroconf",
    "stas.actors.mdns",
    "logging.handlers",
]


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path}/no")
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)  # fmt: skip


@pytest.mark.parametrize("daemon", ["stafd", "stacd"])
def test_daemon_imports_leave_first_use_modules_out(daemon: str, tmp_path: Path) -> None:
    code = (
        f"import sys, json; from stas.main import {daemon}_main; import stas.logsetup, "
        f"stas.{daemon}; print(json.dumps(sorted(sys.modules)))"
    )
    out = run_python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert f"stas.{daemon}" in loaded  # the check itself works
    assert sorted(loaded & set(NOT_AT_START)) == []
    if daemon == "stacd":  # stafd's log page codec (its state file, its DCs' pages)
        assert "stas.nvme.logpage" not in loaded
    other = "stacd" if daemon == "stafd" else "stafd"
    assert f"stas.messages_{daemon}" in loaded
    assert f"stas.messages_{other}" not in loaded  # the other daemon's message classes


def test_per_daemon_messages_are_importable_from_stas_messages() -> None:
    import stas.messages as m
    from stas.messages import DcWanted, IocStatus, Tid

    tid = Tid("tcp", "::1", "8009", "nqn.x")
    assert IocStatus(tid, "configured").tid == tid
    assert DcWanted(tid, "configured") == m.DcWanted(tid, "configured")
    assert {"DcUpdate", "KernelResync"} <= set(dir(m))
    with pytest.raises(AttributeError, match="NoSuchMessage"):
        _ = m.NoSuchMessage


def test_stacd_does_not_load_the_stafd_only_codec_through_messages(tmp_path: Path) -> None:
    out = run_python("import sys; import stas.messages; print('stas.nvme.logpage' in sys.modules)",
                     tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


SPY = """
import logging, sys
first = []
orig = logging.Logger.callHandlers
def spy(self, record):
    if not first:
        first.append(({module!r} in sys.modules, record.getMessage()))
    orig(self, record)
logging.Logger.callHandlers = spy
from stas.main import {daemon}_main
rc = {daemon}_main({argv!r})
print("FIRST", first[0][0], first[0][1])
print("RC", rc)
"""


@pytest.mark.parametrize("daemon", ["stafd", "stacd"])
def test_first_log_line_comes_before_the_daemon_modules_load(daemon: str, tmp_path: Path) -> None:
    bad = tmp_path / f"{daemon}.conf"
    bad.write_bytes(b"\x00\xff garbage")  # refused after the imports: exit 1
    argv = ["-f", str(bad), "--sys-conf", str(tmp_path / "sys.conf")]
    argv += ["--state-dir", str(tmp_path)] if daemon == "stafd" else ["--kernel", "fake"]
    out = run_python(SPY.format(module=f"stas.{daemon}", daemon=daemon, argv=argv), tmp_path)
    assert out.returncode == 0, out.stderr
    first = next(ln for ln in out.stdout.splitlines() if ln.startswith("FIRST"))
    assert first.startswith(f"FIRST False {daemon} ")
    assert "starting (pid " in first
    assert "RC 1" in out.stdout
    # the line reaches the operator too (stdout without --syslog)
    assert f"{daemon}: INFO {daemon} " in out.stdout and "starting" in out.stdout


def test_stacd_dry_run_prints_the_plan_only(tmp_path: Path) -> None:
    conf = tmp_path / "stacd.conf"
    conf.write_text("[Controllers]\n")
    argv = ["-f", str(conf), "--sys-conf", str(tmp_path / "sys.conf"), "--kernel", "fake",
            "--dry-run"]  # fmt: skip
    out = run_python(f"from stas.main import stacd_main; raise SystemExit(stacd_main({argv!r}))",
                     tmp_path)  # fmt: skip
    assert "starting" not in out.stdout


@pytest.mark.parametrize("daemon", ["stafd", "stacd"])
def test_startup_objects_are_frozen_before_the_daemon_runs(daemon: str, tmp_path: Path) -> None:
    run = "stas.stafd.run_stafd" if daemon == "stafd" else "stas.stacd.run_stacd_args"
    code = (
        f"import gc, stas.{daemon}, stas.main\n"
        f"stas.{daemon}.{run.rsplit('.', 1)[1]} = lambda *a: print('FROZEN', gc.get_freeze_count())"
        f" or 0\n"
        f"stas.main.{daemon}_main(['--sys-conf', 'x'])\n"
    )
    out = run_python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    frozen = int(out.stdout.split("FROZEN", 1)[1].split()[0])
    assert frozen > 10_000  # the modules' objects, not a handful
