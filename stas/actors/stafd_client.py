"""stacd's view of stafd: D-Bus events in, per-DC log pages out, never a false "no controllers".

Upstream stacd treated "stafd did not answer" as "stafd has no controllers" and disconnected
everything (upstream PR #510). Here absence is explicit: ``StafdVanished`` changes nothing
downstream, and a DC is only reported removed (``DcRemoved``) when stafd says so (the
``dc_removed`` signal) or when stafd, up and answering for a whole grace period, still does not
list it. A DC that stafd lists but has never fetched (no GENCTR yet) is not reported at all, so
a stafd restarting without its cache cannot empty stacd's view either.

No signal is lost silently: when the D-Bus client had to drop stafd signals (``SignalsLost``)
every log page is fetched again. A burst of ``log_pages_changed`` costs one fetch per DC:
signals already queued are drained and deduplicated before fetching.

Each full sync ends with ``StafdSynced`` naming the DCs whose pages are not current (never
read, or a cache while stafd cannot reach the DC): only a complete picture lets a restarted
stacd disconnect what its previous run made and nothing lists any more. A signal from such a
DC fetches that DC alone (stafd just read its page, so it is reachable); once every DC that
was not current has signalled, stafd's list of DCs and their links (``list_controllers``, no
pages: every page change since was signalled and fetched) confirms the picture with another
``StafdSynced``. At cold start with 100 DCs coming up one after another that is one full sync
and one listing, not a full sync per DC (README benchmark 4: 14 MB and 2 s of CPU). The
re-reads that only confirm the picture (after the grace period, on ``dc_removed``) list the DCs
and read only the pages whose GENCTR moved; and the connector hears a DC's page only when it
differs from the one it holds (a 10,000-entry re-read of an unchanged stafd cost 7 MB of RSS).

Log page entries are typed here (``Dlpe``), once, where they cross from D-Bus into stacd.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import attrs
import trio
from trio_util import AsyncValue, move_on_when

from stas.dbus.common import ERR_LIMITS_EXCEEDED, DBusBusy, DBusCallError, DBusError
from stas.dbus.trio_client import open_stafd_client
from stas.messages import (
    DcLogPages,
    DcRemoved,
    Dlpe,
    LogPagesChanged,
    SignalsLost,
    StafdAppeared,
    StafdEvent,
    StafdSynced,
    StafdVanished,
    Tid,
    ToConnector,
    parse_dlpes,
)

log = logging.getLogger("stas.stafd_client")


class StafdCalls(Protocol):
    """The stafd methods this actor calls (``stas.dbus.trio_client.StafdClient``)."""

    async def get_all_log_pages(self, detailed: bool = True) -> str: ...
    async def get_log_pages(self, dc: Tid) -> list[dict[str, str]]: ...
    async def list_controllers(self, detailed: bool = False) -> list[dict[str, str]]: ...


OpenClient = Callable[..., AbstractAsyncContextManager[StafdCalls]]


@attrs.frozen
class DcPages:
    """One DC of stafd's listing, typed: ``fetched`` is False while stafd has not read its log
    page yet (no GENCTR), when its empty page means "unknown", not "no entries"."""

    dc: Tid
    fetched: bool
    entries: tuple[Dlpe, ...]
    connected: bool | None = None  # stafd's word on its link now (None: it did not say)
    genctr: str = ""  # the page's generation counter as stafd listed it ('' or 'None': unread)

    @property
    def current(self) -> bool:
        """Fetched and connected now: not a cache of an unreachable DC."""
        return self.fetched and self.connected is True


def parse_listing(listing: object) -> list[DcPages]:
    """get_all_log_pages' answer (decoded JSON, untrusted): malformed items are skipped."""
    out = []
    for item in listing if isinstance(listing, list) else []:
        if not isinstance(item, Mapping):
            continue
        dc, pages = item.get("discovery-controller"), item.get("log-pages")
        if not isinstance(dc, Mapping) or not isinstance(pages, list):
            continue
        out.append(dc_pages(dc, parse_dlpes(pages), listed=bool(pages)))
    return out


def dc_pages(dc: Mapping[str, str], entries: tuple[Dlpe, ...], *, listed: bool) -> DcPages:
    """One DC of a listing (stafd's TID dict with ``genctr`` and ``connected``) with its
    ``entries``; ``listed``: stafd sent page entries for it (so it has read its page)."""
    fetched = listed or dc.get("genctr", "") not in ("", "None")
    said = dc.get("connected")
    connected = None if said not in ("True", "False") else said == "True"
    return DcPages(Tid.from_dict(dc), fetched, entries, connected, str(dc.get("genctr", "")))


def load_listing(text: str) -> object:
    """get_all_log_pages' JSON text decoded, each log page entry typed (``Dlpe``) as soon as
    json has decoded its object: the dicts of 10,000 entries never exist all at once (they
    were 1,170 B an entry at the peak of a full sync, 12 MB; now about 240 B, what the
    entries keep plus one dict at a time). ValueError if not JSON."""
    return json.loads(text, object_hook=_typed_entry)


def _typed_entry(obj: dict[str, object]) -> object:
    """A JSON object that names a subsystem on a transport is an entry; anything else (or an
    entry that does not parse: ``parse_dlpes`` drops it later) stays the dict it was."""
    if "subnqn" in obj and "trtype" in obj:
        e = Dlpe.parse(obj)
        if e is not None:
            return e
    return obj


def log_pages_from_json(text: str) -> dict[Tid, tuple[Dlpe, ...]]:
    """get_all_log_pages' JSON text as {DC: entries} (``stacd --dry-run``); ValueError if it
    is not JSON."""
    return {p.dc: p.entries for p in parse_listing(load_listing(text))}


class _Sync:
    """What stafd last told us, and the grace period before a missing DC counts as gone."""

    def __init__(self, send: trio.MemorySendChannel[ToConnector], grace: float) -> None:
        self.send = send
        self.grace = grace
        self.settled = False  # stafd has been up for the whole grace: absence means removal
        self.partial: set[Tid] = set()  # not current at the last sync, nor fetched since
        self.recheck: set[Tid] = set()  # those of them whose link stafd shows (may change)
        self.confirm_due = False  # all of them have signalled: ask stafd whether all is current
        # what the connector holds of each DC: the DCs stafd has shown us a read page of
        self.sent: dict[Tid, tuple[Dlpe, ...]] = {}
        self.genctr: dict[Tid, str] = {}  # the GENCTR stafd listed with the page we hold

    async def pages(self, dc: Tid, entries: tuple[Dlpe, ...]) -> None:
        """Tell the connector ``dc``'s entries, unless they are what it holds already: the
        full re-read after the grace period (and on each ``dc_removed``) of a stafd whose
        pages did not change then costs the connector nothing, and no second copy of every
        entry lives on beside the first (benchmark 4, 10,000 entries: 7 MB, 1.8 s of CPU)."""
        held = self.sent.get(dc)
        if held is entries or held == entries:  # ``is``: a re-read kept the held tuple
            return
        msg = DcLogPages(dc, entries)
        self.sent[dc] = msg.dlpes  # the tuple the connector keeps: nothing held twice
        await self.send.send(msg)

    async def full(
        self, client: StafdCalls, *, removals_confirmed: bool, everything: bool = True
    ) -> None:
        """Fetch every DC's log pages; report changes, and removals when they are certain.
        Not ``everything``: only the pages whose GENCTR moved since we read them (a re-read
        that confirms the picture; ``_listing_changed``)."""
        if not everything and self.sent:
            await self._judged(await self._listing_changed(client), removals_confirmed)
            return
        try:
            raw = await client.get_all_log_pages(True)
        except DBusCallError as exc:
            if exc.name != ERR_LIMITS_EXCEEDED or isinstance(exc, DBusBusy):
                raise
            log.warning("stafd's log pages do not fit one reply (%s); reading them DC by DC", exc)
            listing: object = await _listing_per_dc(client)
        else:
            try:
                listing = load_listing(raw)
            except ValueError:
                log.warning("stafd sent get_all_log_pages that is not JSON; ignored")
                return
        await self._judged(parse_listing(listing), removals_confirmed)

    async def _listing_changed(self, client: StafdCalls) -> list[DcPages]:
        """stafd's listing (DCs and links, no pages), and the page of each DC whose GENCTR
        moved since we read it, or that we never read; the other DCs keep the very tuple the
        connector holds (neither copied nor compared again: ``pages``). The re-read after the
        grace period and on each ``dc_removed`` then costs one listing: get_all_log_pages
        with 10,000 entries is one 2.3 MB reply whose buffers (7-9 MB at the peak) stayed in
        stacd's RSS (benchmark 4: 95 -> 102 MB)."""
        out: list[DcPages] = []
        for dc in await client.list_controllers(True):
            if not isinstance(dc, Mapping):
                continue
            tid, genctr = Tid.from_dict(dc), str(dc.get("genctr", ""))
            held = self.sent.get(tid)
            if genctr in ("", "None"):  # stafd has not read it: nothing to fetch (or proved)
                out.append(dc_pages(dc, (), listed=False))
            elif held is not None and self.genctr.get(tid) == genctr:
                out.append(dc_pages(dc, held, listed=True))
            else:
                pages = await client.get_log_pages(tid)
                out.append(dc_pages(dc, parse_dlpes(pages), listed=bool(pages)))
        return out

    async def _judged(self, items: list[DcPages], removals_confirmed: bool) -> None:
        seen: set[Tid] = set()
        for item in items:
            seen.add(item.dc)
            if not item.fetched:
                continue  # empty because stafd does not know yet, not because it is empty
            self.genctr[item.dc] = item.genctr
            await self.pages(item.dc, item.entries)
        if removals_confirmed:
            for tid in sorted(self.sent.keys() - seen):
                log.info("stafd no longer has DC %s", tid)
                del self.sent[tid]
                self.genctr.pop(tid, None)
                await self.send.send(DcRemoved(tid))
        await self.send.send(StafdSynced(self._judge(items)))  # the picture is complete, or not

    async def confirm(self, client: StafdCalls, quiet: Callable[[], bool]) -> None:
        """Every DC not current at the last sync has signalled and been fetched since: stafd's
        DCs and links (no pages) say whether the picture is complete. Unless ``quiet()`` after
        the answer (a signal came in meanwhile): that page is fetched first, then ask again."""
        dcs = await client.list_controllers(True)
        await trio.lowlevel.checkpoint()  # signals sent before the answer reach the queue
        if not quiet():
            return  # still due: the caller drains the queue and calls again
        items = [dc_pages(dc, (), listed=False) for dc in dcs if isinstance(dc, Mapping)]
        for item in items:  # no signal pending: the pages we hold are those of these GENCTRs
            if item.fetched and item.dc in self.sent:
                self.genctr[item.dc] = item.genctr
        await self.send.send(StafdSynced(self._judge(items)))

    def _judge(self, items: list[DcPages]) -> tuple[Tid, ...]:
        """The DCs whose pages we do not hold current, remembered for their next signal."""
        self.partial, self.recheck, self.confirm_due = set(), set(), False
        partial = []
        for item in items:
            if item.current and item.dc in self.sent:
                continue
            partial.append(item.dc)
            self.partial.add(item.dc)
            if item.connected is not None:  # its next signal may make it current
                self.recheck.add(item.dc)
        return tuple(partial)

    async def one(self, client: StafdCalls, tid: Tid) -> None:
        """Fetch one DC that signalled. The last of those not current at the last sync makes
        a confirmation due (not a full sync: at scale that re-read 10,000 entries per DC)."""
        pages = await client.get_log_pages(tid)
        self.genctr.pop(tid, None)  # which GENCTR this page has, the next listing will say
        await self.pages(tid, parse_dlpes(pages))
        if tid in self.recheck:  # stafd just read its page: it was reachable then
            self.recheck.discard(tid)
            self.partial.discard(tid)
            self.confirm_due = not self.partial


async def _listing_per_dc(client: StafdCalls) -> list[dict[str, object]]:
    """get_all_log_pages' answer built from one call per DC, for a cache too large for one
    reply (stafd caps replies; each DC's pages are bounded on their own)."""
    out: list[dict[str, object]] = []
    for dc in await client.list_controllers(True):
        if isinstance(dc, Mapping):
            pages = await client.get_log_pages(Tid.from_dict(dc))
            out.append({"discovery-controller": dc, "log-pages": list(pages)})
    return out


async def run_stafd_client(
    send: trio.MemorySendChannel[ToConnector],
    *,
    address: str | None = None,
    open_client: OpenClient = open_stafd_client,
    grace: float = 60.0,
    retry: float = 5.0,
) -> None:
    """Follow stafd forever; reconnect to the bus after ``retry`` seconds if it is lost."""
    sync = _Sync(send, grace)
    warned = False
    while True:
        try:
            await _follow(sync, address, open_client)
        except DBusError as exc:
            if not warned:
                log.warning("lost the D-Bus connection to follow stafd: %s; retrying", exc)
                warned = True
        await send.send(StafdVanished())
        await trio.sleep(retry)


async def _follow(sync: _Sync, address: str | None, open_client: OpenClient) -> None:
    events_send, events_recv = trio.open_memory_channel[StafdEvent](1024)
    # None while stafd is away; while it is here, a number that changes on each arrival
    stay: AsyncValue[int | None] = AsyncValue(None)
    async with open_client(events_send, address=address) as client, trio.open_nursery() as n:

        async def confirm_after_grace() -> None:
            """Once stafd has answered for a whole grace period, a DC it does not list was
            removed. Each arrival or departure starts the wait over."""
            while True:
                await stay.wait_value(lambda v: v is not None)
                async with move_on_when(stay.wait_transition):
                    await trio.sleep(sync.grace)
                    await _safely(sync.full(client, removals_confirmed=True, everything=False))
                    sync.settled = True
                    await trio.sleep_forever()

        async def handle(ev: StafdEvent) -> None:
            match ev:
                case StafdAppeared(owner=owner):
                    log.info("stafd is on the bus (%s)", owner)
                    sync.settled = False
                    await sync.send.send(ev)
                    await _safely(sync.full(client, removals_confirmed=False))
                    stay.value = (stay.value or 0) + 1
                case StafdVanished():
                    log.info("stafd left the bus; keeping its last known log pages")
                    stay.value = None
                    await sync.send.send(ev)
                case DcRemoved():
                    await _safely(sync.full(client, removals_confirmed=True, everything=False))
                case SignalsLost(count=count):
                    log.info("%d stafd signals were dropped; fetching every log page", count)
                    await _safely(sync.full(client, removals_confirmed=sync.settled))
                case _:
                    pass

        def quiet() -> bool:
            return events_recv.statistics().current_buffer_used == 0

        n.start_soon(confirm_after_grace)
        async for ev in events_recv:
            pending: dict[Tid, None] = {}  # DCs to fetch, in signal order, each once
            while True:
                if isinstance(ev, LogPagesChanged):
                    pending[ev.dc] = None
                else:
                    await _fetch(sync, client, pending)
                    await handle(ev)
                try:
                    ev = events_recv.receive_nowait()
                except trio.WouldBlock:
                    break
            await _fetch(sync, client, pending)
            if sync.confirm_due:  # after the burst: no signalled page left unread
                await _safely(sync.confirm(client, quiet))
        n.cancel_scope.cancel()


async def _fetch(sync: _Sync, client: StafdCalls, pending: dict[Tid, None]) -> None:
    """Fetch the log pages of the DCs in ``pending`` (emptied as it goes)."""
    while pending:
        tid = next(iter(pending))
        del pending[tid]
        await _safely(sync.one(client, tid))


async def _safely(step: Awaitable[None]) -> None:
    """A failed call (stafd went away mid-call) changes nothing; the next event resyncs."""
    try:
        await step
    except DBusError as exc:
        log.info("stafd did not answer (%s); keeping what we know", exc)
