"""mDNS browser actor: candidate bookkeeping (fake resolver, MockClock) and real zeroconf on lo."""

from __future__ import annotations

import functools
import logging
import os
import random
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing
from sim_mdns import Announcement, announce
from trio_util import AsyncValue
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from stas.actors.mdns import MAX_SERVICES, MdnsBrowser, Resolved, printable, run_mdns_browser
from stas.mdns_txt import encode_txt_rdata
from stas.messages import WELL_KNOWN_DISC_NQN, MdnsServiceDown, MdnsServiceUp, Tid
from stas.messages_stafd import MdnsCandidate, MdnsState
from stas.reachability import wait_reachable
from tests.helpers.channels import pending

STYPE = "_nvme-disc._tcp.local."
UDP_STYPE = "_nvme-disc._udp.local."
NQN = "nqn.1988-11.com.dell:SFSS:2:20220208134025e8"


def name_of(label: str) -> str:
    return f"{label}.{STYPE}"


class World:
    """What the fake resolver answers: service name -> Resolved."""

    def __init__(self) -> None:
        self.services: dict[str, Resolved] = {}
        self.resolves: list[str] = []

    async def resolve(self, stype: str, name: str) -> Resolved | None:
        self.resolves.append(name)
        return self.services.get(name)


class Probe:
    """Reachable at once unless the address is blocked; records calls and cancellations."""

    def __init__(self) -> None:
        self.blocked: dict[str, trio.Event] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.cancelled: list[str] = []

    def block(self, traddr: str) -> None:
        self.blocked[traddr] = trio.Event()

    async def __call__(self, traddr: str, trsvcid: str, *, iface: str) -> None:
        self.calls.append((traddr, trsvcid, iface))
        if traddr in self.blocked:
            try:
                await self.blocked[traddr].wait()
            except trio.Cancelled:
                self.cancelled.append(traddr)
                raise


class Harness:
    def __init__(self, browser: MdnsBrowser, recv: trio.MemoryReceiveChannel) -> None:
        self.browser = browser
        self.recv = recv

    async def messages(self) -> list[object]:
        await trio.testing.wait_all_tasks_blocked()
        return pending(self.recv)


@asynccontextmanager
async def running(
    world: World, probe: Probe, ifaces: Sequence[str] = ("eth0",), **kw: object
) -> AsyncIterator[Harness]:
    send, recv = trio.open_memory_channel[object](MAX_SERVICES + 100)
    browser = MdnsBrowser(
        send, world.resolve, probe=probe, iface_lookup=lambda _a: list(ifaces), **kw
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(browser.serve)
        yield Harness(browser, recv)
        nursery.cancel_scope.cancel()


def publish(
    h: Harness, world: World, label: str, *, txt: Sequence[bytes] = (b"p=tcp",),
    addresses: Sequence[str] = ("10.0.0.5",), port: int = 8009,
) -> None:  # fmt: skip
    name = name_of(label)
    world.services[name] = Resolved(STYPE, name, port, encode_txt_rdata(txt), tuple(addresses))
    h.browser.inbox.post_change(STYPE, name, False)


def withdraw(h: Harness, world: World, label: str) -> None:
    world.services.pop(name_of(label), None)
    h.browser.inbox.post_change(STYPE, name_of(label), True)


def tid(traddr: str = "10.0.0.5", **kw: str) -> Tid:
    args = {"transport": "tcp", "trsvcid": "8009", "subsysnqn": WELL_KNOWN_DISC_NQN,
            "host_iface": "eth0"} | kw  # fmt: skip
    return Tid(traddr=traddr, **args)


def key(label: str, traddr: str = "10.0.0.5", iface: str = "eth0") -> str:
    return f"{iface}|{name_of(label)}|{traddr}"


# --- bookkeeping with a fake resolver ----------------------------------------------------------


async def test_up_update_down(autojump_clock) -> None:
    world, probe = World(), Probe()
    async with running(world, probe) as h:
        publish(h, world, "cdc", txt=[b"p=tcp", b"NQN=" + NQN.encode()])
        assert await h.messages() == [MdnsServiceUp(key("cdc"), tid(subsysnqn=NQN))]
        assert probe.calls == [("10.0.0.5", "8009", "eth0")]

        publish(h, world, "cdc", txt=[b"p=tcp", b"NQN=" + NQN.encode()])  # same content
        assert await h.messages() == []

        publish(h, world, "cdc", txt=[b"p=tcp"], port=4420)  # changed: withdraw, then new
        assert await h.messages() == [
            MdnsServiceDown(key("cdc")),
            MdnsServiceUp(key("cdc"), tid(trsvcid="4420")),
        ]
        withdraw(h, world, "cdc")
        assert await h.messages() == [MdnsServiceDown(key("cdc"))]
        assert h.browser.snapshot()["services"] == {}


async def test_every_address_is_a_candidate(autojump_clock) -> None:
    world, probe = World(), Probe()
    async with running(world, probe) as h:
        publish(h, world, "dual", addresses=["10.0.0.5", "2001:db8::5", "::ffff:10.0.0.6"])
        msgs = await h.messages()
        assert sorted(m.tid.traddr for m in msgs) == ["10.0.0.5", "10.0.0.6", "2001:db8::5"]
        assert {m.key for m in msgs} == {
            key("dual"), key("dual", "2001:db8::5"), key("dual", "10.0.0.6")
        }  # fmt: skip


async def test_unreachable_reports_nothing_until_probe_succeeds(autojump_clock) -> None:
    world, probe = World(), Probe()
    probe.block("10.0.0.5")
    async with running(world, probe) as h:
        publish(h, world, "late")
        assert await h.messages() == []
        services = h.browser.snapshot()["services"]
        assert services[key("late")]["reachable"] is False
        probe.blocked["10.0.0.5"].set()
        assert await h.messages() == [MdnsServiceUp(key("late"), tid())]
        assert h.browser.snapshot()["services"][key("late")]["reachable"] is True


async def test_goodbye_while_probing_cancels_probe_and_sends_nothing(autojump_clock) -> None:
    world, probe = World(), Probe()
    probe.block("10.0.0.5")
    async with running(world, probe) as h:
        publish(h, world, "flaky")
        await h.messages()
        withdraw(h, world, "flaky")
        assert await h.messages() == []
        assert probe.cancelled == ["10.0.0.5"]


async def test_bad_protocol_ignored_and_logged_once(autojump_clock, caplog) -> None:
    caplog.set_level(logging.INFO, "stas.mdns")
    world, probe = World(), Probe()
    async with running(world, probe) as h:
        for _ in range(3):
            publish(h, world, "shop", txt=[b"p=walmart"])
            assert await h.messages() == []
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert [r.getMessage() for r in errors] == [
            f"mDNS service {name_of('shop')} ignored: unsupported protocol p='walmart'"
            " (expected tcp, roce, iwarp or rdma)"
        ]
        assert probe.calls == []


async def test_valid_service_turning_invalid_is_withdrawn(autojump_clock) -> None:
    world, probe = World(), Probe()
    async with running(world, probe) as h:
        publish(h, world, "cdc")
        assert len(await h.messages()) == 1
        publish(h, world, "cdc", txt=[b"p=tcp", b"nqn=nqn.x:a,hostnqn=evil"])
        assert await h.messages() == [MdnsServiceDown(key("cdc"))]


async def test_hostile_rdata_is_rejected_not_raised(autojump_clock, caplog) -> None:
    world, probe = World(), Probe()
    async with running(world, probe) as h:
        name = name_of("evil\n")
        world.services[name] = Resolved(STYPE, name, 8009, b"\xffp=tcp", ("10.0.0.5",))
        h.browser.inbox.post_change(STYPE, name, False)
        assert await h.messages() == []
    (record,) = [r for r in caplog.records if r.name == "stas.mdns"]
    assert record.getMessage() == (
        "mDNS service evil\\x0a._nvme-disc._tcp.local. ignored: "
        "TXT string at offset 0 claims 255 bytes, 5 remain"
    )


async def test_rdma_needs_no_probe_and_no_iface(autojump_clock) -> None:
    world, probe = World(), Probe()
    async with running(world, probe) as h:
        publish(h, world, "roce", txt=[b"p=roce"], port=4420)
        assert await h.messages() == [
            MdnsServiceUp(key("roce"), tid(transport="rdma", trsvcid="4420", host_iface=""))
        ]
        assert probe.calls == []


async def test_address_on_two_interfaces_logged_once(autojump_clock, caplog) -> None:
    world, probe = World(), Probe()
    async with running(world, probe, ifaces=("eth0", "eth1")) as h:
        publish(h, world, "dup")
        publish(h, world, "dup", port=4420)
        msgs = await h.messages()
        assert msgs[-1] == MdnsServiceUp(key("dup"), tid(trsvcid="4420"))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"mDNS service {name_of('dup')} has address 10.0.0.5 on several interfaces"
        " (eth0, eth1); check the network configuration, using eth0"
    ]


async def test_without_tp8013_the_well_known_nqn_is_used(autojump_clock) -> None:
    world, probe = World(), Probe()
    async with running(world, probe, kernel_supports_tp8013=False) as h:
        publish(h, world, "cdc", txt=[b"p=tcp", b"nqn=" + NQN.encode()])
        assert await h.messages() == [MdnsServiceUp(key("cdc"), tid())]


async def test_service_count_is_capped(autojump_clock, caplog) -> None:
    world, probe = World(), Probe()
    async with running(world, probe) as h:
        for i in range(MAX_SERVICES + 5):
            publish(h, world, f"s{i}")
        msgs = await h.messages()
        assert len(msgs) == MAX_SERVICES
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [f"mDNS service announcements beyond {MAX_SERVICES} ignored"]


async def test_changes_are_coalesced(autojump_clock) -> None:
    world, probe = World(), Probe()
    async with running(world, probe) as h:
        for _ in range(50):  # a burst before the actor runs: one resolve
            publish(h, world, "chatty")
        assert await h.messages() == [MdnsServiceUp(key("chatty"), tid())]
        assert world.resolves == [name_of("chatty")]


def test_printable_names() -> None:
    assert printable("a\nb\\c\x00") == "a\\x0ab\\x5cc\\x00"
    assert printable("Café 2") == "Café 2"


# --- real zeroconf over loopback -------------------------------------------------------------
# Other processes on this machine (other test runs, the simulator) may announce on lo too, so
# every name here is unique and messages about foreign services are skipped.


def unique(label: str) -> str:
    return f"{label}-{os.getpid()}-{secrets.token_hex(3)}"


async def receive_ours(recv: trio.MemoryReceiveChannel, label: str) -> object:
    while True:
        msg = await recv.receive()
        if f"|{name_of(label)}|" in msg.key:
            return msg


def drain_ours(recv: trio.MemoryReceiveChannel, label: str) -> list[object]:
    return [msg for msg in pending(recv) if f"|{name_of(label)}|" in msg.key]


def _register(props: list[tuple[str, dict[str, str], int]]) -> tuple[Zeroconf, list[ServiceInfo]]:
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    infos = []
    for label, txt, port in props:
        info = ServiceInfo(STYPE, name_of(label), port=port, properties=txt,
                           server=f"{label}.local.", parsed_addresses=["127.0.0.1"])  # fmt: skip
        zc.register_service(info, allow_name_change=False)
        infos.append(info)
    return zc, infos


def _unregister(zc: Zeroconf, infos: list[ServiceInfo]) -> None:
    try:
        for info in infos:
            zc.unregister_service(info)
    finally:
        zc.close()


async def _free_port() -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    return port


async def test_real_zeroconf_up_and_goodbye() -> None:
    v4 = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = v4.socket.getsockname()[1]
    v6 = (await trio.open_tcp_listeners(port, host="::1"))[0]
    send, recv = trio.open_memory_channel[object](100)
    port_id = random.randrange(10**6, 10**9)
    label = f"nvmet-sim-{port_id}"
    with trio.fail_after(15):
        async with v4, v6, trio.open_nursery() as nursery:
            start = functools.partial(run_mdns_browser, send, interfaces=["127.0.0.1"])
            browser = await nursery.start(start)
            # a wildcard traddr announces both loopback addresses (A and AAAA records)
            async with announce([Announcement(port_id, "0.0.0.0", port, NQN)]):
                ups = {await receive_ours(recv, label) for _ in range(2)}
                name = name_of(label)
                assert ups == {
                    MdnsServiceUp(
                        f"lo|{name}|{ip}",
                        tid(ip, trsvcid=str(port), subsysnqn=NQN, host_iface="lo"),
                    )
                    for ip in ("127.0.0.1", "::1")
                }
                snap = browser.snapshot()
                assert snap["service types"] == [STYPE, UDP_STYPE]
                assert snap["services"][f"lo|{name}|::1"] == {
                    "transport": "tcp",
                    "traddr": "::1",
                    "trsvcid": str(port),
                    "host-iface": "lo",
                    "subsysnqn": NQN,
                    "reachable": True,
                }
            downs = {await receive_ours(recv, label) for _ in range(2)}
            assert downs == {MdnsServiceDown(m.key) for m in ups}
            assert not any(f"|{name}|" in k for k in browser.snapshot()["services"])
            nursery.cancel_scope.cancel()


async def test_real_zeroconf_bad_protocol_and_late_listener(caplog) -> None:
    caplog.set_level(logging.INFO, "stas.mdns")
    late_port, shop_port = await _free_port(), await _free_port()
    shop, late = unique("shop"), unique("late")
    late_key = f"lo|{name_of(late)}|127.0.0.1"
    send, recv = trio.open_memory_channel[object](100)
    fast_probe = functools.partial(wait_reachable, backoff=(0.1,), connect_timeout=1)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            start = functools.partial(
                run_mdns_browser, send, interfaces=["127.0.0.1"], probe=fast_probe
            )
            browser = await nursery.start(start)
            services = [(shop, {"p": "walmart"}, shop_port), (late, {"p": "tcp"}, late_port)]
            zc, infos = await trio.to_thread.run_sync(_register, services)
            try:
                while late_key not in browser.snapshot()["services"]:
                    await trio.sleep(0.05)  # real network: wait for the resolve to land
                await trio.sleep(0.5)  # several refused probes
                assert drain_ours(recv, late) == []
                async with (await trio.open_tcp_listeners(late_port, host="127.0.0.1"))[0]:
                    msg = await receive_ours(recv, late)
                assert msg == MdnsServiceUp(late_key, tid("127.0.0.1", trsvcid=str(late_port),
                                                           host_iface="lo"))  # fmt: skip
                assert not any(shop in k for k in browser.snapshot()["services"])
                assert drain_ours(recv, shop) == []
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_unregister, zc, infos)
            assert await receive_ours(recv, late) == MdnsServiceDown(late_key)
            nursery.cancel_scope.cancel()
    logged = [r for r in caplog.records if shop in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in logged] == [
        (
            logging.ERROR,
            f"mDNS service {name_of(shop)} ignored: unsupported protocol p='walmart'"
            " (expected tcp, roce, iwarp or rdma)",
        )
    ]


async def test_cancellation_closes_zeroconf() -> None:
    made: list[Zeroconf] = []
    closed: list[bool] = []

    def factory(interfaces: list[str]) -> Zeroconf:
        zc = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        real_close = zc.close

        def close() -> None:
            real_close()
            closed.append(True)

        zc.close = close  # type: ignore[method-assign]
        made.append(zc)
        return zc

    send, _recv = trio.open_memory_channel[object](100)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            start = functools.partial(
                run_mdns_browser, send, interfaces=["127.0.0.1"], zeroconf_factory=factory
            )
            await nursery.start(start)
            nursery.cancel_scope.cancel()
    assert len(made) == 1
    assert closed == [True]
    assert made[0].done  # zeroconf's own "closed" flag


async def test_real_zeroconf_udp_service_type_is_browsed_too() -> None:
    """Upstream browses ``_nvme-disc._udp`` as well; a DC announced there is found."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    label = unique("udp")
    name = f"{label}.{UDP_STYPE}"
    send, recv = trio.open_memory_channel[object](100)

    def register() -> tuple[Zeroconf, list[ServiceInfo]]:
        zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        info = ServiceInfo(UDP_STYPE, name, port=port, properties={"p": "tcp"},
                           server=f"{label}.local.", parsed_addresses=["127.0.0.1"])  # fmt: skip
        zc.register_service(info, allow_name_change=False)
        return zc, [info]

    with trio.fail_after(15):
        async with listener, trio.open_nursery() as nursery:
            await nursery.start(functools.partial(run_mdns_browser, send, interfaces=["127.0.0.1"]))
            zc, infos = await trio.to_thread.run_sync(register)
            try:
                while True:
                    msg = await recv.receive()
                    if f"|{name}|" in msg.key:
                        break
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(_unregister, zc, infos)
            assert msg == MdnsServiceUp(
                f"lo|{name}|127.0.0.1", tid("127.0.0.1", trsvcid=str(port), host_iface="lo")
            )
            nursery.cancel_scope.cancel()


# --- the browser's state is published as an immutable value (issue 10) -------------------------


async def test_state_is_published_as_a_frozen_value_and_cleared_when_stopped(
    autojump_clock,
) -> None:
    world, probe = World(), Probe()
    published = AsyncValue(MdnsState())
    async with running(world, probe, published=published) as h:
        assert h.browser.published is published
        publish(h, world, "cdc")
        await h.messages()
        first = published.value
        assert first == MdnsState(
            tuple(h.browser.service_types), (MdnsCandidate(key("cdc"), tid(), True),)
        )
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            first.candidates = ()  # type: ignore[misc]
        withdraw(h, world, "cdc")
        assert await h.messages() == [MdnsServiceDown(key("cdc"))]
        assert published.value.candidates == () and first.candidates != ()  # a value, not a view
        publish(h, world, "dc2", addresses=("10.0.0.6",))
        await published.wait_value(lambda s: any(c.reachable for c in s.candidates))
        assert h.browser.snapshot()["services"][key("dc2", "10.0.0.6")]["reachable"] is True
    # the actor stopped (zeroconf disabled): process_info shows nothing stale
    assert published.value.candidates == ()
    assert h.browser.snapshot() == {"service types": list(h.browser.service_types), "services": {}}
