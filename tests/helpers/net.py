"""Loopback addresses for tests that need nothing to be listening."""

from __future__ import annotations

import socket


def closed_port() -> int:
    """A TCP port on [::1] that was free a moment ago and has no listener (connects to it are
    refused)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind(("::1", 0))
        return int(probe.getsockname()[1])
