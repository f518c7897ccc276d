"""Helpers to let Wireshark's dissectors judge our NVMe/TCP bytes: live capture, then decode.

The capture side proves tshark is *really* recording (a probe connection to a private port
shows up in its live packet summaries) instead of sleeping for a guessed time. The decode
side runs tshark on the finished file and returns plain Python values.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

TSHARK = shutil.which("tshark")
PROBE_EVERY_S = 0.1  # a new start-up probe connection this often
START_BUDGET_S = 10.0  # tshark start-up (dumpcap, BPF) plus the probing
STOP_BUDGET_S = 10.0
AGGREGATOR = "\x1f"  # between several values of one field in one frame (never in our data)

# epan/proto.h PI_COMMENT .. PI_ERROR, as -T json prints them
SEVERITIES = {"1048576": "comment", "2097152": "chat", "4194304": "note"}
SEVERITIES |= {"6291456": "warning", "8388608": "error"}


class CaptureError(Exception):
    """tshark did not start, never recorded a probe, or failed to decode."""


@attrs.frozen
class ExpertInfo:
    """One expert item tshark attached to a frame, with the protocol layer that raised it."""

    frame: int
    layer: str
    key: str
    severity: str
    message: str


@attrs.define
class _Pipe:
    """What tshark wrote so far on one pipe; ``changed`` fires on each chunk and at EOF."""

    data: bytearray = attrs.Factory(bytearray)
    changed: trio.Event = attrs.Factory(trio.Event)
    closed: bool = False

    async def drain(self, stream: trio.abc.ReceiveStream) -> None:
        """Keep the pipe empty (a full pipe would stall tshark)."""
        while chunk := await stream.receive_some(65536):
            self.data += chunk
            self.changed.set()
        self.closed = True
        self.changed.set()

    async def wait_for(self, pattern: re.Pattern[bytes], timeout: float) -> bool:
        """True once something matching ``pattern`` was written; False on timeout or EOF."""
        with trio.move_on_after(timeout):
            while not pattern.search(self.data):
                if self.closed:
                    return False
                self.changed = trio.Event()
                await self.changed.wait()
            return True
        return False


@asynccontextmanager
async def capturing(
    pcap: Path, ports: Sequence[int], *, interface: str = "lo"
) -> AsyncIterator[None]:
    """Record TCP ``ports`` on ``interface`` into ``pcap`` while the block runs.

    A private listener adds a probe port to the capture filter. tshark's live summary
    (``-P -l``) lags the wire by up to about half a second, and a SIGINT drops what it has
    not processed yet, so probe connections are used twice: before the block (the filter
    is installed once one shows up) and after it (once the last one shows up, every packet
    of the block has been processed and goes into the file).
    """
    if TSHARK is None:
        raise CaptureError("tshark is not installed")
    probe = (await trio.open_tcp_listeners(0, host="::1"))[0]
    probe_port = probe.socket.getsockname()[1]
    bpf = " or ".join(f"tcp port {port}" for port in [*ports, probe_port])
    argv = [TSHARK, "-l", "-P", "-i", interface, "-f", bpf, "-w", str(pcap)]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = _Pipe(), _Pipe()
    try:
        async with trio.open_nursery() as nursery:
            assert proc.stdout is not None and proc.stderr is not None
            nursery.start_soon(out.drain, proc.stdout)
            nursery.start_soon(err.drain, proc.stderr)
            try:
                if not await err.wait_for(re.compile(b"Capturing on"), START_BUDGET_S):
                    raise CaptureError(f"tshark did not start capturing: {bytes(err.data)!r}")
                await _wait_until_recording(probe_port, out)
                yield
                await _wait_until_processed(probe_port, out)
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(proc)
        if proc.returncode != 0:
            raise CaptureError(f"tshark exited with {proc.returncode}: {bytes(err.data)!r}")
    except BaseExceptionGroup as group:
        # Only the drain tasks share the nursery and they do not fail: show the body's error.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        with trio.CancelScope(shield=True):
            await _stop(proc)
            await probe.aclose()


def _summary_line(client: int | None, server: int) -> re.Pattern[bytes]:
    """A -P summary of a TCP packet from ``client`` (any port if None) to ``server``."""
    source = rb"\d+" if client is None else str(client).encode()
    # "54406 → 41677 [SYN]" (the arrow may be "->" in an ASCII locale)
    return re.compile(rb" " + source + rb" \S+ " + str(server).encode() + rb" \[")


async def _wait_until_recording(port: int, out: _Pipe) -> None:
    """Poke the probe port until tshark prints any packet of it: the filter is live."""
    seen = _summary_line(None, port)
    with trio.move_on_after(START_BUDGET_S):
        while not out.closed:
            async with await trio.open_tcp_stream("::1", port):
                if await out.wait_for(seen, PROBE_EVERY_S):
                    return
    raise CaptureError(f"tshark never showed a probe connection to port {port}")


async def _wait_until_processed(port: int, out: _Pipe) -> None:
    """One last probe; once tshark printed it, everything before it is in the file."""
    async with await trio.open_tcp_stream("::1", port) as stream:
        client = stream.socket.getsockname()[1]
        if not await out.wait_for(_summary_line(client, port), STOP_BUDGET_S):
            raise CaptureError(f"tshark never showed the closing probe from port {client}")


async def _stop(proc: trio.Process) -> None:
    """SIGINT lets tshark flush and close the file; kill it if it does not listen."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGINT)
    with trio.move_on_after(STOP_BUDGET_S):
        await proc.wait()
        return
    proc.kill()
    await proc.wait()


def _tshark_read(pcap: Path, nvme_ports: Sequence[int], *args: str) -> str:
    """Run tshark over ``pcap`` with the NVMe/TCP ports declared and digests checked."""
    if TSHARK is None:
        raise CaptureError("tshark is not installed")
    decode_as = [arg for port in nvme_ports for arg in ("-d", f"tcp.port=={port},nvme-tcp")]
    checks = ["-o", "nvme-tcp.check_hdgst:TRUE", "-o", "nvme-tcp.check_ddgst:TRUE"]
    done = subprocess.run(
        [TSHARK, "-r", str(pcap), *decode_as, *checks, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise CaptureError(f"tshark -r {pcap} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def decode_fields(
    pcap: Path, nvme_ports: Sequence[int], fields: Sequence[str], display_filter: str = ""
) -> list[dict[str, list[str]]]:
    """One dict per frame: field name -> every value in that frame (several PDUs may share
    a TCP segment, so one frame can hold several commands)."""
    args = ["-T", "fields", "-E", "occurrence=a", "-E", f"aggregator={AGGREGATOR}"]
    args += [arg for field in fields for arg in ("-e", field)]
    if display_filter:
        args += ["-Y", display_filter]
    frames = []
    for line in _tshark_read(pcap, nvme_ports, *args).splitlines():
        cells = line.split("\t")
        cells = (cells + [""] * len(fields))[: len(fields)]
        frames.append(
            {
                field: [v for v in cell.split(AGGREGATOR) if v]
                for field, cell in zip(fields, cells, strict=True)
            }
        )
    return frames


def expert_infos(pcap: Path, nvme_ports: Sequence[int], display_filter: str) -> list[ExpertInfo]:
    """Expert items of the frames matching ``display_filter``, each tied to its layer.

    ``-T json`` nests an ``_ws.expert`` object inside the protocol layer that raised it,
    which is what tells a TCP analysis note apart from an NVMe/TCP complaint.
    """
    # Several PDUs in one frame give several "nvme-tcp" layers: merge them into lists rather
    # than let json.loads keep only the last.
    args = ["-T", "json", "--no-duplicate-keys", "-Y", display_filter]
    text = _tshark_read(pcap, nvme_ports, *args)
    found: list[ExpertInfo] = []
    for packet in json.loads(text or "[]"):
        layers = packet["_source"]["layers"]
        frame = int(layers["frame"]["frame.number"])
        for layer, tree in layers.items():  # a merged layer is a list of trees
            for key, item in _expert_items(tree):
                found.append(
                    ExpertInfo(
                        frame=frame,
                        layer=layer,
                        key=key,
                        severity=SEVERITIES.get(str(item.get("_ws.expert.severity")), "?"),
                        message=str(item.get("_ws.expert.message", "")),
                    )
                )
    return found


def _expert_items(tree: object) -> Iterator[tuple[str, dict[str, object]]]:
    """(expert field key, its item) for every ``_ws.expert`` object under ``tree``."""
    if isinstance(tree, list):
        for child in tree:
            yield from _expert_items(child)
    elif isinstance(tree, dict):
        for name, child in tree.items():
            if name == "_ws.expert" and isinstance(child, dict):
                key = next((k for k in child if not k.startswith("_ws.expert")), "")
                yield key, child
            else:
                yield from _expert_items(child)
