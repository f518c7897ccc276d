"""stafd's replies are bounded (issue 13 item 1): an oversized get_all_log_pages is refused
with a clear LimitsExceeded, stafd stays on the bus, and stacd's realistic start-up read fits."""

from __future__ import annotations

import json

import pytest
import trio

from stas.actors.stafd_dbus import StafdDBus
from stas.dbus.service import MAX_REPLY_BYTES
from stas.dbus.trio_client import open_stafd_client
from stas.messages import Tid
from tests.helpers.dbus_actors import SEED, ctl, seed_dc, serve, snapshot

WK = "nqn.2014-08.org.nvmexpress.discovery"


def many_dcs(count: int, entries: int = 3) -> tuple:
    nqns = tuple(f"nqn.2024-01.io.example:{i}" for i in range(entries)) if entries != 3 else SEED
    return tuple(
        seed_dc(nqns, tid=Tid("tcp", f"10.0.{i // 250}.{i % 250 + 1}", "8009", WK, "", "", "h"))
        for i in range(count)
    )


async def test_oversized_adlp_is_refused_in_one_line(
    bus_address, nursery, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(StafdDBus, "reply_budget", 5000)
    await serve(nursery, bus_address, snapshot(*many_dcs(10)))
    rc, out, err = await ctl(capsys, "adlp")
    assert (rc, out) == (1, "")
    assert err.startswith("stafd: org.freedesktop.DBus.Error.LimitsExceeded: reply would be over"
                          " 5000 bytes (")  # fmt: skip
    assert "of 10 discovery controllers); limit 5000;" in err
    assert err.endswith("use get_log_pages per controller (stafctl dlp)\n")
    assert err.count("\n") == 1
    # stafd is still there and the per-controller path works
    rc, out, _ = await ctl(capsys, "--json", "dlp", "-a", "10.0.0.1", "-s", "8009", "-q", "h")
    assert rc == 0 and [e["subnqn"] for e in json.loads(out)] == list(SEED)
    rc, out, _ = await ctl(capsys, "--json", "ls")
    assert rc == 0 and len(json.loads(out)) == 10


async def test_stacds_start_up_read_fits_for_a_realistic_cache(bus_address, nursery) -> None:
    """100 DCs x 100 entries (issue 13's realistic load) is far under the default budget."""
    await serve(nursery, bus_address, snapshot(*many_dcs(100, entries=100)))
    send, _receive = trio.open_memory_channel[object](10)
    async with open_stafd_client(send, address=bus_address) as staf:
        raw = await staf.get_all_log_pages(True)
    listing = json.loads(raw)
    assert len(listing) == 100 and all(len(item["log-pages"]) == 100 for item in listing)
    assert len(raw) < MAX_REPLY_BYTES // 4
