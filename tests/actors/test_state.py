"""The JSON state file: round trip, atomic write, and defensive reading of untrusted content."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stas.messages import DcStatus, StafdSnapshot, Tid
from stas.nvme.logpage import ExtAttr, LogPageEntry
from stas.state import (
    FILE_NAME,
    StateStore,
    default_path,
    encode_state,
    entry_from_json,
    entry_to_json,
    note_upstream_state,
)
from tests.helpers.entries import WK, dc_tid, log_entry
from tests.helpers.wire import uint

entries = st.builds(
    LogPageEntry,
    uint(8), uint(8), uint(8), uint(8), uint(16), uint(16), uint(16), uint(16),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=31),  # TRSVCID
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=223),  # SUBNQN
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=255),  # TRADDR
    st.binary(min_size=256, max_size=256) | st.just(bytes(256)),
    st.lists(st.builds(ExtAttr, uint(16), st.binary(max_size=8)), max_size=3),
)  # fmt: skip


def entry(addr: str, subtype: int = 1) -> LogPageEntry:
    return log_entry(WK, addr, "8009", subtype=subtype)


def tid(addr: str) -> Tid:
    return dc_tid(addr, host_iface="eth0")


def test_round_trip_and_no_temp_files_left(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.json")
    snap = StafdSnapshot(
        dcs=(
            DcStatus(tid=tid("::1"), origin="discovered", genctr=3, log_pages=(entry("::2"),)),
            DcStatus(tid=tid("10.0.0.1"), origin="referral", state="connected", connected=True),
        )
    )
    assert store.save(snap)
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
    doc = json.loads((tmp_path / "s.json").read_text())
    assert (doc["format"], doc["version"]) == ("nvme-stas-stafd-state", 1)
    assert doc["dcs"][0]["log_pages"][0]["traddr"] == "::2"  # DLPE-level fields, plain JSON
    loaded = store.load()
    assert set(loaded) == {tid("::1"), tid("10.0.0.1")}
    assert loaded[tid("::1")].log_pages == (entry("::2"),)
    assert (loaded[tid("::1")].origin, loaded[tid("::1")].genctr) == ("discovered", 3)
    # what a warm restart needs, not what was live: nothing is connected yet
    assert loaded[tid("10.0.0.1")].connected is False
    assert loaded[tid("10.0.0.1")].state == "idle"


def test_overwrite_replaces_content(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s.json")
    store.save(StafdSnapshot(dcs=(DcStatus(tid=tid("10.0.0.1"), origin="configured"),)))
    store.save(StafdSnapshot())
    assert store.load() == {}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_unwritable_directory_is_a_warning(tmp_path: Path, caplog) -> None:
    (tmp_path / "file").write_text("")
    store = StateStore(tmp_path / "file" / "s.json")  # parent is a file: cannot be created
    assert store.save(StafdSnapshot()) is False
    assert "cannot save state to" in caplog.text


def test_missing_file_is_a_quiet_cold_start(tmp_path: Path, caplog) -> None:
    assert StateStore(tmp_path / "none.json").load() == {}
    assert caplog.records == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "ignoring unreadable state file"),
        ("[]", "not a stafd state file"),
        ('{"format": "other"}', "not a stafd state file"),
        ('{"format": "nvme-stas-stafd-state", "version": 9}', "state version 9 unknown"),
        ('{"format": "nvme-stas-stafd-state", "version": 1, "dcs": 5}', "'dcs' is not a list"),
        ("[" * 100_000, "ignoring unreadable state file"),
    ],
)
def test_corrupt_or_foreign_files_start_cold(
    tmp_path: Path, caplog, content: str, message: str
) -> None:
    caplog.set_level(logging.WARNING, logger="stas.state")
    (tmp_path / "s.json").write_text(content)
    assert StateStore(tmp_path / "s.json").load() == {}
    assert message in caplog.text


def test_bad_dcs_are_skipped_good_ones_kept(tmp_path: Path, caplog) -> None:
    good = {"tid": tid("10.0.0.1").as_dict(), "origin": "configured", "log_pages": []}
    e = entry_to_json(entry("x"))
    bad = [
        {"tid": {}, "log_pages": [{"trtype": "x"}]},
        {"tid": tid("10.0.0.2").as_dict(), "origin": "martian"},
        {"tid": tid("10.0.0.3").as_dict(), "genctr": -1},
        {"tid": tid("10.0.0.4").as_dict(), "genctr": 1.5},
        {"tid": tid("10.0.0.5").as_dict(), "log_pages": [dict(e, portid=1 << 20)]},
        {"tid": tid("10.0.0.6").as_dict(), "log_pages": [dict(e, traddr="\u00e9")]},
        {"tid": tid("10.0.0.7").as_dict(), "log_pages": [dict(e, tsas="zz")]},
        {"tid": tid("10.0.0.8").as_dict(), "log_pages": [dict(e, ext_attrs=[[1]])]},
        "not an object",
    ]  # fmt: skip
    doc = {"format": "nvme-stas-stafd-state", "version": 1, "dcs": [*bad, good]}
    (tmp_path / "s.json").write_text(json.dumps(doc))
    loaded = StateStore(tmp_path / "s.json").load()
    assert list(loaded) == [tid("10.0.0.1")]
    assert caplog.text.count("ignoring a bad DC") == len(bad)


def test_default_path_follows_runtime_directory(monkeypatch) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/x:/run/y")
    assert default_path() == Path("/run/x") / FILE_NAME
    monkeypatch.delenv("RUNTIME_DIRECTORY")
    assert default_path() == Path("/run/stafd/last-known-config.json")


@given(entries)
def test_entry_json_round_trip(e: LogPageEntry) -> None:
    assert entry_from_json(json.loads(json.dumps(entry_to_json(e)))) == e


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
dc_items = st.fixed_dictionaries(
    {},
    optional={
        "tid": st.dictionaries(st.sampled_from(list(tid("").as_dict())), json_values) | json_values,
        "origin": st.sampled_from(["configured", "referral", "discovered"]) | json_values,
        "genctr": json_values,
        "log_pages": st.lists(
            st.dictionaries(st.sampled_from([*entry_to_json(entry("a")), "ext_attrs"]), json_values)
        )
        | json_values,
    },
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(st.lists(dc_items | json_values, max_size=4))
def test_arbitrary_content_gives_a_state_or_nothing(tmp_path: Path, dcs) -> None:
    path = tmp_path / "fuzz.json"
    doc = {"format": "nvme-stas-stafd-state", "version": 1, "dcs": dcs}
    path.write_text(json.dumps(doc))
    loaded = StateStore(path).load()
    assert isinstance(loaded, dict)
    assert all(isinstance(k, Tid) and isinstance(v, DcStatus) for k, v in loaded.items())


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bytes.json"
    path.write_bytes(data)
    assert isinstance(StateStore(path).load(), dict)


# --- one size bound for save and load (issue 13 item 2) ----------------------------------------


def dc_with_pages(addr: str, n: int, origin: str = "discovered") -> DcStatus:
    pages = tuple(entry(f"10.{i >> 8}.{i & 255}.{len(addr)}") for i in range(n))
    return DcStatus(tid=tid(addr), origin=origin, genctr=7, log_pages=pages)


def test_save_never_writes_what_load_refuses(
    tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stas.state.MAX_FILE_BYTES", 12_000)
    dcs = (
        dc_with_pages("10.0.0.1", 5, "configured"),
        dc_with_pages("10.0.0.2", 60),  # the largest: its page goes first
        dc_with_pages("10.0.0.3", 30),
        dc_with_pages("10.0.0.4", 8),
    )
    store = StateStore(tmp_path / "s.json")
    assert store.save(StafdSnapshot(dcs=dcs))
    assert (tmp_path / "s.json").stat().st_size <= 12_000
    loaded = store.load()
    assert set(loaded) == {dc.tid for dc in dcs}  # every DC kept, never the whole file lost
    assert loaded[tid("10.0.0.2")].log_pages == ()
    assert loaded[tid("10.0.0.2")].genctr is None  # no page kept: fetched again
    assert loaded[tid("10.0.0.1")].log_pages == dcs[0].log_pages
    assert loaded[tid("10.0.0.4")].log_pages == dcs[3].log_pages
    assert "above the 12000-byte limit: cached log pages of 1 DCs" in caplog.text
    assert str(tid("10.0.0.2")) in caplog.text
    assert "ignoring" not in caplog.text


def test_referral_pages_are_dropped_before_others(tmp_path: Path) -> None:
    dcs = (dc_with_pages("10.0.0.1", 40, "configured"), dc_with_pages("10.0.0.9", 20, "referral"))
    full = len(encode_state(dcs, 1 << 30)[0])
    store = StateStore(tmp_path / "s.json", max_bytes=full - 100)
    assert store.save(StafdSnapshot(dcs=dcs))
    loaded = store.load()
    assert loaded[tid("10.0.0.9")].log_pages == ()
    assert loaded[tid("10.0.0.1")].log_pages == dcs[0].log_pages


def test_too_many_dcs_keeps_the_configured_ones(
    tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stas.state.MAX_DCS", 2)
    dcs = (
        DcStatus(tid=tid("10.0.0.1"), origin="referral"),
        DcStatus(tid=tid("10.0.0.2"), origin="discovered"),
        DcStatus(tid=tid("10.0.0.3"), origin="configured"),
    )
    store = StateStore(tmp_path / "s.json")
    assert store.save(StafdSnapshot(dcs=dcs))
    assert set(store.load()) == {tid("10.0.0.2"), tid("10.0.0.3")}
    assert f"1 DCs above the 2-DC limit not saved: {tid('10.0.0.1')}" in caplog.text


def test_dc_identities_that_cannot_fit_are_dropped_last(tmp_path: Path, caplog) -> None:
    dcs = tuple(DcStatus(tid=tid(f"10.0.0.{i}"), origin="configured") for i in range(20))
    store = StateStore(tmp_path / "s.json", max_bytes=1000)
    assert store.save(StafdSnapshot(dcs=dcs))
    loaded = store.load()
    assert 0 < len(loaded) < 20
    assert list(loaded) == [dc.tid for dc in dcs[: len(loaded)]]
    assert "DCs not saved at all" in caplog.text


# --- start-up hygiene and untrusted paths (issue 13 item 8) ------------------------------------


def test_stale_temp_files_are_removed_at_start(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="stas.state")
    store = StateStore(tmp_path / FILE_NAME)
    store.save(StafdSnapshot(dcs=(DcStatus(tid=tid("10.0.0.1"), origin="configured"),)))
    stale = tmp_path / f".{FILE_NAME}.k2j3h4"  # what SIGKILL between mkstemp and rename leaves
    stale.write_bytes(b'{"dcs":[')
    other = tmp_path / "unrelated.json"
    other.write_text("{}")
    assert set(store.load()) == {tid("10.0.0.1")}
    assert not stale.exists() and other.exists()
    assert f"removed stale temporary state file {stale}" in caplog.text


def test_oversized_state_file_is_refused_on_its_size(tmp_path: Path, caplog) -> None:
    path = tmp_path / "s.json"
    with path.open("wb") as f:
        f.truncate(100 << 20)  # sparse: 100 MB that cost nothing to write
    assert StateStore(path).load() == {}
    assert f"{100 << 20} bytes, above the {64 << 20}-byte limit" in caplog.text


def test_symlink_at_the_state_path_is_not_followed(tmp_path: Path, caplog) -> None:
    secret = tmp_path / "secret"
    StateStore(secret).save(
        StafdSnapshot(dcs=(DcStatus(tid=tid("10.0.0.1"), origin="configured"),))
    )
    before = secret.read_bytes()
    link = tmp_path / "s.json"
    link.symlink_to(secret)
    assert StateStore(link).load() == {}  # valid content, but read through a link: refused
    assert "symbolic link, not followed" in caplog.text
    assert StateStore(link).save(StafdSnapshot())
    assert not link.is_symlink() and secret.read_bytes() == before  # the link is replaced


class Hung(Exception):
    """load() blocked (opening a FIFO)."""


def _hung(_sig: int, _frame: object) -> None:
    raise Hung("load() blocked for 5 s")


def test_fifo_at_the_state_path_does_not_block(tmp_path: Path, caplog) -> None:
    path = tmp_path / "s.json"
    os.mkfifo(path)
    old = signal.signal(signal.SIGALRM, _hung)  # a regression fails here instead of hanging
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        assert StateStore(path).load() == {}  # O_NONBLOCK: a FIFO without writer cannot block
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert "not a regular file" in caplog.text


# --- upstream's pickle is noticed, never read (issue 9 item 12) --------------------------------


def test_upstream_pickle_is_reported_once_and_not_read(tmp_path: Path, caplog) -> None:
    assert note_upstream_state(tmp_path, "stafd") is None
    assert caplog.records == []
    pickle = tmp_path / "last-known-config.pickle"
    pickle.write_bytes(b"\x80\x04K\x01.")
    pickle.chmod(0)
    assert note_upstream_state(tmp_path, "stafd") == pickle
    assert [r.getMessage() for r in caplog.records] == [
        f"stafd: found {pickle} from upstream nvme-stas: ignored (never read); "
        "cached log pages are fetched again"
    ]


def test_daemons_report_upstream_pickle_at_start(
    tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stas.logsetup import TronControl
    from stas.sdnotify import Notifier
    from stas.stacd import Stacd, StacdOptions
    from stas.stafd import Stafd, StafdOptions

    conf = tmp_path / "x.conf"
    conf.write_text("[Global]\ndc-backend=userspace\n")
    (tmp_path / "last-known-config.pickle").write_bytes(b"junk")
    tron = TronControl(logging.getLogger("test-state"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    Stafd(StafdOptions(str(conf), str(tmp_path / "sys"), str(tmp_path)), tron, Notifier({}))
    Stacd(StacdOptions(str(conf), str(tmp_path / "sys"), kernel="fake"), tron, Notifier({}))
    found = [r.getMessage() for r in caplog.records if "from upstream nvme-stas" in r.getMessage()]
    assert [m.split(":", 1)[0] for m in found] == ["stafd", "stacd"]
    assert "starting from the kernel's existing connections" in found[1]


def test_a_missing_state_file_says_it_starts_empty(tmp_path: Path, caplog) -> None:
    store = StateStore(tmp_path / "s.json")
    with caplog.at_level(logging.INFO, logger="stas.state"):
        assert store.load() == {}
    said = [r.getMessage() for r in caplog.records]
    assert any("no state file at" in m and "starting with no cached DCs" in m for m in said), said
