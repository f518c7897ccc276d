"""Which kernel the tests run on: the 6.12-only tests (in-band auth, TLS) skip elsewhere."""

from __future__ import annotations

import os
import re

import pytest

from stas.kernel.api import Uevent
from stas.kernel.fake import FakeKernel
from tests.helpers.channels import pending


def kernel_series() -> tuple[int, int]:
    """(major, minor) of the running kernel; (0, 0) if its release string says neither."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def needs_kernel(series: tuple[int, int], what: str) -> pytest.MarkDecorator:
    """Skip unless the kernel is at least ``series``, saying what needs it and how to run it."""
    major, minor = series
    return pytest.mark.skipif(
        kernel_series() < series,
        reason=f"needs {what} (kernel >= {major}.{minor}, this is {os.uname().release}): "
        f"make test-kernel KERNEL={major}.{minor}",
    )


def drain(k: FakeKernel) -> list[Uevent]:
    """Every uevent the fake kernel has queued, without waiting."""
    return pending(k.events)
