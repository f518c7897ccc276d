"""resolve_traddr: IP literals, ip-family filtering, localhost without /etc/hosts, failures."""

from __future__ import annotations

import logging
import math

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from stas.resolve import first_answering, normalise_ip, resolve_traddr


def fixed(*addrs: str):
    calls: list[str] = []

    async def resolver(name: str):
        calls.append(name)
        return list(addrs)

    resolver.calls = calls  # type: ignore[attr-defined]
    return resolver


async def no_dns(name: str):
    raise OSError("no DNS here")


@pytest.mark.parametrize(
    ("traddr", "family", "expected"),
    [
        ("10.1.2.3", (4, 6), ["10.1.2.3"]),
        ("10.1.2.3", (6,), []),
        ("fd00::1", (4,), []),
        ("FD00:0::1", (6,), ["fd00::1"]),
        ("::ffff:10.1.2.3", (4,), ["10.1.2.3"]),
        ("::ffff:10.1.2.3", (6,), []),
    ],
)
async def test_ip_literals(traddr: str, family: tuple[int, ...], expected: list[str]) -> None:
    resolver = fixed("192.0.2.1")
    assert await resolve_traddr(traddr, ip_family=family, resolver=resolver) == expected
    assert resolver.calls == []  # literals never hit DNS


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST.", "stas.localhost"])
async def test_localhost_is_both_loopbacks_without_a_hosts_entry(name: str) -> None:
    assert await resolve_traddr(name, ip_family=(4, 6), resolver=no_dns) == ["127.0.0.1", "::1"]
    assert await resolve_traddr(name, ip_family=(6,), resolver=no_dns) == ["::1"]
    assert await resolve_traddr(name, ip_family=(4,), resolver=no_dns) == ["127.0.0.1"]


async def test_localhost_needs_no_resolver_at_all() -> None:
    assert await resolve_traddr("localhost", ip_family=(6,)) == ["::1"]


async def test_hostname_filtered_ordered_and_deduplicated() -> None:
    resolver = fixed(
        "fd00::5", "10.0.0.5", "fd00::5", "::ffff:10.0.0.5", "fe80::1%eth0", "10.0.0.6"
    )
    got = await resolve_traddr("array.example", ip_family=(4, 6), resolver=resolver)
    assert got == ["10.0.0.5", "10.0.0.6", "fd00::5", "fe80::1"]
    assert await resolve_traddr("array.example", ip_family=(6,), resolver=resolver) == [
        "fd00::5",
        "fe80::1",
    ]


async def test_failure_is_empty_and_warned_once_per_name(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="stas.resolve")
    warned: set[str] = set()
    for _ in range(3):
        got = await resolve_traddr("nope.invalid", ip_family=(4, 6), resolver=no_dns, warned=warned)
        assert got == []
    assert [r.getMessage() for r in caplog.records] == [
        "cannot resolve 'nope.invalid': no DNS here"
    ]


async def test_idna_invalid_and_empty_names_give_nothing() -> None:
    assert await resolve_traddr("a" * 64 + ".example", ip_family=(4, 6)) == []
    assert await resolve_traddr("", ip_family=(4, 6), resolver=no_dns) == []


async def test_slow_resolver_times_out(autojump_clock) -> None:
    async def hang(name: str):
        await trio.sleep(math.inf)

    start = trio.current_time()
    assert await resolve_traddr("slow.example", ip_family=(4, 6), resolver=hang) == []
    assert trio.current_time() - start == pytest.approx(10.0)


async def test_first_answering_tries_each_in_order() -> None:
    tried: list[str] = []

    async def probe(addr: str, port: int, iface: str) -> None:
        tried.append(addr)
        if addr != "::1":
            raise ConnectionRefusedError("refused")

    assert await first_answering(["127.0.0.1", "::1", "10.0.0.1"], 8009, "", probe) == "::1"
    assert tried == ["127.0.0.1", "::1"]
    assert await first_answering(["127.0.0.1"], 8009, "", probe) is None


@given(st.ip_addresses())
def test_normalise_ip_round_trips_every_address(ip) -> None:
    family, text = normalise_ip(str(ip))  # type: ignore[misc]
    mapped = getattr(ip, "ipv4_mapped", None)
    assert (family, text) == ((4, str(mapped)) if mapped else (ip.version, str(ip)))


@given(st.text(max_size=60))
def test_normalise_ip_never_raises(text: str) -> None:
    got = normalise_ip(text)
    assert got is None or got[0] in (4, 6)
