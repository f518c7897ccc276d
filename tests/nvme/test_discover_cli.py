"""``python -m stas.nvme.discover`` against the simulator: text, JSON, AENs and errors."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from sim_faults import Faults
from sim_server import open_simulator

from stas.nvme.discover import amain, main
from tests.helpers.entries import HOSTID, HOSTNQN
from tests.helpers.net import closed_port
from tests.helpers.sim import DELL, SEED_SUBSYSTEMS, seed_conf

ROOT = Path(__file__).resolve().parents[2]


def _entry(index: int, subnqn: str, port: int) -> str:
    return (
        f"=====Discovery Log Entry {index}======\n"
        "trtype:  tcp\n"
        "adrfam:  ipv6\n"
        "subtype: nvme subsystem\n"
        "treq:    not specified\n"
        "portid:  1\n"
        f"trsvcid: {port}\n"
        f"subnqn:  {subnqn}\n"
        "traddr:  ::1\n"
        "eflags:  none\n"
        "sectype: none\n"
    )


def _args(port: int, *extra: str) -> list[str]:
    return ["-t", "tcp", "-a", "::1", "-s", str(port), "-q", HOSTNQN, "--hostid", HOSTID, *extra]


async def test_text_output_matches_nvme_discover(capsys: pytest.CaptureFixture[str]) -> None:
    async with open_simulator(seed_conf(), ephemeral=True) as sim:
        _, port = sim.endpoint(1)
        assert await amain(_args(port)) == 0
        genctr = sim.model.genctr
    out, err = capsys.readouterr()
    assert err == ""
    assert out == (
        f"Discovery Log Number of Records 3, Generation counter {genctr}\n"
        + _entry(0, "klingons", port)
        + _entry(1, DELL, port)
        + _entry(2, "starfleet", port)
    )


async def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    async with open_simulator(seed_conf(), ephemeral=True) as sim:
        _, port = sim.endpoint(1)
        assert await amain([*_args(port), "--json"]) == 0
        genctr = sim.model.genctr
    out, err = capsys.readouterr()
    assert err == ""
    doc = json.loads(out)
    assert doc["genctr"] == genctr
    assert [r["subnqn"] for r in doc["records"]] == list(SEED_SUBSYSTEMS)
    assert doc["records"][0] == {
        "trtype": "tcp",
        "adrfam": "ipv6",
        "traddr": "::1",
        "trsvcid": str(port),
        "subnqn": "klingons",
        "subtype": "nvme",
        "treq": "not specified",
        "portid": "1",
        "cntlid": "65535",
        "asqsz": "32",
        "eflags": "0",
    }


async def _wait_for(out: io.StringIO, text: str) -> None:
    with trio.fail_after(10):
        while text not in out.getvalue():
            await trio.sleep(0.01)


async def test_persistent_prints_aens_and_new_pages(autojump_clock: trio.testing.MockClock) -> None:
    out = io.StringIO()
    async with open_simulator(seed_conf(), ephemeral=True) as sim:
        _, port = sim.endpoint(1)
        async with trio.open_nursery() as nursery:
            result: list[int] = []

            async def run() -> None:
                result.append(await amain([*_args(port), "--persistent"], out=out))

            nursery.start_soon(run)
            await _wait_for(out, "Discovery Log Number of Records 3,")
            await sim.unlink(1, "klingons")
            await _wait_for(out, "Discovery Log Number of Records 2,")
            nursery.cancel_scope.cancel()
    assert result == []  # still running until cancelled, as with Ctrl-C
    text = out.getvalue()
    assert "Discovery Log Number of Records 3," in text
    assert "AEN: notice: discovery log page changed" in text
    assert text.index("AEN: notice") < text.index("Discovery Log Number of Records 2,")
    assert text.count("=====Discovery Log Entry") == 5


async def test_sigterm_ends_persistent_mode_cleanly() -> None:
    """The real entry point: runs until SIGTERM, then exits 0 without a traceback."""
    async with open_simulator(seed_conf(), ephemeral=True) as sim:
        _, port = sim.endpoint(1)
        argv = [sys.executable, "-m", "stas.nvme.discover", *_args(port), "--persistent"]
        proc = await trio.lowlevel.open_process(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
        )
        assert proc.stdout is not None and proc.stderr is not None
        out = b""
        with trio.fail_after(30):
            while b"=====Discovery Log Entry 2======" not in out:
                chunk = await proc.stdout.receive_some()
                assert chunk, f"discover exited early: {out!r}"
                out += chunk
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            err = await proc.stderr.receive_some()
    assert err == b""
    assert out.startswith(b"Discovery Log Number of Records 3,")


def test_unreachable_port_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    assert main(_args(port)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"discover: connection to [::1]:{port} refused\n"


async def test_slow_dc_reports_the_step(
    capsys: pytest.CaptureFixture[str], autojump_clock: trio.testing.MockClock
) -> None:
    conf = seed_conf()
    async with open_simulator(conf, ephemeral=True, faults=Faults(delay_s=60)) as sim:
        _, port = sim.endpoint(1)
        assert await amain([*_args(port), "--timeout", "5"]) == 1
    _, err = capsys.readouterr()
    assert err == "discover: timed out after 5 s waiting for Connect\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--hostid", "nope"], "discover: invalid --hostid 'nope': not a UUID\n"),
        (["-t", "rdma"], "discover: transport 'rdma' is not supported (only tcp)\n"),
        (["--kato", "-1"], "discover: invalid --kato -1: must be between 0 and 3600 seconds\n"),
    ],
)
def test_bad_arguments_print_one_line(
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["-a", "::1", "-s", "1", "-q", HOSTNQN, *extra]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", message)


def test_missing_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-s", "8009"]) == 1
    assert (
        capsys.readouterr().err == "discover: the following arguments are required: -a/--traddr\n"
    )
