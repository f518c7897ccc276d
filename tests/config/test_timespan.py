"""Time spans as accepted for zeroconf-connections-persistence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.config.timespan import TimespanError, format_seconds, parse_timespan


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("72hours", 259200),
        ("72 hours", 259200),
        ("1:01", 61),
        ("1:01:01", 3661),
        ("2:04:13:02.5", 2 * 86400 + 4 * 3600 + 13 * 60 + 2.5),
        ("3 days 5 hours", 3 * 86400 + 5 * 3600),
        ("1w, 2d, 3h", 604800 + 2 * 86400 + 3 * 3600),
        ("5hr34m56s", 5 * 3600 + 34 * 60 + 56),
        ("5 hrs, 34 mins, 56 secs", 5 * 3600 + 34 * 60 + 56),
        ("2 days, 4:13:02", 2 * 86400 + 4 * 3600 + 13 * 60 + 2),
        ("1.5 min", 90),
        ("0.5", 0.5),
        (".5", 0.5),
        ("30", 30),
        ("0", 0),
        ("-1", -1),
        ("+10s", 10),
        ("- 1:00", -60),
        ("  72HOURS ", 259200),
        ("1 Week", 604800),
    ],
)
def test_accepted_forms(text: str, seconds: float) -> None:
    assert parse_timespan(text) == seconds


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty time span"),
        ("-", "empty time span"),
        ("abc", "expected seconds, a clock like 1:01, or a number with a unit"),
        ("5 fortnights", "unknown time unit 'fortnights'"),
        ("1h 2h", "time unit 'h' given twice"),
        ("1:60", "clock field 60 must be below 60"),
        ("1:2", "expected seconds, a clock like 1:01, or a number with a unit"),
        ("3h 4:00", "unexpected '4:00'"),
        ("1e5", "unknown time unit 'e'"),
        ("x" * 101, "longer than 100 characters"),
    ],
)
def test_rejected_forms(text: str, reason: str) -> None:
    with pytest.raises(TimespanError) as exc:
        parse_timespan(text)
    assert str(exc.value) == reason


def test_negative_zero_is_zero() -> None:
    value = parse_timespan("-0")
    assert value == 0 and str(value) == "0.0"


def test_format_seconds() -> None:
    assert format_seconds(259200.0) == "259200 s"
    assert format_seconds(0.5) == "0.5 s"


_UNIT_NAMES = {
    604800: ["w", "wk", "weeks"],
    86400: ["d", "day", "days"],
    3600: ["h", "hr", "hours"],
    60: ["m", "min", "minutes"],
    1: ["s", "sec", "seconds"],
}


@given(
    parts=st.lists(
        st.tuples(st.sampled_from(sorted(_UNIT_NAMES)), st.integers(0, 10_000), st.integers(0, 2)),
        min_size=1,
        max_size=5,
        unique_by=lambda p: p[0],
    ),
    sep=st.sampled_from([" ", ", ", ""]),
    space=st.sampled_from(["", " "]),
)
def test_units_round_trip(parts: list[tuple[int, int, int]], sep: str, space: str) -> None:
    text = sep.join(f"{n}{space}{_UNIT_NAMES[u][i]}" for u, n, i in parts)
    assert parse_timespan(text) == sum(u * n for u, n, _ in parts)


@given(st.integers(0, 99), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
def test_clock_round_trip(d: int, h: int, m: int, s: int) -> None:
    assert parse_timespan(f"{d}:{h:02d}:{m:02d}:{s:02d}") == d * 86400 + h * 3600 + m * 60 + s
    assert parse_timespan(f"{h}:{m:02d}:{s:02d}") == h * 3600 + m * 60 + s
    assert parse_timespan(f"{m}:{s:02d}") == m * 60 + s


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_plain_seconds_round_trip(value: float) -> None:
    assert parse_timespan(f"{value:.17f}") == pytest.approx(value)


@given(st.text(max_size=120))
def test_arbitrary_text_gives_seconds_or_timespan_error(text: str) -> None:
    try:
        value = parse_timespan(text)
    except TimespanError as e:
        assert str(e)
    else:
        assert isinstance(value, float)
        assert value == value and abs(value) != float("inf")
