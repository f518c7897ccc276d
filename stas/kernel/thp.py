"""No transparent huge pages in a daemon's process (issue 8: RSS <= 25 MB per daemon).

Where the kernel's THP policy is ``always`` (Debian's kernels), any anonymous mapping with a
whole 2 MB-aligned range in it is filled with a 2 MB page at its first touch: the brk heap,
Python's 1 MB object arenas merged into one mapping, a worker thread's 8 MB stack. A small,
mostly idle daemon touches little of each, so the resident size grows by whole 2 MB pages:
measured in the VM (6.1, 50 controllers), stacd 26.9 MB with 14 MB of it in huge pages, and
24.7 MB without them; stafd 25.8 -> 25.0 MB. ``PR_SET_THP_DISABLE`` turns them off for this
process (kept across fork and exec); it cannot split the huge pages already there, so the
daemons ask before their modules load. Nothing else changes: the same pages, 4 KB at a time.
"""

from __future__ import annotations

import sys
from typing import Any

from stas.kernel.libc import process_libc

PR_SET_THP_DISABLE = 41  # <linux/prctl.h>
PR_GET_THP_DISABLE = 42


def disable_thp(libc: Any = None) -> bool:
    """Ask the kernel for no huge pages in this process from now on; False where it refuses
    (a kernel before 3.15) or this is not Linux: then nothing changes and the daemon runs."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = libc or process_libc()
        return int(libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):  # no libc by that name, no prctl symbol
        return False


def thp_disabled(libc: Any = None) -> bool | None:
    """Whether this process has huge pages turned off (None: the kernel cannot tell)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        answer = int((libc or process_libc()).prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0))
    except (OSError, AttributeError):
        return None
    return None if answer < 0 else answer == 1
