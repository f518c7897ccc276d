"""The C library this process already runs on, opened once: prctl (huge pages), malloc_trim
(the heap after a connect burst) and the keyctl calls all go through the same handle."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def process_libc() -> Any:
    """``dlopen(NULL)``: the symbols already loaded (glibc's); ``use_errno`` for the callers
    that read errno. OSError where there is none (not cached: the next call tries again)."""
    import ctypes  # loaded in every daemon already (trio)

    return ctypes.CDLL(None, use_errno=True)
