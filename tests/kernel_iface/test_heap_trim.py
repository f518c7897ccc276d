"""LibnvmeKernel hands the heap a connect burst freed back to the kernel (issue 8's RSS bound).

glibc keeps freed heap pages resident; ``malloc_trim(0)`` returns them. The real kernel's
connects run in worker threads, 8 at a time; once none is in flight any more, the heap is
trimmed: once per burst, not once per connect.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from stas.kernel import libnvme_kernel
from stas.kernel.api import ConnectRequest, KernelError
from stas.kernel.fabrics import FabricsError
from stas.kernel.libnvme_kernel import LibnvmeKernel

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"


def request(i: int) -> ConnectRequest:
    return ConnectRequest("tcp", "::1", "4420", f"nqn.2026-01.io.t:s{i}", HOSTNQN)


class Counted:
    """The fabrics device (``add_ctrl``) and the trim, each call recorded in order."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.done, self.trims = fail, 0, []

    def add_ctrl(self, options: str, path: str) -> tuple[int, int]:
        if self.fail:
            raise FabricsError(errno.ECONNREFUSED, "Connection refused")
        self.done += 1
        return self.done, 1

    def trim(self) -> None:
        self.trims.append(self.done)


def kernel(tmp_path: Path, counted: Counted, monkeypatch: pytest.MonkeyPatch) -> LibnvmeKernel:
    monkeypatch.setattr(libnvme_kernel, "add_ctrl", counted.add_ctrl)
    return LibnvmeKernel(sysfs=tmp_path, capabilities=frozenset(), trim=counted.trim)


async def test_a_burst_of_connects_is_trimmed_once_after_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Counted()
    k = kernel(tmp_path, counted, monkeypatch)
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(k.connect, request(i))
    assert counted.trims == [20]
    await k.connect(request(20))  # a lone connect later: its own burst of one
    assert counted.trims == [20, 21]


async def test_failed_connects_end_a_burst_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Counted(fail=True)
    k = kernel(tmp_path, counted, monkeypatch)
    with pytest.raises(KernelError) as info:
        await k.connect(request(0))
    assert info.value.errno == errno.ECONNREFUSED
    assert counted.trims == [0]


# 40 MB of 1,000-byte blocks from malloc, every eighth kept (no trim at the top of the heap
# can return the rest): freed, then trimmed; the resident size before and after, in kB.
HOLES = textwrap.dedent(
    """
    import ctypes
    from stas.kernel.libnvme_kernel import trim_heap
    def rss():
        return next(int(ln.split()[1]) for ln in open("/proc/self/status")
                    if ln.startswith("VmRSS:"))
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: free() itself never trims here
    blocks = [libc.malloc(1000) for _ in range(40000)]
    for i, b in enumerate(blocks):
        ctypes.memset(b, 1, 1000)
        if i % 8:
            libc.free(b)
    before = rss()
    print(before, rss() if trim_heap() else before)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_heap_returns_freed_pages_to_the_kernel() -> None:
    out = subprocess.run([sys.executable, "-c", HOLES], capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert before - after > 10_000, f"resident {before} kB before the trim, {after} kB after"
