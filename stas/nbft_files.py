"""Whether the firmware left NBFT tables: checked before ``stas.nbft`` (the parser, six attrs
classes, ~6 ms of a daemon's imports natively, far more under emulation) is imported, which
most hosts never need (issue 8)."""

from __future__ import annotations

import os

SYSFS_DIR = "/sys/firmware/acpi/tables"
FILE_PREFIX = "NBFT"  # the tables are NBFT, NBFT1, ... (glob NBFT*)


def has_tables(directory: str | os.PathLike[str]) -> bool:
    """True when ``directory`` holds an ``NBFT*`` entry (a missing or unreadable directory
    holds none: stas.nbft.read_tables treats it as no NBFT too)."""
    try:
        with os.scandir(directory) as entries:
            return any(e.name.startswith(FILE_PREFIX) for e in entries)
    except OSError:
        return False
