"""What stacd keeps of a log page entry received over D-Bus (issue 12 bench 4: 10,000 entries).

D-Bus decoding makes a new string object for every key and value; ``fresh`` does the same.
The entry keeps typed fields and a shared shape, not the dict: ``stacctl ls -d`` shows the
dict derived from them, which must read exactly as stafd sent it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stas import messages_stacd
from stas.messages import Dlpe, parse_dlpes
from stas.nvme.logpage import LogPageEntry
from tests.helpers.memory import held_after, peak_during


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


@pytest.fixture
def empty_table(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The shared tables as at start, whatever other tests parsed before."""
    table: dict[str, str] = {}
    monkeypatch.setattr(messages_stacd, "_SHARED", table)
    monkeypatch.setattr(messages_stacd, "_SHAPES", {})
    return table


def test_10000_received_entries_keep_under_300_bytes_each(empty_table) -> None:
    """Keys, repeating values and the dict's shape are shared; no dict per entry (was 1,740 B
    with a copy of every string, 660 B with the dict kept; now about 215 B: the slotted
    entry and its subsystem NQN)."""
    entries, kept = held_after(lambda: parse_dlpes([received(i) for i in range(10_000)]))
    assert len(entries) == 10_000
    assert kept / 10_000 < 300, f"{kept / 10_000:.0f} bytes per entry"


def test_repeating_strings_are_shared_and_the_entry_is_unchanged(empty_table) -> None:
    a, b = Dlpe.parse(received(1)), Dlpe.parse(received(2))
    assert a is not None and b is not None
    assert dict(a) == received(1) and a.transport == "tcp" and a.traddr == "::1"
    for key in ("trtype", "adrfam", "traddr", "treq", "cntlid", "subtype", "portid"):
        assert a[key] is b[key]
    assert [ka is kb for ka, kb in zip(a, b, strict=True)] == [True] * 11
    assert a.subsysnqn != b.subsysnqn and a["subnqn"] == a.subsysnqn


def test_the_view_reads_as_sent_in_the_order_sent(empty_table) -> None:
    """What ``ls -d`` prints is str() of the dict: order and spelling both count."""
    sent = {"subnqn": "s", "zz-vendor": "1", "eflags": " 4", "treq": "0x1", "trtype": "tcp",
            "tsas": "tls1.3", "portid": "7"}  # fmt: skip
    e = Dlpe.parse({fresh(k): fresh(v) for k, v in sent.items()})
    assert e is not None and str(dict(e)) == str(sent) and list(e) == list(sent)
    assert (e.eflags, e.treq, e.sectype, e.ncc) == (4, 1, "tls1.3", True)
    assert "cntlid" not in e and e.get("cntlid") is None and len(e) == 7
    with pytest.raises(KeyError):
        e["cntlid"]


def test_a_hostile_stream_of_new_values_cannot_grow_the_shared_tables(empty_table) -> None:
    entries = parse_dlpes(received(i, traddr=f"fd00::{i:x}") for i in range(6000))
    assert len(entries) == 6000
    assert len(empty_table) == messages_stacd._SHARED_MAX
    assert entries[-1].traddr == "fd00::176f"  # past the table's end: kept, just not shared
    long = Dlpe.parse(received(0, traddr="a" * 5000))
    assert long is not None and long.traddr == "a" * 5000
    shapes = parse_dlpes({**received(i), "cntlid": str(i)} for i in range(6000))
    assert len(messages_stacd._SHAPES) <= messages_stacd._SHAPES_MAX
    assert [e["cntlid"] for e in shapes[-3:]] == ["5997", "5998", "5999"]
    vendor = parse_dlpes({**received(i), f"k{i}": "x" * 300} for i in range(10))
    assert vendor[9][f"k{9}"] == "x" * 300  # unknown keys: kept, their shape never shared


KEYS = st.sampled_from(("trtype", "adrfam", "traddr", "trsvcid", "subnqn", "subtype", "eflags",
                        "treq", "tsas", "portid", "cntlid", "asqsz"))  # fmt: skip
KEYS = KEYS | st.text(max_size=8)
VALUES = (
    st.text(max_size=8)
    | st.sampled_from(("0x4", " 1", "08", "-1", "256", "required", "disable sqflow", "tls"))
    | st.integers()
    | st.none()
    | st.just("x" * 300)
)


@given(st.dictionaries(KEYS, VALUES, max_size=14))
def test_sharing_never_changes_what_an_entry_says(raw: dict) -> None:
    """Any mix of the DLPE's keys and others, strings or not: the entry of the plain rule."""
    e = Dlpe.parse({fresh(k): fresh(v) if isinstance(v, str) else v for k, v in raw.items()})
    known = ("trtype", "adrfam", "traddr", "trsvcid", "subnqn", "subtype", "eflags")
    if any(not isinstance(raw.get(k, ""), str) for k in known):
        assert e is None
        return
    assert e is not None
    assert list(e.items()) == [(k, str(v)) for k, v in raw.items()]
    assert str(dict(e)) == str({k: str(v) for k, v in raw.items()})
    got = (e.transport, e.adrfam, e.traddr, e.trsvcid, e.subsysnqn, e.subtype)
    assert got == tuple(raw.get(k, "") for k in known[:6])
    assert e.sectype == str(raw.get("tsas", "none"))
    try:
        assert e.eflags == int(raw.get("eflags") or 0)
    except ValueError:
        assert e.eflags == 0


ascii_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12)


@given(
    trtype=st.integers(0, 255),
    adrfam=st.integers(0, 255),
    subtype=st.integers(0, 255),
    treq=st.integers(0, 255),
    portid=st.integers(0, 0xFFFF),
    eflags=st.integers(0, 0xFFFF),
    sectype=st.integers(0, 255),
    text=ascii_text,
)
def test_stafds_dicts_read_back_byte_for_byte(
    trtype: int, adrfam: int, subtype: int, treq: int, portid: int, eflags: int, sectype: int,
    text: str,
) -> None:  # fmt: skip
    """Whatever stafd's codec publishes, stacd shows unchanged (``ls -d`` parity)."""
    tsas = bytes([sectype]) + bytes(255)
    entry = LogPageEntry(trtype, adrfam, subtype, treq, portid, 65535, 32, eflags, text, text,
                         text, tsas)  # fmt: skip
    sent = entry.to_dlpe()
    e = Dlpe.parse({fresh(k): fresh(v) for k, v in sent.items()})
    assert e is not None and str(dict(e)) == str(sent)
    assert (e.treq, e.eflags) == (treq, eflags)
    assert e.sectype == sent.get("tsas", "none")


def test_an_entry_equals_what_it_shows(empty_table) -> None:
    """Compared with a dict it is that dict; two entries differing only in an untyped key
    (``portid``) are different entries, as their ``ls -d`` lines are."""
    a = Dlpe.parse(received(1))
    assert a is not None and a == received(1) and a != {**received(1), "portid": "9"}
    assert a == Dlpe.parse(received(1)) and hash(a) == hash(Dlpe.parse(received(1)))
    assert a != Dlpe.parse({**received(1), "portid": "9"})


def test_a_wanted_controller_without_parameters_holds_no_dict_of_its_own() -> None:
    """10,000 wanted controllers (one per I/O controller, bench 4): the empty parameters are
    one shared mapping, the DCs listing them one shared tuple per distinct set (was an
    empty dict and a tuple each: 196 B a record, now about 90 B)."""
    from stas.messages import IocStatus, IocWanted, Tid

    dcs = [Tid("tcp", "::1", str(8009 + i), "nqn.2014-08.org.nvmexpress.discovery") for i in
           range(100)]  # fmt: skip
    wanted, kept = held_after(
        lambda: [IocWanted(dcs[i // 100], "discovered", dcs=(dcs[i // 100],)) for i in
                 range(10_000)]
    )  # fmt: skip
    assert kept / 10_000 < 110, f"{kept / 10_000:.0f} bytes per record"
    assert wanted[0].params == {} and IocStatus(dcs[0], "configured").dlpe == {}
    assert wanted[99].dcs is wanted[0].dcs == (dcs[0],) and wanted[100].dcs == (dcs[1],)


def test_a_full_syncs_json_is_typed_entry_by_entry_never_all_dicts_at_once(empty_table) -> None:
    """get_all_log_pages at bench 4's size (100 DCs x 100 entries): the peak while reading
    it stays near what the entries keep (it was 1,170 B an entry: every entry a dict first,
    12 MB that a later RSS kept)."""
    import json

    from stas.actors.stafd_client import log_pages_from_json

    dc = {"transport": "tcp", "traddr": "::1", "trsvcid": "8009", "genctr": "1",
          "subsysnqn": "nqn.2014-08.org.nvmexpress.discovery", "connected": "True"}  # fmt: skip
    listing = [
        {"discovery-controller": {**dc, "trsvcid": str(8009 + d)},
         "log-pages": [received(d * 100 + s) for s in range(100)]}
        for d in range(100)
    ]  # fmt: skip
    text = json.dumps(listing)
    del listing
    pages, peak = peak_during(lambda: log_pages_from_json(text))
    assert sum(len(entries) for entries in pages.values()) == 10_000
    assert peak / 10_000 < 450, f"peak {peak / 10_000:.0f} bytes per entry"
    first = pages[min(pages)][0]
    assert type(first) is Dlpe and dict(first) == received(0)


def test_controllers_named_by_entries_share_the_entries_address_strings(empty_table) -> None:
    """The address check normalises (``str(ip_address(...))``, a new string each call): an
    address that comes back unchanged is the entry's shared copy, not one per controller."""
    from stas.messages import Tid
    from stas.plan import iocs_of_dc

    dc = Tid("tcp", "::1", "8009", "nqn.2014-08.org.nvmexpress.discovery")
    entries = parse_dlpes(received(i) for i in range(1000))
    wanted = iocs_of_dc(dc, entries, ignore_iface=False, warned=set())
    assert len(wanted) == 1000 and len({id(t.traddr) for t in wanted}) == 1
    odd = Dlpe.parse({**received(0), "traddr": "0:0::1"})
    assert odd is not None
    (normalised,) = iocs_of_dc(dc, (odd,), ignore_iface=False, warned=set())
    assert normalised.traddr == "::1"  # a changed address is the normalised one
