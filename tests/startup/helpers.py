"""A fresh interpreter per check: what a daemon imports must not depend on what the test
process (or another test) has loaded already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# what stas.main does before the daemon's own modules load (setup_logging defers these)
PRELUDE = """
import io, json, sys
from stas.logsetup import setup_logging
setup_logging("stas", syslog=False, tron=False, stream=io.StringIO())
"""


def run_fresh(code: str, cwd: Path) -> Any:
    """Run ``PRELUDE + code`` in a new interpreter; the JSON its last stdout line prints."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={cwd}/no")
    env.pop("NOTIFY_SOCKET", None)
    out = subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True, text=True,
                         env=env, cwd=cwd, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])
