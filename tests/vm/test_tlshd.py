"""nvmet-harness/vm/tlshd.py and the runner's --tlshd: the pure parts (package list, config,
command line, job prelude) on the host; the daemon itself runs in
tests/kernel/test_tls_kernel.py."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

VM_DIR = Path(__file__).resolve().parents[2] / "nvmet-harness" / "vm"
if str(VM_DIR) not in sys.path:
    sys.path.insert(0, str(VM_DIR))

import tlshd  # noqa: E402

from tests.helpers.vm import load_runner  # noqa: E402

runner = load_runner()

DEPENDS = """ktls-utils
  Depends: libc6
  Depends: libgnutls30t64
libc6
  Depends: libgcc-s1
<libc-dev>
libgnutls30t64
  Depends: libc6
debconf
libgcc-s1
"""


def test_recursive_depends_are_the_unindented_real_packages() -> None:
    assert tlshd.parse_recursive_depends(DEPENDS) == [
        "ktls-utils", "libc6", "libgnutls30t64", "libgcc-s1",
    ]  # fmt: skip


def test_config_links_the_nvme_keyring() -> None:
    text = tlshd.config_text(loglevel=2)
    assert "[authenticate]\nkeyrings=.nvme\n" in text and "loglevel=2" in text


def test_tlshd_runs_through_its_own_loader_and_libraries(tmp_path: Path) -> None:
    argv = tlshd.tlshd_argv(tmp_path, Path("/run/x.conf"))
    assert argv[0] == str(tmp_path / tlshd.LOADER)
    assert argv[1] == "--library-path" and argv[2].startswith(str(tmp_path / tlshd.LIBDIR))
    assert argv[3:] == [str(tmp_path / tlshd.TLSHD), "-c", "/run/x.conf", "-s"]
    assert "not prepared" in (tlshd.missing_reason(tmp_path) or "")


def test_the_job_starts_tlshd_before_the_command() -> None:
    prelude = runner.tlshd_prelude(["/t/ld.so", "--library-path", "/t/lib", "/t/tlshd"])
    script = runner.render_job(["pytest", "-q"], "/work", {"A": "1"}, prelude)
    lines = script.splitlines()
    start = lines.index("/t/ld.so --library-path /t/lib /t/tlshd >/run/tlshd.log 2>&1 &")
    assert start < lines.index("export STAS_VM_TLSHD=1") < lines.index("exec pytest -q")
    assert runner.render_job(["true"], "/", {}).count("tlshd") == 0


def test_the_job_script_runs_tlshd_in_the_background(tmp_path: Path) -> None:
    """The prelude as sh runs it: tlshd (here a stand-in) is started, the command follows."""
    fake = tmp_path / "fake-tlshd"
    fake.write_text(f"#!/bin/sh\necho started > {shlex.quote(str(tmp_path / 'ran'))}\n")
    fake.chmod(0o755)
    log = tmp_path / "tlshd.log"
    script = runner.render_job(
        ["sh", "-c", "until [ -s ran ]; do sleep 0.01; done; cat ran; echo $STAS_VM_TLSHD"],
        str(tmp_path),
        {},
        runner.tlshd_prelude([str(fake)], str(log)),
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["started", "1"], out


@pytest.mark.skipif(os.geteuid() != 0, reason="preparing tlshd needs root")
def test_the_prepared_tlshd_answers_help() -> None:
    """On a prepared machine, trixie's tlshd runs here with trixie's glibc (not the host's)."""
    root = tlshd.root_dir()
    if reason := tlshd.missing_reason(root):
        pytest.skip(reason)
    argv = [*tlshd.tlshd_argv(root, Path("/nonexistent"))[:4], "-h"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert "usage: tlshd" in out.stdout + out.stderr
