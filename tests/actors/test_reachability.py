"""TCP reachability probe: exact retry ladder, log-once, real connects, interface lookup."""

import errno
import ipaddress
import itertools
import logging
import socket

import pytest
import trio

from stas.reachability import (
    DEFAULT_BACKOFF,
    best_interfaces,
    endpoint,
    local_interfaces_for,
    parse_if_inet6,
    tcp_connect,
    wait_reachable,
)


class FakeConnect:
    """Fails ``failures`` times (refused, or hangs when ``hang``), then succeeds."""

    def __init__(self, failures: int, hang: bool = False) -> None:
        self.failures = failures
        self.hang = hang
        self.calls: list[tuple[float, str, int, str]] = []

    async def __call__(self, traddr: str, port: int, iface: str) -> None:
        self.calls.append((trio.current_time(), traddr, port, iface))
        if len(self.calls) <= self.failures:
            if self.hang:
                await trio.sleep_forever()
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


async def test_default_ladder_with_ceiling(autojump_clock) -> None:
    fake = FakeConnect(failures=9)
    await wait_reachable("10.0.0.1", "8009", iface="eth0", connect=fake)
    times = [round(t) for t, *_ in fake.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == [2, 5, 10, 30, 60, 300, 600, 600, 600]
    assert DEFAULT_BACKOFF == (2, 5, 10, 30, 60, 300, 600)
    assert {c[1:] for c in fake.calls} == {("10.0.0.1", 8009, "eth0")}


async def test_success_first_time_does_not_sleep_or_log(autojump_clock, caplog) -> None:
    caplog.set_level(logging.DEBUG, "stas.reachability")
    fake = FakeConnect(failures=0)
    start = trio.current_time()
    await wait_reachable("10.0.0.1", 8009, connect=fake)
    assert trio.current_time() == start
    assert len(fake.calls) == 1
    assert caplog.records == []


async def test_first_failure_logged_once_at_info_and_recovery(autojump_clock, caplog) -> None:
    caplog.set_level(logging.INFO, "stas.reachability")
    await wait_reachable("fe80::1", 8009, iface="eth1", backoff=(1, 2), connect=FakeConnect(4))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.INFO,
            "Unable to verify TCP connectivity to [fe80::1]:8009 on eth1: "
            "[Errno 111] Connection refused; retrying in 1 s",
        ),
        (
            logging.INFO,
            "TCP connectivity to [fe80::1]:8009 on eth1 verified after 4 failed attempts",
        ),
    ]


async def test_hanging_connect_times_out_and_counts_as_failure(autojump_clock, caplog) -> None:
    caplog.set_level(logging.INFO, "stas.reachability")
    fake = FakeConnect(failures=2, hang=True)
    await wait_reachable("10.0.0.1", 8009, backoff=(5,), connect_timeout=3.0, connect=fake)
    assert [round(t) for t, *_ in fake.calls] == [0, 8, 16]  # 3 s timeout + 5 s backoff
    assert "timed out; retrying in 5 s" in caplog.records[0].getMessage()


async def test_cancellation_stops_the_ladder(autojump_clock) -> None:
    fake = FakeConnect(failures=10**6)
    with trio.move_on_after(100):
        await wait_reachable("10.0.0.1", 8009, connect=fake)
    assert len(fake.calls) == 5  # at 0, 2, 7, 17, 47 s


async def test_empty_ladder_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        await wait_reachable("10.0.0.1", 8009, backoff=())


def test_endpoint_text() -> None:
    assert endpoint("10.0.0.1", 8009) == "10.0.0.1:8009"
    assert endpoint("::1", "4420", "lo") == "[::1]:4420 on lo"


# --- the real connect on loopback (no timers involved) --------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_tcp_connect_real_listener(host: str) -> None:
    listeners = await trio.open_tcp_listeners(0, host=host)
    port = listeners[0].socket.getsockname()[1]
    async with listeners[0]:
        with trio.fail_after(5):
            await tcp_connect(host, port, "lo")  # SO_BINDTODEVICE(lo) when root, else unbound
            await wait_reachable(host, port, iface="", connect_timeout=2)


async def test_tcp_connect_refused() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # now nothing listens there
    with trio.fail_after(5), pytest.raises(ConnectionRefusedError):
        await tcp_connect("127.0.0.1", port, "")


# --- interface lookup ---------------------------------------------------------------------------

IF_INET6 = """\
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000211aafffe22bb33 02 40 20 80     eth0
20010db8000000000000000000000005 02 40 00 80     eth0
20010db8000000000000000000000006 03 40 00 80     eth1
garbage line
zz000000000000000000000000000001 01 80 10 80       lo
"""


def test_parse_if_inet6() -> None:
    assert parse_if_inet6(IF_INET6) == [
        ("lo", ipaddress.IPv6Network("::1/128")),
        ("eth0", ipaddress.IPv6Network("fe80::/64")),
        ("eth0", ipaddress.IPv6Network("2001:db8::/64")),
        ("eth1", ipaddress.IPv6Network("2001:db8::/64")),
    ]


def test_best_interfaces_longest_prefix_and_duplicates() -> None:
    nets = [
        *parse_if_inet6(IF_INET6),
        ("eth2", ipaddress.IPv4Network("10.0.0.0/8")),
        ("eth3", ipaddress.IPv4Network("10.1.0.0/16")),
    ]
    assert best_interfaces(ipaddress.ip_address("10.1.2.3"), nets) == ["eth3"]
    assert best_interfaces(ipaddress.ip_address("10.9.2.3"), nets) == ["eth2"]
    assert best_interfaces(ipaddress.ip_address("2001:db8::99"), nets) == ["eth0", "eth1"]
    assert best_interfaces(ipaddress.ip_address("192.0.2.1"), nets) == []


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", ["lo"]),
        ("127.5.6.7", ["lo"]),
        ("::ffff:127.0.0.1", ["lo"]),
        ("fe80::1%1", [socket.if_indextoname(1)]),
        ("fe80::1%eth7", ["eth7"]),
        ("fe80::1", []),  # ambiguous without a scope
        ("fe80::1%999999", []),  # no such interface index
    ],
)
def test_local_interfaces_for_this_machine(address: str, expected: list[str]) -> None:
    assert local_interfaces_for(address) == expected


def test_local_interfaces_for_ipv6_loopback() -> None:
    assert local_interfaces_for("::1") == ["lo"]  # via /proc/net/if_inet6, or the loopback rule
