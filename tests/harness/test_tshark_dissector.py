"""An independent decoder agrees with us: Wireshark's NVMe/TCP dissector reads a captured
host <-> simulator conversation (digests off and on) without a malformed packet, and checks
our CRC32C digests itself."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import trio
from nvmet_config import parse_nvmet_conf
from sim_server import open_simulator

from stas.nvme.host_ops import HostIdentity
from stas.nvme.session import DiscoverySession, SessionOptions

pytestmark = [
    pytest.mark.tshark,
    pytest.mark.skipif(
        shutil.which("tshark") is None, reason="tshark not installed (Debian: tshark)"
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="capturing on lo needs root"),
]
CONF = parse_nvmet_conf(
    "{'ports': [{'id': 1, 'traddr': '::1', 'trsvcid': 8009, 'trtype': 'tcp'}],"
    " 'subsystems': [{'subsysnqn': 'klingons', 'port': 1, 'namespaces': [1]},"
    " {'subsysnqn': 'starfleet', 'port': 1, 'namespaces': [1]}]}"
)
HOST = HostIdentity(
    hostnqn="nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10",
    hostid=bytes(range(16)),
)
# PDU types: ICReq 0, ICResp 1, CapsuleCmd 4, CapsuleResp 5, C2HData 7
EXPECTED_TYPES = {0, 1, 4, 5, 7}


async def conversation(
    port_box: list[int], ready: trio.Event, captured: trio.Event, digests: bool
) -> None:
    async with open_simulator(CONF, ephemeral=True, dctype="ddc") as sim:
        host, port = sim.endpoint(1)
        port_box.append(port)
        ready.set()
        await captured.wait()
        opts = SessionOptions(persistent=True, hdgst=digests, ddgst=digests, kato_ms=2000)
        async with DiscoverySession.open(host, port, host=HOST, options=opts) as session:
            aens = session.aens()
            await session.get_log_page()
            await sim.unlink(1, "klingons")
            with trio.fail_after(5):
                await aens.__anext__()
            await session.get_log_page()
            await trio.sleep(1.2)  # one Keep Alive at KATO/2


def capture(tmp: Path, digests: bool) -> tuple[Path, int]:
    pcap = tmp / f"conv-{digests}.pcapng"
    port_box: list[int] = []

    async def main() -> None:
        ready, captured = trio.Event(), trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conversation, port_box, ready, captured, digests)
            await ready.wait()
            proc = await trio.lowlevel.open_process(
                ["tshark", "-q", "-i", "lo", "-f", f"tcp port {port_box[0]}", "-w", str(pcap)],
                stderr=subprocess.PIPE,
            )
            seen = b""
            with trio.fail_after(15):
                while b"Capturing on" not in seen:
                    seen += await proc.stderr.receive_some(1024)
            await trio.sleep(0.3)  # the capture filter is live shortly after the banner
            captured.set()
        await trio.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            await proc.wait()

    trio.run(main)
    return pcap, port_box[0]


def tshark_fields(pcap: Path, port: int, field: str, *extra: str) -> list[str]:
    """Every value of ``field`` (all PDUs of every frame: several PDUs share a TCP segment)."""
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-d",
            f"tcp.port=={port},nvme-tcp",
            "-o",
            "nvme-tcp.check_hdgst:TRUE",
            "-o",
            "nvme-tcp.check_ddgst:TRUE",
            *extra,
            "-T",
            "fields",
            "-e",
            field,
            "-E",
            "aggregator=,",
            "-E",
            "occurrence=a",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [v for line in out.stdout.splitlines() for v in line.split(",") if v]


@pytest.mark.parametrize("digests", [False, True], ids=["plain", "digests"])
def test_wireshark_decodes_every_pdu(tmp_path: Path, digests: bool) -> None:
    pcap, port = capture(tmp_path, digests)
    types = [int(t) for t in tshark_fields(pcap, port, "nvme-tcp.type")]
    assert set(types) >= EXPECTED_TYPES, f"PDU types seen by Wireshark: {sorted(set(types))}"
    assert types.count(4) >= 15  # connect, properties, identify, DIM, log pages, AER, keep alive
    assert tshark_fields(pcap, port, "frame.number", "-Y", "_ws.malformed") == []
    bad = tshark_fields(
        pcap, port, "_ws.expert.message", "-Y", "nvme-tcp && _ws.expert.severity >= warning"
    )
    assert bad == [], bad
    if digests:
        statuses = tshark_fields(pcap, port, "nvme-tcp.hdgst.status")
        statuses += tshark_fields(pcap, port, "nvme-tcp.ddgst.status")
        assert statuses, "Wireshark saw no digests"
        assert set(statuses) == {"1"}, f"digest status values (1 = good): {set(statuses)}"
