"""What stacd keeps of a log page entry received over D-Bus (issue 12 bench 4: 10,000 entries).

D-Bus decoding makes a new string object for every key and value; ``fresh`` does the same."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas import messages_stacd
from stas.messages import Dlpe, parse_dlpes


def fresh(text: str) -> str:
    return text.encode().decode()  # equal, but a new object, as the D-Bus decoder makes


def received(i: int, traddr: str = "::1") -> dict[str, str]:
    entry = {
        "trtype": "tcp", "adrfam": "ipv6", "traddr": traddr, "trsvcid": str(8009 + i // 100),
        "subnqn": f"nqn.2026-01.io.t:dc{i // 100:03d}-sub{i % 100:04d}", "subtype": "nvme",
        "treq": "not specified", "portid": str(i // 100), "cntlid": "65535", "asqsz": "32",
        "eflags": "0",
    }  # fmt: skip
    return {fresh(k): fresh(v) for k, v in entry.items()}


def test_10000_received_entries_keep_under_900_bytes_each(empty_table) -> None:
    """Keys and repeating values are one shared copy, not one per entry (was 1,740 B)."""
    tracemalloc.start()
    try:
        raw = [received(i) for i in range(10_000)]
        entries = parse_dlpes(raw)
        del raw
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(entries) == 10_000
    assert kept / 10_000 < 900, f"{kept / 10_000:.0f} bytes per entry"


@pytest.fixture
def empty_table(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The shared table as at start, whatever other tests parsed before."""
    table: dict[str, str] = {}
    monkeypatch.setattr(messages_stacd, "_SHARED", table)
    return table


def test_repeating_strings_are_shared_and_the_entry_is_unchanged(empty_table) -> None:
    a, b = Dlpe.parse(received(1)), Dlpe.parse(received(2))
    assert a is not None and b is not None
    assert a.fields == received(1) and a.transport == "tcp" and a.traddr == "::1"
    for key in ("trtype", "adrfam", "traddr", "treq", "cntlid", "subtype"):
        assert a.fields[key] is b.fields[key]
    assert [ka is kb for ka, kb in zip(a.fields, b.fields, strict=True)] == [True] * 11
    assert a.subsysnqn != b.subsysnqn


def test_a_hostile_stream_of_new_values_cannot_grow_the_shared_table(empty_table) -> None:
    entries = parse_dlpes(received(i, traddr=f"fd00::{i:x}") for i in range(6000))
    assert len(entries) == 6000
    assert len(empty_table) == messages_stacd._SHARED_MAX
    assert entries[-1].traddr == "fd00::176f"  # past the table's end: kept, just not shared
    long = Dlpe.parse(received(0, traddr="a" * 5000))
    assert long is not None and long.traddr == "a" * 5000


KEYS = st.sampled_from(("trtype", "adrfam", "traddr", "trsvcid", "subnqn", "subtype", "eflags",
                        "treq", "portid", "cntlid", "asqsz")) | st.text(max_size=8)  # fmt: skip
VALUES = st.text(max_size=8) | st.integers() | st.none() | st.just("x" * 300)


@given(st.dictionaries(KEYS, VALUES, max_size=14))
def test_sharing_never_changes_what_an_entry_says(raw: dict) -> None:
    """Any mix of the DLPE's keys and others, strings or not: the entry of the plain rule."""
    e = Dlpe.parse({fresh(k): fresh(v) if isinstance(v, str) else v for k, v in raw.items()})
    known = ("trtype", "adrfam", "traddr", "trsvcid", "subnqn", "subtype", "eflags")
    if any(not isinstance(raw.get(k, ""), str) for k in known):
        assert e is None
        return
    assert e is not None
    assert dict(e.as_dict()) == {k: str(v) for k, v in raw.items()}
    got = (e.transport, e.adrfam, e.traddr, e.trsvcid, e.subsysnqn, e.subtype)
    assert got == tuple(raw.get(k, "") for k in known[:6])
    try:
        assert e.eflags == int(raw.get("eflags") or 0)
    except ValueError:
        assert e.eflags == 0
