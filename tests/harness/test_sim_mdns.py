"""The simulator's mDNS announcement is visible to a real zeroconf browser over loopback.

Uses real time (mDNS probing takes ~1.7 s), bounded by trio.fail_after.
"""

from __future__ import annotations

import socket

import pytest
import trio
from nvmet_config import parse_nvmet_conf
from sim_mdns import SERVICE_TYPE, Announcement, announce, service_info
from sim_server import open_simulator
from zeroconf import IPVersion, ServiceBrowser, ServiceListener, Zeroconf


class _Listener(ServiceListener):
    """Forwards browser callbacks (zeroconf's thread) into trio events."""

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self.token = token
        self.added: list[str] = []
        self.removed: list[str] = []
        self.added_event = trio.Event()
        self.removed_event = trio.Event()

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.added.append(name)
        trio.from_thread.run_sync(self.added_event.set, trio_token=self.token)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.removed.append(name)
        trio.from_thread.run_sync(self.removed_event.set, trio_token=self.token)


def test_service_info_records() -> None:
    info = service_info(Announcement(port_id=3, traddr="::1", trsvcid=8009), host_label="h")
    assert info.name == "nvmet-sim-3._nvme-disc._tcp.local."
    assert info.port == 8009
    assert info.properties == {b"p": b"tcp", b"nqn": b"nqn.2014-08.org.nvmexpress.discovery"}
    assert info.addresses_by_version(IPVersion.V6Only) == [socket.inet_pton(socket.AF_INET6, "::1")]


def test_wildcard_address_advertises_loopback() -> None:
    info = service_info(Announcement(port_id=1, traddr="::", trsvcid=8009), host_label="h")
    assert sorted(info.parsed_addresses()) == ["127.0.0.1", "::1"]


@pytest.mark.skipif(not hasattr(socket, "IP_ADD_MEMBERSHIP"), reason="no multicast support")
async def test_browser_sees_announcement_and_goodbye() -> None:
    listener = _Listener(trio.lowlevel.current_trio_token())
    browser_zc = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    )
    try:
        browser = ServiceBrowser(browser_zc, SERVICE_TYPE, listener)
        with trio.fail_after(10):
            ann = Announcement(port_id=77, traddr="::1", trsvcid=48009)
            async with announce([ann]) as infos:
                name = infos[0].name
                while name not in listener.added:
                    await listener.added_event.wait()
                    listener.added_event = trio.Event()
                info = await trio.to_thread.run_sync(
                    lambda: browser_zc.get_service_info(SERVICE_TYPE, name, timeout=3000)
                )
                assert info is not None
                assert info.port == 48009
                assert info.properties[b"p"] == b"tcp"
                assert info.properties[b"nqn"] == b"nqn.2014-08.org.nvmexpress.discovery"
                assert "::1" in info.parsed_addresses()
            while name not in listener.removed:
                await listener.removed_event.wait()
                listener.removed_event = trio.Event()
        browser.cancel()
    finally:
        await trio.to_thread.run_sync(browser_zc.close)


async def test_simulator_announces_its_ephemeral_port() -> None:
    conf = parse_nvmet_conf(
        "{'ports': [{'id': 1, 'traddr': '::1', 'trsvcid': 8009, 'trtype': 'tcp'}],"
        " 'subsystems': []}"
    )
    listener = _Listener(trio.lowlevel.current_trio_token())
    browser_zc = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    )
    try:
        browser = ServiceBrowser(browser_zc, SERVICE_TYPE, listener)
        with trio.fail_after(10):
            async with open_simulator(conf, ephemeral=True, mdns=True) as sim:
                port = sim.endpoint(1)[1]
                ports: set[int] = set()
                while port not in ports:
                    await listener.added_event.wait()
                    listener.added_event = trio.Event()
                    for name in list(listener.added):
                        info = await trio.to_thread.run_sync(
                            lambda n=name: browser_zc.get_service_info(SERVICE_TYPE, n, 3000)
                        )
                        if info is not None and info.port is not None:
                            ports.add(info.port)
        browser.cancel()
    finally:
        await trio.to_thread.run_sync(browser_zc.close)
