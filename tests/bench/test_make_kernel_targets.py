"""`make bench-kernel` / `make test-kernel`: SKIP only when the VM cannot run here; a usage
error from runner.py (rc 2, e.g. an unknown kernel) fails the target."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAMP = ".venv/.bootstrap-stamp"

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or not (ROOT / STAMP).exists(), reason="no make or no .venv"
)


def fake_python(tmp_path: Path, check_rc: int) -> Path:
    """Stands in for $(PY): every runner.py --check answers ``check_rc`` (2 with argparse's
    usage message when the kernel is 'bogus'); it logs its calls."""
    script = tmp_path / "python"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {tmp_path}/calls\n'
        'case "$*" in *bogus*)\n'
        "  echo \"runner.py: error: invalid choice: 'bogus'\" >&2; exit 2;;\n"
        "esac\n"
        f'echo "no VM on this machine"; exit {check_rc}\n'
    )
    script.chmod(0o755)
    return script


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-o", STAMP, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_bench_kernel_with_an_unknown_kernel_fails_instead_of_skipping() -> None:
    res = make("bench-kernel", "BENCH_KERNEL=bogus")  # the real runner.py: argparse, rc 2
    assert res.returncode != 0
    assert "SKIP" not in res.stdout
    assert "invalid choice: 'bogus'" in res.stderr
    assert "runner.py rejected BENCH_KERNEL=bogus" in res.stderr


def test_bench_kernel_skips_when_the_vm_cannot_run(tmp_path) -> None:
    res = make("bench-kernel", f"PY={fake_python(tmp_path, 1)}")
    assert res.returncode == 0
    assert "SKIP: make bench-kernel: no VM on this machine" in res.stdout
    assert "kernel_bench.py" not in (tmp_path / "calls").read_text()


def test_test_kernel_with_an_unknown_kernel_fails_instead_of_skipping(tmp_path) -> None:
    res = make("test-kernel", "KERNEL=bogus 6.1", f"PY={fake_python(tmp_path, 1)}")
    assert res.returncode != 0
    assert "runner.py rejected KERNEL=bogus" in res.stderr
    assert "SKIP: make test-kernel KERNEL=6.1: no VM on this machine" in res.stdout
    assert "SKIP: make test-kernel KERNEL=bogus" not in res.stdout


def test_test_kernel_skips_every_kernel_the_machine_cannot_run(tmp_path) -> None:
    res = make("test-kernel", "KERNEL=6.1 6.12", f"PY={fake_python(tmp_path, 1)}")
    assert res.returncode == 0
    assert res.stdout.count("SKIP: make test-kernel KERNEL=") == 2
    assert "pytest" not in (tmp_path / "calls").read_text()
