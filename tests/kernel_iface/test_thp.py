"""Transparent huge pages off in the daemons (stas.kernel.thp; issue 8's RSS bound).

In the VM (THP ``always``) 14 of stacd's 26.9 MB were 2 MB pages mostly untouched; the
daemons now turn THP off for their process before their modules load. Checked here as the
kernel reports it (/proc/PID/status ``THP_enabled``) and by what one touched byte costs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stas.kernel.thp import PR_SET_THP_DISABLE, disable_thp, thp_disabled
from tests.helpers import fixtures
from tests.helpers.e2e import ROOT, World

bus_address, world = fixtures.bus_address, fixtures.world  # fixtures
THP_POLICY = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_enabled(pid: int) -> str:
    """``THP_enabled`` of /proc/PID/status: '1' huge pages allowed, '0' turned off."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("THP_enabled:"):
            return line.split()[1]
    pytest.skip("this kernel's /proc/PID/status has no THP_enabled (before 5.0)")


# One byte touched in a 2 MB-aligned range of a fresh mapping that asks for huge pages
# (MADV_HUGEPAGE: the "madvise" policy then behaves as "always" does for every mapping).
TOUCH = textwrap.dedent(
    """
    import ctypes, mmap, sys
    if sys.argv[1] == "off":
        from stas.kernel.thp import disable_thp
        assert disable_thp()
    size = 4 << 20
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_HUGEPAGE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    m[(-addr) % (2 << 20)] = 1
    want = f"{addr:x}-{addr + size:x} "
    lines = open("/proc/self/smaps").read().splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith(want))
    fields = {}
    for ln in lines[at + 1:]:
        parts = ln.split()
        if len(parts) != 3 or parts[2] != "kB":
            break
        fields[parts[0]] = int(parts[1])
    print(fields["Rss:"], fields["AnonHugePages:"])
    """
)


def touched(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", TOUCH, mode], capture_output=True, text=True, cwd=ROOT, check=True
    )
    rss, huge = out.stdout.split()
    return int(rss), int(huge)


@pytest.mark.skipif(not THP_POLICY.exists(), reason="this kernel has no transparent huge pages")
def test_one_touched_byte_costs_a_page_not_2_mb() -> None:
    rss, huge = touched("as is")
    if huge == 0:
        pytest.skip(f"the kernel gave no huge page even when asked ({THP_POLICY.read_text()!r})")
    assert (rss, huge) == (2048, 2048)  # the control: THP on, one byte resident as 2 MB
    assert touched("off") == (4, 0)


def test_disable_thp_says_whether_the_kernel_agreed() -> None:
    class Libc:
        def __init__(self, answer: int) -> None:
            self.answer, self.calls = answer, []

        def prctl(self, *args: int) -> int:
            self.calls.append(args)
            return self.answer

    ok, refused = Libc(0), Libc(-1)
    assert disable_thp(ok) and ok.calls == [(PR_SET_THP_DISABLE, 1, 0, 0, 0)]
    assert not disable_thp(refused)
    assert thp_disabled(Libc(1)) is True and thp_disabled(Libc(0)) is False
    assert thp_disabled(Libc(-1)) is None
    assert not disable_thp(object())  # a libc without prctl: the daemon runs as before


def test_the_daemons_run_without_huge_pages(world: World) -> None:
    """Both daemons as processes (stafd userspace-only, stacd on the fake kernel): the
    kernel reports THP off for them, while the test's own process keeps the host's policy."""
    (world.tmp / "stafd.conf").write_text("[Service Discovery]\nzeroconf=disabled\n")
    (world.tmp / "stacd.conf").write_text("")
    stafd = world.stafd()
    stacd = world.stacd()
    assert (thp_enabled(stafd.proc.pid), thp_enabled(stacd.proc.pid)) == ("0", "0")
    assert thp_enabled(os.getpid()) == "1"
