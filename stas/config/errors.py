"""The two outcomes of reading a config file besides a value: a warning or a refusal.

A bad *value* never stops a daemon: it becomes a ``ConfigWarning`` and the default is used.
Only a file that cannot be read or parsed at all raises ``ConfigError``, so that a reloading
daemon can keep its running configuration instead of half-applying a broken one.
"""

from __future__ import annotations

from stas.nvme.errors import ProtocolError


class ConfigError(ProtocolError):
    """The file cannot be read or parsed at all; the message names the file and the reason."""


class ConfigWarning(str):
    """One human-readable complaint about one value, option or section.

    A ``str`` subclass so callers and tests can compare, print and log it directly; the text
    always names the file, the section, the key and (unless secret) the value.
    """

    __slots__ = ()
