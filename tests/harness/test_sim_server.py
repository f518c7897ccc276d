"""The Trio simulator over real loopback TCP (ephemeral ports on ::1), with a tiny host."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import simulator
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from nvmet_config import parse_nvmet_conf
from sim_faults import FaultError, Faults, parse_faults
from sim_model import WELL_KNOWN_DISCOVERY_NQN
from sim_server import Simulator, SimulatorError, open_simulator

from stas.nvme import commands as cmd
from stas.nvme.commands import (
    AEC_DISCOVERY_LOG_CHANGE,
    AEN_DISCOVERY_LOG_CHANGED,
    CC_ENABLE,
    LSP_PLEO,
    ConnectData,
    Cqe,
    FeatureId,
    LogPageId,
    Sqe,
)
from stas.nvme.connection import Completion, Established, HostConnection, Terminated
from stas.nvme.errors import ProtocolError
from stas.nvme.logpage import DiscoveryLogPage
from tests.helpers.entries import HOSTNQN

CONF = parse_nvmet_conf(
    """{
    'ports': [{'id': 1, 'traddr': '::1', 'trsvcid': 8009, 'trtype': 'tcp'}],
    'subsystems': [
        {'subsysnqn': 'klingons', 'port': 1, 'namespaces': [1]},
        {'subsysnqn': 'starfleet', 'port': 1, 'namespaces': [1]},
    ],
}"""
)


def one_port_conf(port: int) -> str:
    return (
        "{'ports': [{'id': 1, 'traddr': '::1', 'trsvcid': " + str(port) + ", 'trtype': 'tcp'}],"
        " 'subsystems': []}"
    )


class Closed(Exception):
    """The simulator closed the connection."""


class Client:
    """Minimal discovery host: HostConnection over a trio socket stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = HostConnection()
        self.done: dict[int, Completion] = {}

    @classmethod
    async def open(cls, sim: Simulator, port_id: int = 1) -> Client:
        host, port = sim.endpoint(port_id)
        client = cls(await trio.open_tcp_stream(host, port))
        await client.stream.send_all(client.conn.start())
        while client.conn.params is None:
            await client._pump()
        return client

    async def _pump(self) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            raise Closed
        for event in self.conn.receive(data):
            if isinstance(event, Completion):
                self.done[event.cid] = event
            elif isinstance(event, Terminated):
                raise Closed(event.reason)
            else:
                assert isinstance(event, Established)

    async def submit(self, sqe: Sqe, *, data: bytes = b"", read_len: int = 0) -> int:
        cid, wire = self.conn.send_command(sqe.encode(), data=data, read_len=read_len)
        await self.stream.send_all(wire)
        return cid

    async def wait(self, cid: int) -> tuple[Cqe, bytes]:
        while cid not in self.done:
            await self._pump()
        done = self.done.pop(cid)
        return Cqe.decode(done.cqe), done.data

    async def run(self, sqe: Sqe, *, data: bytes = b"", read_len: int = 0) -> tuple[Cqe, bytes]:
        return await self.wait(await self.submit(sqe, data=data, read_len=read_len))

    async def ready(self, *, kato_ms: int = 30000) -> None:
        data = ConnectData(bytes(16), 0xFFFF, WELL_KNOWN_DISCOVERY_NQN, HOSTNQN).encode()
        assert (await self.run(cmd.connect(kato_ms=kato_ms), data=data))[0].ok
        assert (await self.run(cmd.property_set(0x14, CC_ENABLE)))[0].ok

    async def log_page(self, *, lsp: int = 0) -> bytes:
        sqe = cmd.get_log_page(LogPageId.DISCOVERY, offset=0, length=8192, lsp=lsp)
        cqe, data = await self.run(sqe, read_len=8192)
        assert cqe.ok
        return data

    async def expect_closed(self) -> None:
        with pytest.raises(Closed):
            while True:
                await self._pump()


async def test_log_page_and_aen_after_unlink() -> None:
    async with open_simulator(CONF, ephemeral=True) as sim:
        host, port = sim.endpoint(1)
        assert host == "::1" and port != 8009
        client = await Client.open(sim)
        await client.ready()
        page = DiscoveryLogPage.decode(await client.log_page(lsp=LSP_PLEO))
        assert [e.subnqn for e in page.entries] == ["klingons", "starfleet"]
        assert {e.trsvcid for e in page.entries} == {str(port)}  # advertises the real port
        await client.run(cmd.set_features(FeatureId.ASYNC_EVENT_CONFIG, AEC_DISCOVERY_LOG_CHANGE))
        aer = await client.submit(cmd.async_event_request())
        assert sim.connections == 1
        await sim.unlink(1, "klingons")
        with trio.fail_after(5):
            cqe, _ = await client.wait(aer)
        assert cqe.dw0 == AEN_DISCOVERY_LOG_CHANGED
        page = DiscoveryLogPage.decode(await client.log_page(lsp=LSP_PLEO))
        assert [e.subnqn for e in page.entries] == ["starfleet"]
        assert page.genctr == 2
        await client.stream.aclose()


async def test_kato_expiry_closes_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(CONF, ephemeral=True) as sim:
        client = await Client.open(sim)
        await client.ready(kato_ms=2000)
        for _ in range(4):  # keep-alives at KATO/2 keep it open past the KATO
            await trio.sleep(1)
            assert (await client.run(cmd.keep_alive()))[0].ok
        start = trio.current_time()
        await client.expect_closed()
        assert 1.9 <= trio.current_time() - start <= 2.1
        await trio.sleep(0.01)
        assert sim.connections == 0


async def test_control_socket_from_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "sim.sock")
    async with open_simulator(CONF, ephemeral=True, control_path=path) as sim:
        rc = await trio.to_thread.run_sync(
            simulator.main, ["unlink", "-p", "1", "-s", "klingons", "--control", path]
        )
        assert rc == 0
        assert sim.model.linked(1) == {"starfleet"}
        assert "unlinked klingons from port 1 (GENCTR 2)" in capsys.readouterr().out
        assert (
            await trio.to_thread.run_sync(
                simulator.main, ["link", "-p", "1", "-s", "klingons", "--control", path]
            )
            == 0
        )
        assert sim.model.linked(1) == {"klingons", "starfleet"}
        rc = await trio.to_thread.run_sync(
            simulator.main, ["unlink", "-p", "1", "-s", "borg", "--control", path]
        )
        assert rc == 1
        assert capsys.readouterr().err.strip() == "simulator.py: unknown subsystem 'borg'"
        assert await trio.to_thread.run_sync(simulator.main, ["ls", "--control", path]) == 0
        assert '"klingons"' in capsys.readouterr().out
    assert not Path(path).exists()  # removed on exit


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "none.sock")
    assert simulator.main(["ls", "--control", missing]) == 1
    assert capsys.readouterr().err == f"simulator.py: no simulator running at {missing}\n"
    assert simulator.main(["serve", "-f", str(tmp_path / "nope.conf")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.conf" in err
    assert simulator.main(["serve", "-f", "x", "--fault", "explode=1"]) == 1
    assert "unknown fault 'explode'" in capsys.readouterr().err


def test_cli_address_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as busy:
        busy.bind(("::1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        conf = tmp_path / "nvmet.conf"
        conf.write_text(one_port_conf(port))
        rc = simulator.main(["serve", "-f", str(conf), "--control", str(tmp_path / "c.sock")])
    assert rc == 1
    assert capsys.readouterr().err == (
        f"simulator.py: cannot listen on [::1]:{port} (port 1): Address already in use\n"
    )


async def test_address_in_use_raises_simulator_error() -> None:
    async with open_simulator(CONF, ephemeral=True) as sim:
        port = sim.endpoint(1)[1]
        taken = parse_nvmet_conf(one_port_conf(port))
        with pytest.raises(SimulatorError, match=r"cannot listen on \[::1\]:\d+ \(port 1\)"):
            async with open_simulator(taken):
                pass


def test_parse_faults() -> None:
    faults = parse_faults(["drop-after=5", "delay=0.2", "refuse", "aen-storm=3", "corrupt"])
    assert faults == Faults(
        refuse=True, drop_after_commands=5, delay_s=0.2, aen_storm=3, corrupt_log_page=True
    )
    with pytest.raises(FaultError, match="drop-after='x': not an integer"):
        parse_faults(["drop-after=x"])
    with pytest.raises(FaultError, match="needs a value"):
        parse_faults(["delay"])
    with pytest.raises(FaultError, match="must be >= 0"):
        parse_faults(["genctr-bump=-1"])


async def test_fault_refuse() -> None:
    async with open_simulator(CONF, ephemeral=True, faults=Faults(refuse=True)) as sim:
        host, port = sim.endpoint(1)
        stream = await trio.open_tcp_stream(host, port)
        with trio.fail_after(5):
            assert await stream.receive_some(100) == b""
        await stream.aclose()
        sim.set_faults(Faults())
        client = await Client.open(sim)  # healthy again
        await client.ready()


async def test_fault_drop_after_commands() -> None:
    async with open_simulator(CONF, ephemeral=True, faults=Faults(drop_after_commands=3)) as sim:
        client = await Client.open(sim)
        await client.ready()  # commands 1 and 2
        assert (await client.run(cmd.keep_alive()))[0].ok  # command 3 is still answered
        with trio.fail_after(5):
            await client.expect_closed()


async def test_fault_delay(autojump_clock: trio.testing.MockClock) -> None:
    async with open_simulator(CONF, ephemeral=True, faults=Faults(delay_s=0.5)) as sim:
        client = await Client.open(sim)
        start = trio.current_time()
        await client.ready()
        assert trio.current_time() - start >= 1.0  # two commands, 0.5 s each


async def test_fault_corrupt_log_page() -> None:
    async with open_simulator(CONF, ephemeral=True, faults=Faults(corrupt_log_page=True)) as sim:
        client = await Client.open(sim)
        await client.ready()
        with pytest.raises(ProtocolError):
            DiscoveryLogPage.decode(await client.log_page())


async def test_fault_genctr_bump_on_offset_read() -> None:
    async with open_simulator(CONF, ephemeral=True, faults=Faults(genctr_bump_on_read=1)) as sim:
        client = await Client.open(sim)
        await client.ready()
        for offset in (0, 1024, 0):
            sqe = cmd.get_log_page(LogPageId.DISCOVERY, offset=offset, length=1024)
            await client.run(sqe, read_len=1024)
        assert sim.model.genctr == 2


async def test_fault_aen_storm() -> None:
    async with open_simulator(CONF, ephemeral=True, faults=Faults(aen_storm=3)) as sim:
        client = await Client.open(sim)
        await client.ready()
        await client.run(cmd.set_features(FeatureId.ASYNC_EVENT_CONFIG, AEC_DISCOVERY_LOG_CHANGE))
        aers = [await client.submit(cmd.async_event_request()) for _ in range(4)]
        await sim.unlink(1, "klingons")
        with trio.fail_after(5):
            results = [await client.wait(cid) for cid in aers[:3]]
        assert [cqe.dw0 for cqe, _ in results] == [AEN_DISCOVERY_LOG_CHANGED] * 3
        assert aers[3] not in client.done


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=4))
def test_parse_faults_gives_faults_or_fault_error(specs: list[str]) -> None:
    try:
        assert isinstance(parse_faults(specs), Faults)
    except FaultError as exc:
        assert str(exc)


async def test_control_requests_never_crash() -> None:
    async with open_simulator(CONF, ephemeral=True) as sim:
        replies = [
            await sim.control(line)
            for line in (b"", b"[]", b"{", b'{"op": "x"}', b'{"op": "link", "port": "1"}', b"\xff")
        ]
        assert [r["ok"] for r in replies] == [False] * 6
        assert replies[3]["error"] == "unknown op 'x' (expected link, unlink or ls)"
        assert (await sim.control('{"op": "ls"}'))["genctr"] == 1


async def test_host_reset_drops_only_that_connection() -> None:
    """A host that resets (RST) must not take the simulator down with it."""
    async with open_simulator(CONF, ephemeral=True) as sim:
        host, port = sim.endpoint(1)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.connect((host, port))
        sock.sendall(b"\x00" * 64)  # half an ICReq, so the simulator has read pending
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # linger 0: the kernel sends RST
        with trio.fail_after(5):
            while sim.connections:
                await trio.sleep(0.01)
        client = await Client.open(sim)  # still serving
        await client.ready()
        page = DiscoveryLogPage.decode(await client.log_page(lsp=LSP_PLEO))
        assert [e.subnqn for e in page.entries] == ["klingons", "starfleet"]
        await client.stream.aclose()
