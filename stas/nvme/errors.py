"""Exceptions shared by the protocol core, so callers can tell *who* was wrong.

- ``ProtocolError``: bytes from the peer (or a file) violate the NVMe / NVMe-TCP rules.
- ``NvmeStatusError``: the peer answered a command with a non-zero NVMe status.
- ``DiscoveryError`` and subclasses: a discovery session could not do its job
  (refused, timed out in a named step, connection lost).
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """Bytes that cannot be a valid PDU, structure or conversation step.

    Every decoder raises this (and only this) for bad input; the message names the field.
    """


class NvmeStatusError(Exception):
    """A command completed with a non-zero status (SCT/SC); ``name`` is human readable."""

    def __init__(self, command: str, status: int, name: str) -> None:
        super().__init__(f"{command} failed: {name} (status 0x{status:04x})")
        self.command = command
        self.status = status
        self.name = name


class DiscoveryError(Exception):
    """A discovery session failed; the message says which step and why."""


class ConnectionRefused(DiscoveryError):
    """The TCP connection to the discovery controller was refused or unreachable."""


class StepTimeout(DiscoveryError):
    """A step of the conversation took longer than allowed; ``step`` names it."""

    def __init__(self, step: str, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s waiting for {step}")
        self.step = step
        self.seconds = seconds


class ConnectionLost(DiscoveryError):
    """The peer closed the connection or sent a termination request."""
