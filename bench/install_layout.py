"""`make install` into a scratch directory, as the benchmarks time the daemons (issue 8).

What users run is the installed layout (launchers, the package and its dependencies in a
private lib dir, byte-compiled by the launchers' interpreter), not the development venv.
Both bench/startup.py (native) and bench/kernel_bench.py (the VM, which sees the host's tree)
install through here. Standard library only.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL_PYTHON = "/usr/bin/python3"  # scripts/install.py's default for the launchers


def _deps_key() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]


def install_into(dest: Path, python: str = INSTALL_PYTHON) -> Path:
    """scripts/install.py into ``dest``: with the dependencies once per pyproject.toml, the
    stas package refreshed every time (no stale modules from older trees); then byte-compiled
    by ``python``, as a distribution package is at install time. Returns the prefix; raises
    RuntimeError with install.py's last words when it fails."""
    prefix = dest / "usr"
    lib = prefix / "lib" / "nvme-stas"
    stamp = dest / "deps-key"
    full = not (stamp.exists() and stamp.read_text() == _deps_key() and (lib / "trio").is_dir())
    shutil.rmtree(dest if full else lib / "stas", ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "scripts" / "install.py"), "install", "--destdir", "",
           "--prefix", str(prefix), "--sysconfdir", str(dest / "etc"),
           "--python", python]  # fmt: skip
    if not full:
        cmd.append("--no-deps")
    print(f"  ... installing into {dest} ({'with dependencies' if full else 'stas only'})",
          file=sys.stderr, flush=True)  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"scripts/install.py failed: {res.stderr.strip()[-2000:]}")
    stamp.write_text(_deps_key())
    subprocess.run([python, "-m", "compileall", "-q", str(lib)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return prefix
