#!/usr/bin/env python3
"""`make demo`: the whole discovery flow against the simulated storage, narrated.

1. start the simulated discovery controller (``simulator.py serve --mdns``) from nvmet.conf;
2. find it over mDNS with stafd's browser actor (``_nvme-disc._tcp`` on loopback);
3. connect with the userspace NVMe/TCP discovery host and print the log page;
4. ``simulator.py unlink -p 1 -s klingons``: the AEN arrives, the new log page is printed;
5. link it back;
6. the daemons: a private system bus, stafd started with the seed's stafd.conf line
   (``controller=transport=tcp;traddr=localhost``), then ``stafctl ls`` and ``stafctl adlp``
   as a user runs them, an unlink seen through stafctl, and a clean stop.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from stas.actors.mdns import run_mdns_browser
from stas.messages import MdnsServiceUp, Tid
from stas.nvme.host_ops import default_host_identity
from stas.nvme.logpage import DiscoveryLogPage
from stas.nvme.session import DiscoverySession, SessionOptions

HERE = Path(__file__).resolve().parent
SIMULATOR = HERE / "simulator.py"
CONF = HERE / "nvmet.conf"
COLUMNS = ("subtype", "trtype", "adrfam", "traddr", "trsvcid", "subnqn")


def say(step: str, text: str) -> None:
    print(f"[{trio.current_time() - START:6.3f}s] {step:<10} {text}", flush=True)


def table(page: DiscoveryLogPage) -> str:
    """The log page as an aligned text table, like a storage admin would want to read it."""
    rows = [dict(e.to_dlpe()) for e in page.entries]
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in COLUMNS}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in COLUMNS) for r in rows]
    return "\n".join(("           " + line).rstrip() for line in lines)


async def start_simulator(
    control: str, extra: list[str], logfile: Path
) -> tuple[trio.Process, str]:
    """Start ``simulator.py serve`` and wait until it says it is serving (or why it is not).

    Its log goes to a file: a pipe nobody drains would stall it after 64 KiB of log lines.
    """
    argv = [sys.executable, str(SIMULATOR), "serve", "-f", str(CONF), "--mdns"]
    with logfile.open("wb") as log:
        proc = await trio.lowlevel.open_process(
            [*argv, "--control", control, *extra], stdout=subprocess.PIPE, stderr=log
        )
    out = b""
    with trio.fail_after(15):
        while b"control socket" not in out:
            chunk = await proc.stdout.receive_some(4096)
            if not chunk:
                await proc.wait()
                err = logfile.read_text().strip().splitlines()[-1:] or [""]
                err = err[0].removeprefix("simulator.py: ")
                raise RuntimeError(err or f"simulator exited with {proc.returncode}")
            out += chunk
    port = out.decode().split("listening on ", 1)[1].split(" ", 1)[0].rsplit(":", 1)[1]
    return proc, port


async def find_over_mdns(port: str) -> Tid:
    """The first reachable announcement of our simulator (other services are ignored)."""
    send, receive = trio.open_memory_channel[object](16)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_mdns_browser(send, interfaces=["127.0.0.1"]))
        with trio.fail_after(20):
            async for msg in receive:
                if isinstance(msg, MdnsServiceUp) and msg.tid.trsvcid == port:
                    nursery.cancel_scope.cancel()
                    return msg.tid
    raise RuntimeError("mDNS browser stopped without finding a discovery controller")


async def run_cli(*args: str) -> str:
    result = await trio.run_process(
        [sys.executable, str(SIMULATOR), *args], capture_stdout=True, capture_stderr=True
    )
    return result.stdout.decode().strip()


async def main() -> int:
    global START
    START = trio.current_time()
    with tempfile.TemporaryDirectory(prefix="stas-demo-") as tmp:
        control = os.path.join(tmp, "sim.sock")
        try:
            sim, port = await start_simulator(control, [], Path(tmp, "sim.log"))
        except RuntimeError as exc:
            if "in use" not in str(exc):
                raise
            say("simulator", f"port 8009 busy ({exc}); using an ephemeral port instead")
            sim, port = await start_simulator(control, ["--ephemeral"], Path(tmp, "sim.log"))
        try:
            say("simulator", f"serving {CONF.name} (ports from the file), announced over mDNS")
            tid = await find_over_mdns(port)
            say("mdns", f"found discovery controller {tid} via _nvme-disc._tcp")
            host = default_host_identity()
            opts = SessionOptions(persistent=True)
            async with DiscoverySession.open(
                tid.traddr, tid.trsvcid, subsysnqn=tid.subsysnqn, host=host, options=opts
            ) as session:
                ident = session.identify
                say(
                    "connect",
                    f"connected as {host.hostnqn}: cntlid {session.cntlid}, dctype "
                    f"{ident.dctype_label}, DIM registered={session.registered}",
                )
                page = await session.get_log_page()
                say("log page", f"GENCTR {page.genctr}, {len(page.entries)} records:")
                print(table(page), flush=True)
                aens = session.aens()
                unlinked = await run_cli(
                    "unlink", "-p", "1", "-s", "klingons", "--control", control
                )
                say("unlink", f"simulator.py unlink -p 1 -s klingons: {unlinked}")
                with trio.fail_after(5):
                    aen = await aens.__anext__()
                say("aen", aen.describe())
                page = await session.get_log_page()
                say("log page", f"GENCTR {page.genctr}, {len(page.entries)} records:")
                print(table(page), flush=True)
                await run_cli("link", "-p", "1", "-s", "klingons", "--control", control)
                with trio.fail_after(5):
                    await aens.__anext__()
                page = await session.get_log_page()
                say(
                    "link",
                    f"klingons linked back: GENCTR {page.genctr}, {len(page.entries)} records",
                )
            say("stop", "session closed (DIM deregistered, CC.SHN shutdown)")
            await daemons(Path(tmp), port, control)
        finally:
            sim.send_signal(signal.SIGTERM)
            with trio.move_on_after(5):
                await sim.wait()
            say("stop", f"simulator stopped (exit {sim.returncode})")
    return 0


async def stafctl(env: dict[str, str], *args: str) -> str:
    result = await trio.run_process(
        [sys.executable, "-m", "stas.ctl.stafctl", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    return result.stdout.decode().rstrip()


async def daemons(tmp: Path, port: str, control: str) -> None:
    """stafd on a private system bus, driven with stafctl like the seed document does."""
    from stas.dbus.testbus import private_bus

    conf = tmp / "stafd.conf"
    conf.write_text(
        "[Global]\n#tron=false\n[Service Discovery]\nzeroconf=disabled\n[Controllers]\n"
        f"controller=transport=tcp;traddr=localhost;trsvcid={port}\n"
    )
    with private_bus() as address:
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address)
        say("dbus", f"private system bus at {address.split(',')[0]}")
        argv = [
            sys.executable,
            "-m",
            "stas.main",
            "-f",
            str(conf),
            "--sys-conf",
            str(tmp / "sys.conf"),
            "--state-dir",
            str(tmp / "state"),
        ]
        with (tmp / "stafd.log").open("wb") as log:
            proc = await trio.lowlevel.open_process(argv, env=env, stdout=log, stderr=log)
        try:
            with trio.fail_after(15):
                while "'::1'" not in (out := await stafctl(env, "ls")):
                    await trio.sleep(0.05)
            say("stafd", "started with controller=transport=tcp;traddr=localhost")
            say("stafctl", "ls")
            print(out, flush=True)
            with trio.fail_after(10):
                while (out := await stafctl(env, "adlp")).count("subnqn") < 3:
                    await trio.sleep(0.05)
            say("stafctl", "adlp")
            print(out, flush=True)
            await run_cli("unlink", "-p", "1", "-s", "klingons", "--control", control)
            t0 = trio.current_time()
            with trio.fail_after(5):
                while "klingons" in (out := await stafctl(env, "--json", "adlp")):
                    await trio.sleep(0.02)
            took = (trio.current_time() - t0) * 1000
            say("unlink", f"klingons left stafctl adlp {took:.0f} ms after the unlink")
            await run_cli("link", "-p", "1", "-s", "klingons", "--control", control)
        finally:
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await proc.wait()
            say("stop", f"stafd stopped (exit {proc.returncode})")


START = 0.0

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="           %(name)s: %(message)s")
    try:
        sys.exit(trio.run(main))
    except (RuntimeError, OSError, trio.TooSlowError) as exc:
        print(f"demo: {exc or type(exc).__name__}", file=sys.stderr)
        sys.exit(1)
