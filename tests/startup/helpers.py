"""A fresh interpreter per check: what a daemon imports must not depend on what the test
process (or another test) has loaded already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# as the installed launchers run (`python3 -S`, every dependency on the path): no `site`, whose
# editable-install finder would import pathlib, urllib.parse... before the daemon's code runs
PATH = os.pathsep.join((str(ROOT), sysconfig.get_paths()["purelib"]))

# what stas.main does before the daemon's own modules load: the deferred imports' stand-ins
# first (before logging's own imports), then logging
PRELUDE = """
import io, json, sys
import stas.main
stas.main._defer_imports()
from stas.logsetup import setup_logging
setup_logging("stas", syslog=False, tron=False, stream=io.StringIO())
"""


def run_fresh(code: str, cwd: Path | None = None, *, prelude: str = PRELUDE) -> Any:
    """Run ``prelude + code`` in a new interpreter started as the launchers start it (in
    ``cwd``, with no system bus reachable); the JSON its last stdout line prints."""
    env = dict(os.environ, PYTHONPATH=PATH, DBUS_SYSTEM_BUS_ADDRESS="unix:path=/nonexistent")
    env.pop("NOTIFY_SOCKET", None)
    out = subprocess.run([sys.executable, "-S", "-c", prelude + code], capture_output=True,
                         text=True, env=env, cwd=cwd, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])
