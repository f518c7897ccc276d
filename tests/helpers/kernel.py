"""Which kernel the tests run on: the 6.12-only tests (in-band auth, TLS) skip elsewhere."""

from __future__ import annotations

import os
import re

import pytest

from stas.kernel.api import ConnectRequest, Uevent
from stas.kernel.fake import FakeKernel
from tests.helpers.channels import pending
from tests.helpers.entries import HOSTNQN


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


def req(**kw: object) -> ConnectRequest:
    """An I/O controller connect request (TCP, ``klingons`` at [::1]:4420); ``kw`` overrides
    any field."""
    base: dict[str, object] = dict(
        transport="tcp", traddr="::1", trsvcid="4420", subsysnqn="klingons", hostnqn=HOSTNQN
    )
    return ConnectRequest(**(base | kw))  # type: ignore[arg-type]


def drain(k: FakeKernel) -> list[Uevent]:
    """Every uevent the fake kernel has queued, without waiting."""
    return pending(k.events)
