"""Time spans as upstream accepts them for ``zeroconf-connections-persistence``.

Upstream vendors ``pytimeparse``; this is our own small parser for the same forms:

- a bare number of seconds: ``30``, ``0.5``, ``-1``;
- a clock: ``:SS``, ``M:SS``, ``H:MM:SS``, ``D:HH:MM:SS`` (seconds may have a fraction):
  ``1:01`` is 61, ``:22`` is 22;
- numbers with units, optionally comma separated: ``72hours``, ``3 days 5 hours``,
  ``1w, 2d, 3h``, ``1.5 min``; a trailing clock is allowed after days/weeks
  (``2 days, 4:13:02``, the ``uptime`` form).

A leading ``+`` or ``-`` applies to the whole span. Units are w, d, h, m, s with their usual
spellings (``wk``, ``day``, ``hrs``, ``min``, ``secs``, ...), each at most once.
"""

from __future__ import annotations

import math
import re

MAX_TIMESPAN_CHARS = 100

_NUM = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_NUMBER = re.compile(_NUM)
_CLOCK = re.compile(
    r"([0-9]+):([0-9]{2}(?:\.[0-9]+)?)(?::([0-9]{2}(?:\.[0-9]+)?))?"
    r"(?::([0-9]{2}(?:\.[0-9]+)?))?"
)
_SECONDS_CLOCK = re.compile(r":([0-9]{2}(?:\.[0-9]+)?)")  # pytimeparse's ":SS"
_ITEM = re.compile(rf"({_NUM})\s*([a-z]+)\s*,?\s*")

_UNITS: dict[str, tuple[str, int]] = {}
for _unit, _secs, _names in (
    ("w", 604800, ("w", "wk", "wks", "week", "weeks")),
    ("d", 86400, ("d", "dy", "dys", "day", "days")),
    ("h", 3600, ("h", "hr", "hrs", "hour", "hours")),
    ("m", 60, ("m", "min", "mins", "minute", "minutes")),
    ("s", 1, ("s", "sec", "secs", "second", "seconds")),
):
    for _name in _names:
        _UNITS[_name] = (_unit, _secs)


class TimespanError(ValueError):
    """The text is not a time span; the message says what is wrong."""


def _clock_seconds(match: re.Match[str]) -> float:
    """``M:SS``, ``H:MM:SS`` or ``D:HH:MM:SS`` to seconds; later fields must be in range."""
    fields = [f for f in match.groups() if f is not None]
    limits = {2: (60,), 3: (60, 60), 4: (24, 60, 60)}[len(fields)]
    weights = {2: (60, 1), 3: (3600, 60, 1), 4: (86400, 3600, 60, 1)}[len(fields)]
    for text, limit in zip(fields[1:], limits, strict=True):
        if float(text) >= limit:
            raise TimespanError(f"clock field {text} must be below {limit}")
    return sum(float(f) * w for f, w in zip(fields, weights, strict=True))


def parse_timespan(text: str) -> float:
    """Seconds represented by ``text``; raises ``TimespanError`` if it is not a time span."""
    if len(text) > MAX_TIMESPAN_CHARS:
        raise TimespanError(f"longer than {MAX_TIMESPAN_CHARS} characters")
    s = text.strip().lower()
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:].lstrip()
    if not s:
        raise TimespanError("empty time span")
    if _NUMBER.fullmatch(s):
        return _finite(sign * float(s))
    clock = _CLOCK.fullmatch(s)
    if clock:
        return _finite(sign * _clock_seconds(clock))
    seconds = _SECONDS_CLOCK.fullmatch(s)
    if seconds:
        if float(seconds.group(1)) >= 60:
            raise TimespanError(f"clock field {seconds.group(1)} must be below 60")
        return _finite(sign * float(seconds.group(1)))
    total = 0.0
    seen: set[str] = set()
    pos = 0
    while pos < len(s):
        item = _ITEM.match(s, pos)
        if item is None:
            break
        number, name = item.groups()
        if name not in _UNITS:
            raise TimespanError(f"unknown time unit {name!r}")
        unit, secs = _UNITS[name]
        if unit in seen:
            raise TimespanError(f"time unit {name!r} given twice")
        seen.add(unit)
        total += float(number) * secs
        pos = item.end()
    if not seen:
        raise TimespanError("expected seconds, a clock like 1:01, or a number with a unit")
    if pos < len(s):
        clock = _CLOCK.fullmatch(s, pos)
        if clock is None or seen & {"h", "m", "s"}:
            raise TimespanError(f"unexpected {s[pos : pos + 20]!r}")
        total += _clock_seconds(clock)
    return _finite(sign * total)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise TimespanError("time span too large")
    return value + 0.0  # turn -0.0 into 0.0


def format_seconds(value: float) -> str:
    """Short display of a number of seconds: ``259200 s``, ``0.5 s``."""
    shown = int(value) if value == int(value) else value
    return f"{shown} s"
