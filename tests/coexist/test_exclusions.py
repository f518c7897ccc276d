"""libnvme's exclusion list (/etc/nvme/exclusions.conf, exclusions.conf.d/*.conf): parsing,
matching and reading, against temporary directories."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas.coexist.exclusions import (
    BadEntry,
    Exclusions,
    load_exclusions,
    parse_entry,
    parse_exclusions,
)
from stas.messages import Tid

HOSTID = "0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
KLINGONS = Tid("tcp", "::1", "8009", "klingons", host_nqn="nqn.host")
STARFLEET = Tid("tcp", "192.168.1.20", "4420", "starfleet", "10.0.0.1", "eth0", "nqn.host")


def listing(*entries: str) -> str:
    return "# a list\n[exclusions]\n" + "".join(f"exclusion = {e}\n" for e in entries)


def excl(*entries: str) -> Exclusions:
    found, _ = parse_exclusions(listing(*entries), "x.conf")
    return Exclusions(tuple(found), HOSTID)


@pytest.mark.parametrize(
    ("entry", "tid", "hit"),
    [
        ("nqn=klingons", KLINGONS, True),
        ("nqn=klingons", STARFLEET, False),
        ("transport=tcp;traddr=::1", KLINGONS, True),
        ("transport=tcp;traddr=0:0::1", KLINGONS, True),  # addresses compare as IPs
        ("traddr=192.168.1.20;trsvcid=4420;nqn=starfleet", STARFLEET, True),
        ("traddr=192.168.1.20;trsvcid=8009", STARFLEET, False),  # every key must match
        ("host-traddr=10.0.0.1", STARFLEET, True),
        ("host-traddr=10.0.0.1", KLINGONS, False),  # the Tid has none: no match
        ("host-iface=eth0;hostnqn=nqn.host", STARFLEET, True),
        ("hostnqn=nqn.other", STARFLEET, False),
        (f"hostid={HOSTID}", KLINGONS, True),  # this host's id
        ("hostid=00000000-0000-0000-0000-000000000000", KLINGONS, False),
        (" nqn = klingons ; ", KLINGONS, True),  # spaces trimmed, empty tokens harmless
        ("transport=fc;traddr=NN-0X1:PN-0X2", Tid("fc", "nn-0x1:pn-0x2", "", "s"), True),
    ],
)
def test_an_entry_matches_on_the_keys_it_gives(entry: str, tid: Tid, hit: bool) -> None:
    assert excl(entry).excluded(tid.as_dict()) is hit


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("bogus=x", "unknown key 'bogus'"),
        ("nqn=klingons;bogus=x", "unknown key 'bogus'"),  # one bad token spoils the entry
        ("klingons", "has no '='"),
        ("nqn=", "empty value"),
        ("", "no key=value field"),
        (";;", "no key=value field"),
        ("transport=tcp;traddr=storage.example", "not a numeric IP address"),
        ("subsysnqn=klingons", "unknown key 'subsysnqn'"),  # nvme connect's name is nqn
    ],
)
def test_a_malformed_entry_matches_nothing_and_is_named(
    entry: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(BadEntry, match=why):
        parse_entry(entry)
    found, notes = parse_exclusions(listing(entry), "x.conf")
    assert [e.fields for e in found] == [None]
    assert notes and notes[0].startswith("x.conf:3: exclusion = ") and why in notes[0]
    assert not Exclusions(tuple(found)).excluded(KLINGONS.as_dict())


def test_sections_comments_and_stray_entries() -> None:
    text = (
        "exclusion = nqn=before-any-section\n"
        "# exclusion = nqn=commented\n"
        "[other]\nexclusion = nqn=other-section\nkey = ignored\n"
        "[ exclusions ]\nexclusion = nqn=klingons\nunrelated = nqn=starfleet\n"
        "[broken\nexclusion = nqn=after-broken-header\n"
    )
    found, notes = parse_exclusions(text, "f")
    assert [e.text for e in found] == ["nqn=klingons"]
    assert [e.where for e in found] == ["f:7"]
    assert any("outside [exclusions]" in n and n.startswith("f:1:") for n in notes)
    assert any("malformed section header" in n for n in notes)


def test_a_match_is_logged_once_per_controller(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "stas.coexist")
    ex = excl("nqn=klingons")
    for _ in range(3):
        assert ex.excluded(KLINGONS.as_dict())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "klingons" in lines[0] and "x.conf:3" in lines[0]
    assert "neither connected nor disconnected" in lines[0]


def test_load_reads_the_main_file_and_the_dropins(tmp_path: Path) -> None:
    (tmp_path / "exclusions.conf").write_text(listing("nqn=klingons"))
    d = tmp_path / "exclusions.conf.d"
    d.mkdir()
    (d / "user.conf").write_text(listing("traddr=192.168.1.20"))
    (d / "notes.txt").write_text(listing("nqn=not-a-conf-file"))
    (d / ".conf").write_text(listing("nqn=no-name"))
    ex = load_exclusions(tmp_path, hostid=HOSTID)
    assert [e.text for e in ex.entries] == ["nqn=klingons", "traddr=192.168.1.20"]
    assert ex.excluded(KLINGONS.as_dict()) and ex.excluded(STARFLEET.as_dict())
    assert not ex.excluded(Tid("tcp", "::1", "8009", "no-name").as_dict())


def test_missing_files_exclude_nothing(tmp_path: Path) -> None:
    ex = load_exclusions(tmp_path / "absent")
    assert ex.entries == () and not ex.excluded(KLINGONS.as_dict())


def test_an_unreadable_list_is_named_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "exclusions.conf").mkdir()  # not a file
    d = tmp_path / "exclusions.conf.d"
    d.mkdir()
    (d / "big.conf").write_text(listing("nqn=klingons") + "#" * (1024 * 1024))
    ex = load_exclusions(tmp_path)
    assert ex.excluded(KLINGONS.as_dict())  # the first MiB is read
    assert any("larger than" in r.getMessage() for r in caplog.records)


TOKEN = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(st.lists(st.tuples(TOKEN, TOKEN), max_size=6), st.booleans())
def test_parse_entry_never_crashes_and_keeps_only_known_keys(
    pairs: list[tuple[str, str]], bare: bool
) -> None:
    text = ";".join(f"{k}={v}" for k, v in pairs) + (";bare" if bare else "")
    try:
        fields = parse_entry(text)
    except BadEntry as exc:
        assert str(exc)
        return
    assert fields and not bare
    assert set(fields) <= {
        "transport", "traddr", "trsvcid", "subsysnqn", "host-traddr", "host-iface",
        "host-nqn", "hostid",
    }  # fmt: skip
    assert all(v and v == v.strip() and ";" not in v for v in fields.values())


@given(st.text(max_size=400))
def test_parse_exclusions_never_crashes(text: str) -> None:
    found, notes = parse_exclusions(text, "f")
    for e in found:
        assert e.where.startswith("f:") and (e.fields is None) == bool(e.problem)
    assert all(isinstance(n, str) for n in notes)
