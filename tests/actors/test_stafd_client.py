"""stafd client actor: absence is never "no controllers"; removals only when certain."""

import json
from contextlib import asynccontextmanager

import trio
import trio.testing

from stas.actors.stafd_client import run_stafd_client
from stas.dbus.common import DBusUnavailable
from stas.messages import (
    DcLogPages,
    DcRemoved,
    LogPagesChanged,
    SignalsLost,
    StafdAppeared,
    StafdSynced,
    StafdVanished,
    Tid,
)
from tests.helpers.channels import pending
from tests.helpers.entries import dc_tid, dlpe

DC1 = dc_tid("::1", host_nqn="nqn.host")
DC2 = dc_tid("::2", host_nqn="nqn.host")
DLPE = dlpe("klingons")


class FakeStafd:
    """stafd as seen over D-Bus: a listing, per-DC pages, and a script of events."""

    def __init__(self) -> None:
        self.listing: dict[Tid, tuple[list[dict], str]] = {}
        self.events: trio.MemorySendChannel | None = None
        self.calls: list[str] = []
        self.fail = False
        self.connected: set[Tid] | None = set()  # DCs shown connected now (None: key left out)

    def dc_dict(self, tid: Tid, genctr: str) -> dict[str, str]:
        connected = {} if self.connected is None else {"connected": str(tid in self.connected)}
        return {**tid.as_dict(), "genctr": genctr, **connected}

    async def get_all_log_pages(self, detailed: bool) -> str:
        self.calls.append("all")
        if self.fail:
            raise DBusUnavailable("org.nvmexpress.staf is not running")
        return json.dumps(
            [
                {"discovery-controller": self.dc_dict(tid, genctr), "log-pages": pages}
                for tid, (pages, genctr) in self.listing.items()
            ]
        )

    async def list_controllers(self, detailed: bool) -> list[dict]:
        self.calls.append("list")
        return [self.dc_dict(tid, genctr) for tid, (_, genctr) in self.listing.items()]

    async def get_log_pages(self, dc: Tid) -> list[dict]:
        self.calls.append("one")
        return self.listing[dc][0]

    @asynccontextmanager
    async def open(self, events, address=None):
        self.events = events
        yield self

    async def emit(self, ev) -> None:
        assert self.events is not None
        await self.events.send(ev)


async def collect(receive: trio.MemoryReceiveChannel, synced: bool = False) -> list:
    """What the actor sent; the end-of-sync marker StafdSynced only if ``synced``."""
    await trio.testing.wait_all_tasks_blocked()
    return [msg for msg in pending(receive) if synced or not isinstance(msg, StafdSynced)]


async def start(nursery, fake: FakeStafd, grace: float = 60.0):
    send, receive = trio.open_memory_channel(1000)
    nursery.start_soon(lambda: run_stafd_client(send, open_client=fake.open, grace=grace))
    await trio.testing.wait_all_tasks_blocked()
    return receive


async def test_appear_syncs_all_and_skips_never_fetched(autojump_clock) -> None:
    fake = FakeStafd()
    fake.listing = {DC1: ([DLPE], "3"), DC2: ([], "None")}
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        await fake.emit(StafdAppeared(":1.7"))
        msgs = await collect(receive)
        assert msgs == [StafdAppeared(":1.7"), DcLogPages(DC1, (DLPE,))]
        n.cancel_scope.cancel()


async def test_each_full_sync_ends_with_the_dcs_whose_pages_are_not_current(
    autojump_clock,
) -> None:
    """stacd's restart sweep needs to know the picture is complete: a DC never fetched, or
    fetched but not connected now (a cache), is named partial; a connected one is not."""
    fake = FakeStafd()
    fake.listing = {DC1: ([DLPE], "3"), DC2: ([], "None")}
    fake.connected = {DC1}
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        await fake.emit(StafdAppeared(":1.7"))
        msgs = await collect(receive, synced=True)
        assert msgs == [StafdAppeared(":1.7"), DcLogPages(DC1, (DLPE,)), StafdSynced((DC2,))]
        fake.listing[DC2] = ([DLPE], "1")  # fetched once, now unreachable: a cache
        await fake.emit(SignalsLost(3))
        assert (await collect(receive, synced=True))[-1] == StafdSynced((DC2,))
        fake.connected = {DC1, DC2}  # DC2 reachable again: its signal confirms the picture
        await fake.emit(LogPagesChanged(DC2))
        assert (await collect(receive, synced=True))[-1] == StafdSynced(())
        assert fake.calls[-2:] == ["one", "list"]
        n.cancel_scope.cancel()


def synced(msgs: list) -> list:
    return [m for m in msgs if isinstance(m, StafdSynced)]


async def test_dcs_coming_up_one_by_one_cost_one_full_sync_not_one_each(
    autojump_clock,
) -> None:
    """Cold start at scale (README benchmark 4): 100 DCs listed but not yet connected, then
    each one's first signal. Each is fetched alone; one listing of the DCs' links at the end
    confirms the picture, and the connector hears "complete" only then, never before."""
    dcs = [dc_tid(f"::{i + 1:x}", host_nqn="nqn.host") for i in range(100)]
    fake = FakeStafd()
    fake.listing = {dc: ([], "None") for dc in dcs}
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        await fake.emit(StafdAppeared(":1.7"))
        assert synced(await collect(receive, synced=True)) == [StafdSynced(tuple(dcs))]
        for dc in dcs:
            fake.listing[dc] = ([DLPE], "1")
            fake.connected.add(dc)
            await fake.emit(LogPagesChanged(dc))
            msgs = await collect(receive, synced=True)
            assert DcLogPages(dc, (DLPE,)) in msgs
            assert synced(msgs) == ([StafdSynced(())] if dc == dcs[-1] else [])
        assert fake.calls.count("all") == 1
        assert fake.calls.count("one") == 100
        assert fake.calls[-1] == "list" and fake.calls.count("list") == 1
        n.cancel_scope.cancel()


async def test_a_dc_that_drops_while_the_others_come_up_keeps_the_picture_partial(
    autojump_clock,
) -> None:
    """The confirmation reads every DC's link again: one that was current but dropped in the
    meantime is named, and its own signal later completes the picture."""
    dc3 = dc_tid("::3", host_nqn="nqn.host")
    fake = FakeStafd()
    fake.listing = {DC1: ([DLPE], "3"), DC2: ([], "None"), dc3: ([], "None")}
    fake.connected = {DC1}
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        await fake.emit(StafdAppeared(":1.7"))
        assert synced(await collect(receive, synced=True)) == [StafdSynced((DC2, dc3))]
        fake.connected = {DC2}  # DC2 comes up; DC1 drops (stafd keeps its cache)
        fake.listing[DC2] = ([DLPE], "1")
        await fake.emit(LogPagesChanged(DC2))
        assert synced(await collect(receive, synced=True)) == []
        fake.connected = {DC2, dc3}
        fake.listing[dc3] = ([DLPE], "1")
        await fake.emit(LogPagesChanged(dc3))
        assert synced(await collect(receive, synced=True)) == [StafdSynced((DC1,))]
        fake.connected = {DC1, DC2, dc3}
        await fake.emit(LogPagesChanged(DC1))
        assert synced(await collect(receive, synced=True)) == [StafdSynced(())]
        assert fake.calls == ["all", "one", "one", "list", "one", "list"]
        n.cancel_scope.cancel()


async def test_a_dc_new_to_stafd_and_not_yet_read_keeps_the_picture_partial(
    autojump_clock,
) -> None:
    """stafd may list a connected DC whose signal stacd has not handled yet: its page is not
    held, so the picture is not complete until that signal is."""
    fake = FakeStafd()
    fake.listing = {DC1: ([], "None")}
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        await fake.emit(StafdAppeared(":1.7"))
        await collect(receive)
        fake.listing = {DC1: ([DLPE], "1"), DC2: ([DLPE], "1")}  # DC2 added, read by stafd
        fake.connected = {DC1, DC2}
        await fake.emit(LogPagesChanged(DC1))
        assert synced(await collect(receive, synced=True)) == [StafdSynced((DC2,))]
        await fake.emit(LogPagesChanged(DC2))
        msgs = await collect(receive, synced=True)
        assert msgs == [DcLogPages(DC2, (DLPE,)), StafdSynced(())]
        n.cancel_scope.cancel()


class SignallingStafd(FakeStafd):
    """stafd that reads a DC's changed page while stacd's listing call is on its way."""

    signal_on_list: Tid | None = None

    async def list_controllers(self, detailed: bool) -> list[dict]:
        if self.signal_on_list is not None:
            self.listing[self.signal_on_list] = ([DLPE, dlpe("vulcans")], "9")
            await self.emit(LogPagesChanged(self.signal_on_list))
            self.signal_on_list = None
        return await super().list_controllers(detailed)


async def test_the_picture_is_complete_only_with_every_signalled_page_read(
    autojump_clock,
) -> None:
    """A signal queued when the confirmation's answer arrives means a page stacd does not
    hold yet: it is fetched before the connector hears "complete" (its restart sweep must
    not disconnect what that page now lists)."""
    fake = SignallingStafd()
    fake.listing = {DC1: ([DLPE], "3"), DC2: ([], "None")}
    fake.connected = {DC1}
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        await fake.emit(StafdAppeared(":1.7"))
        await collect(receive)
        fake.listing[DC2] = ([DLPE], "1")
        fake.connected = {DC1, DC2}
        fake.signal_on_list = DC1
        await fake.emit(LogPagesChanged(DC2))
        msgs = await collect(receive, synced=True)
        assert msgs == [
            DcLogPages(DC2, (DLPE,)),
            DcLogPages(DC1, (DLPE, dlpe("vulcans"))),
            StafdSynced(()),
        ]
        assert fake.calls == ["all", "one", "list", "one", "list"]
        n.cancel_scope.cancel()


async def test_a_dc_whose_link_stafd_does_not_show_is_fetched_alone(autojump_clock) -> None:
    """Not current (nothing says it is connected), but no signal can change that: its
    signals fetch its page only, not the whole picture (a flood stays cheap)."""
    fake = FakeStafd()
    fake.listing = {DC1: ([DLPE], "3")}
    fake.connected = None
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        await fake.emit(StafdAppeared(":1.7"))
        assert (await collect(receive, synced=True))[-1] == StafdSynced((DC1,))
        fake.listing[DC1] = ([DLPE, dlpe("vulcans")], "4")
        await fake.emit(LogPagesChanged(DC1))
        assert await collect(receive, synced=True) == [DcLogPages(DC1, (DLPE, dlpe("vulcans")))]
        assert fake.calls == ["all", "one"]
        n.cancel_scope.cancel()


async def test_vanishing_for_half_an_hour_reports_nothing_gone(autojump_clock) -> None:
    fake = FakeStafd()
    fake.listing = {DC1: ([DLPE], "3")}
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        await fake.emit(StafdAppeared(":1.7"))
        await collect(receive)
        await fake.emit(StafdVanished())
        await trio.sleep(1800)
        msgs = await collect(receive)
        assert msgs == [StafdVanished()]
        assert not any(isinstance(m, DcRemoved) and m.dc is not None for m in msgs)
        n.cancel_scope.cancel()


async def test_restart_without_cache_does_not_empty_the_view(autojump_clock) -> None:
    fake = FakeStafd()
    fake.listing = {DC1: ([DLPE], "3")}
    async with trio.open_nursery() as n:
        receive = await start(n, fake, grace=60)
        await fake.emit(StafdAppeared(":1.7"))
        await collect(receive)
        await fake.emit(StafdVanished())
        fake.listing = {DC1: ([], "None")}  # new stafd: DC configured but not fetched yet
        await fake.emit(StafdAppeared(":1.9"))
        msgs = await collect(receive)
        assert msgs == [StafdVanished(), StafdAppeared(":1.9")]
        fake.listing = {DC1: ([DLPE, dlpe("vulcans")], "1")}
        await fake.emit(LogPagesChanged(DC1, "nvme0"))
        assert await collect(receive) == [DcLogPages(DC1, (DLPE, dlpe("vulcans")))]
        await trio.sleep(61)  # grace over: DC1 is still listed, nothing is gone (or new)
        assert await collect(receive) == []
        # the confirmation after its signal listed its GENCTR: the grace re-read is a listing
        assert fake.calls[-3:] == ["one", "list", "list"]
        n.cancel_scope.cancel()


async def test_dc_removed_signal_reports_gone(autojump_clock) -> None:
    fake = FakeStafd()
    fake.listing = {DC1: ([DLPE], "3"), DC2: ([DLPE], "5")}
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        await fake.emit(StafdAppeared(":1.7"))
        await collect(receive)
        del fake.listing[DC2]
        await fake.emit(DcRemoved())
        msgs = await collect(receive)
        assert msgs == [DcRemoved(DC2)]  # DC1's page, read again, did not change
        n.cancel_scope.cancel()


async def test_the_connector_is_told_a_page_only_when_it_differs_from_what_it_holds(
    autojump_clock,
) -> None:
    """Full re-reads (lost signals, the grace period, dc_removed) of unchanged pages send
    nothing: at 10,000 entries each one made the connector re-evaluate everything and keep a
    second copy of the entries (benchmark 4: stacd 95 -> 102 MB a minute after start). A
    change is sent; so is a page that comes back after its DC was removed."""
    fake = FakeStafd()
    fake.listing = {DC1: ([DLPE], "3"), DC2: ([DLPE], "5")}
    fake.connected = {DC1, DC2}
    async with trio.open_nursery() as n:
        receive = await start(n, fake, grace=60)
        await fake.emit(StafdAppeared(":1.7"))
        assert await collect(receive) == [
            StafdAppeared(":1.7"), DcLogPages(DC1, (DLPE,)), DcLogPages(DC2, (DLPE,))
        ]  # fmt: skip
        await fake.emit(SignalsLost(5))
        await fake.emit(LogPagesChanged(DC2))
        await trio.sleep(61)
        assert await collect(receive) == []
        # the grace re-read lists the DCs and reads only the page whose GENCTR it did not know
        assert fake.calls == ["all", "all", "one", "list", "one"]
        await fake.emit(DcRemoved())  # nothing gone, no GENCTR moved: the listing alone
        assert await collect(receive) == [] and fake.calls[5:] == ["list"]
        fake.listing[DC2] = ([dlpe("vulcans")], "6")
        await fake.emit(DcRemoved())
        assert await collect(receive) == [DcLogPages(DC2, (dlpe("vulcans"),))]
        assert fake.calls[6:] == ["list", "one"]
        removed = fake.listing.pop(DC2)
        await fake.emit(DcRemoved())
        assert await collect(receive) == [DcRemoved(DC2)]
        fake.listing[DC2] = removed
        await fake.emit(LogPagesChanged(DC2))
        assert await collect(receive) == [DcLogPages(DC2, (dlpe("vulcans"),))]
        n.cancel_scope.cancel()


async def test_missing_dc_is_gone_only_after_grace(autojump_clock) -> None:
    fake = FakeStafd()
    fake.listing = {DC1: ([DLPE], "3"), DC2: ([DLPE], "5")}
    async with trio.open_nursery() as n:
        receive = await start(n, fake, grace=60)
        await fake.emit(StafdAppeared(":1.7"))
        await collect(receive)
        await fake.emit(StafdVanished())
        del fake.listing[DC2]  # e.g. removed from stafd.conf while stafd was restarting
        await fake.emit(StafdAppeared(":1.8"))
        assert DcRemoved(DC2) not in await collect(receive)
        await trio.sleep(59)
        assert await collect(receive) == []
        await trio.sleep(2)
        assert DcRemoved(DC2) in await collect(receive)
        n.cancel_scope.cancel()


async def test_failed_call_changes_nothing(autojump_clock) -> None:
    fake = FakeStafd()
    fake.listing = {DC1: ([DLPE], "3")}
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        fake.fail = True
        await fake.emit(StafdAppeared(":1.7"))
        await fake.emit(DcRemoved())
        assert await collect(receive) == [StafdAppeared(":1.7")]
        n.cancel_scope.cancel()


async def test_hostile_listing_is_filtered(autojump_clock) -> None:
    fake = FakeStafd()

    async def bad(detailed: bool) -> str:
        good = {"discovery-controller": DC1.as_dict(), "log-pages": [5, DLPE]}
        return json.dumps([1, {"discovery-controller": "x"}, good])

    fake.get_all_log_pages = bad  # type: ignore[method-assign]
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        await fake.emit(StafdAppeared(":1.7"))
        assert await collect(receive) == [StafdAppeared(":1.7"), DcLogPages(DC1, (DLPE,))]
        n.cancel_scope.cancel()


class TooLargeStafd(FakeStafd):
    """stafd whose cache no longer fits one reply: get_all_log_pages is refused by its cap."""

    async def get_all_log_pages(self, detailed: bool) -> str:
        from stas.dbus.common import ERR_LIMITS_EXCEEDED, DBusCallError

        self.calls.append("all")
        raise DBusCallError(ERR_LIMITS_EXCEEDED, "reply to get_all_log_pages would be 40 MiB")

    async def list_controllers(self, detailed: bool) -> list[dict]:
        self.calls.append("list")
        return [{**tid.as_dict(), "genctr": genctr} for tid, (_, genctr) in self.listing.items()]


async def test_a_cache_too_large_for_one_reply_is_read_dc_by_dc(autojump_clock) -> None:
    """stacd's start-up sync must not depend on one reply fitting stafd's size cap."""
    fake = TooLargeStafd()
    fake.listing = {DC1: ([DLPE], "3"), DC2: ([], "None")}
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        await fake.emit(StafdAppeared(":1.7"))
        msgs = await collect(receive)
        assert msgs == [StafdAppeared(":1.7"), DcLogPages(DC1, (DLPE,))]
        assert fake.calls == ["all", "list", "one", "one"]
        n.cancel_scope.cancel()


async def test_a_confirming_re_read_leaves_the_pages_of_unchanged_dcs_untouched(
    autojump_clock, monkeypatch
) -> None:
    """dc_removed and the grace period re-read stafd's listing: a DC whose GENCTR did not move
    keeps the tuple the connector holds, neither copied through parse_dlpes nor compared
    again (at 10,000 entries that was a 10,000-item pass per re-read); only the DC whose
    GENCTR moved is read and typed."""
    from stas.actors import stafd_client

    typed: list[int] = []  # entries typed per parse_dlpes call
    original = stafd_client.parse_dlpes

    def counting(items):
        out = original(items)
        typed.append(len(out))
        return out

    monkeypatch.setattr(stafd_client, "parse_dlpes", counting)
    big = [dlpe(f"nqn.sub{i}") for i in range(2000)]
    fake = FakeStafd()
    fake.listing = {DC1: (big, "3"), DC2: ([DLPE], "5")}
    fake.connected = {DC1, DC2}
    async with trio.open_nursery() as n:
        receive = await start(n, fake)
        await fake.emit(StafdAppeared(":1.7"))
        first = await collect(receive)
        assert [type(m).__name__ for m in first] == ["StafdAppeared", "DcLogPages", "DcLogPages"]
        typed.clear()
        fake.listing[DC2] = ([dlpe("vulcans")], "6")
        await fake.emit(DcRemoved())
        assert await collect(receive) == [DcLogPages(DC2, (dlpe("vulcans"),))]
        assert typed == [1]  # DC2's one new entry; none of DC1's 2,000
        await fake.emit(DcRemoved())
        assert await collect(receive) == [] and typed == [1]  # nothing moved: nothing typed
        n.cancel_scope.cancel()
