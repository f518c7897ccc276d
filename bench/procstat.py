"""A process's /proc/PID/status, read one way for every benchmark (RSS, peak RSS, threads)."""

from __future__ import annotations

from pathlib import Path


def parse_status(text: str) -> dict[str, str]:
    """``Name:\\tvalue`` lines as a dict, values stripped (``"VmRSS": "1234 kB"``)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name] = value.strip()
    return fields


def status(pid: int | str = "self") -> dict[str, str]:
    """Process ``pid``'s status fields; OSError if it is gone."""
    return parse_status(Path(f"/proc/{pid}/status").read_text())


def kb_of(fields: dict[str, str], name: str) -> int:
    """A ``kB`` field's number (``VmRSS``, ``VmHWM``); 0 if the kernel does not show it (a
    zombie has no memory fields)."""
    value = fields.get(name, "").split()
    return int(value[0]) if value else 0


def status_kb(pid: int | str, name: str) -> int:
    """One ``kB`` field of process ``pid``'s status: ``status_kb(pid, "VmRSS")``."""
    return kb_of(status(pid), name)
