"""The simulator against the real Linux NVMe/TCP host (VM only): nvme-cli discovers what it
serves, and a persistent kernel discovery controller gets the AEN uevent on unlink."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stas.actors.uevents import open_uevent_socket
from stas.kernel.uevent_codec import decode_uevent
from tests.helpers.sim import SEED_CONF, SEED_SUBSYSTEMS

ROOT = Path(__file__).resolve().parents[2]
SEED = set(SEED_SUBSYSTEMS)


@pytest.fixture
def simulator(tmp_path: Path):
    control = str(tmp_path / "sim.sock")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "nvmet-harness/simulator.py"),
            "serve",
            "-f",
            str(SEED_CONF),
            "--ephemeral",
            "--control",
            control,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    line = proc.stdout.readline().decode()
    port = line.split("]:", 1)[1].split(" ", 1)[0]
    deadline = time.monotonic() + 30
    while not os.path.exists(control) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port, control
    subprocess.run(["nvme", "disconnect-all"], capture_output=True, check=False)
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)


def test_nvme_cli_discovers_what_the_simulator_serves(simulator) -> None:
    port, _ = simulator
    out = subprocess.run(
        ["nvme", "discover", "-t", "tcp", "-a", "::1", "-s", port, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    records = json.loads(out.stdout)["records"]
    assert {r["subnqn"] for r in records if r["subtype"] == "nvme subsystem"} == SEED
    assert {(r["traddr"], r["trsvcid"]) for r in records} == {("::1", port)}


def discovery_controllers() -> list[str]:
    return [
        d.name
        for d in Path("/sys/class/nvme").glob("nvme*")
        if (d / "cntrltype").read_text().strip() == "discovery"
        and (d / "state").read_text().strip() == "live"
    ]


def test_persistent_kernel_dc_gets_the_aen_on_unlink(simulator) -> None:
    port, control = simulator
    sock = open_uevent_socket()
    sock.setblocking(True)
    sock.settimeout(1.0)
    out = subprocess.run(
        ["nvme", "discover", "-p", "-t", "tcp", "-a", "::1", "-s", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "klingons" in out.stdout, out.stdout + out.stderr
    # nvme-cli reconnects with the unique DC NQN the simulator reports (TP8013)
    deadline = time.monotonic() + 15
    while not discovery_controllers() and time.monotonic() < deadline:
        time.sleep(0.1)
    devices = discovery_controllers()
    seen = {
        d.name: ((d / "subsysnqn").read_text().strip(), (d / "cntrltype").read_text().strip())
        for d in Path("/sys/class/nvme").glob("nvme*")
    }
    assert len(devices) == 1, (seen, out.stderr)
    simulator_cli = [sys.executable, str(ROOT / "nvmet-harness/simulator.py")]
    subprocess.run(
        [*simulator_cli, "unlink", "-p", "1", "-s", "klingons", "--control", control],
        check=True,
        timeout=60,
    )
    deadline = time.monotonic() + 20
    aens = []
    while time.monotonic() < deadline and not aens:
        try:
            ev = decode_uevent(sock.recv(65536))
        except TimeoutError:
            continue
        if ev.action == "change" and ev.device == devices[0] and ev.aen is not None:
            aens.append(ev.aen)
    sock.close()
    assert aens == [0x70F002]
