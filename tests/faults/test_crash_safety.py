"""Crash safety: SIGKILL stafd and stacd at random moments while the log page changes.

Issue 12: each restart must read a valid state file (stafd says how many DCs it restored),
leave no temporary file behind, and converge on the simulator's truth with no I/O controller
disconnected that was never unlinked, nor connected twice. The fake kernel outlives stacd
through ``$STAS_FAKE_KERNEL_FILE`` (a real kernel keeps its controllers when stacd dies), and
its journal of adds/removes is what the last checks read.

The schedule is random but seeded: the seed is printed; ``STAS_CRASH_SEED=N`` replays it.
The random pauses before a kill are the schedule itself (where the kill lands), not waits.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from collections import Counter
from pathlib import Path

import attrs
import pytest
import trio
from simulator import control_request

from stas.state import FILE_NAME
from tests.helpers import fixtures
from tests.helpers.e2e import SEED, Daemon, Simulator, World, connected, subnqns, wait_for

KILLS = 20
CHURN = ("klingons", "starfleet")  # linked and unlinked during the run
STABLE = SEED - set(CHURN)  # never unlinked: must never be disconnected
bus_address, world = fixtures.bus_address, fixtures.world  # the private bus and e2e world
RESTORED = re.compile(r"restored (\d+) DCs with their cached log pages")


def _kill(world: World, daemon: Daemon) -> None:
    assert world.stop(daemon, signal.SIGKILL) == -signal.SIGKILL


def _temp_files(state_dir: Path) -> set[str]:
    """The state file's temporaries (a save between mkstemp and rename)."""
    return {name for name in os.listdir(state_dir) if name.startswith(f".{FILE_NAME}.")}


def _check_stafd_start(daemon: Daemon, state_dir: Path, left_by_kill: set[str]) -> None:
    """A warm start from a valid file: 'restored N DCs', nothing ignored, and no temporary
    file the killed stafd left behind (the new stafd may be mid-save itself: its own
    temporary file is not a leftover)."""
    text = daemon.log_text()
    found = RESTORED.search(text)
    assert found and int(found.group(1)) >= 1, f"stafd did not restore its state:\n{text}"
    assert "ignoring" not in text, text
    assert FILE_NAME in os.listdir(state_dir), os.listdir(state_dir)
    assert not left_by_kill & _temp_files(state_dir), (left_by_kill, os.listdir(state_dir))


def _kernel_io(path: Path) -> set[str]:
    """The subsystems the (persisted fake) kernel has I/O controllers for."""
    doc = json.loads(path.read_text())
    return {c["subsysnqn"] for c in doc["controllers"] if c["cntrltype"] == "io"}


def _stacd(world: World) -> Daemon:
    """stacd with its ownership registry under the test's directory: a restarted stacd finds
    there what its previous run connected (no pickle)."""
    return world.stacd("--coexist-root", str(world.tmp / "root"))


def _check_journal(path: Path, unlinks: Counter[str], truth: set[str]) -> tuple[int, int]:
    """No I/O controller added while one for the same subsystem was live; none removed more
    often than its subsystem was unlinked; the stable ones never removed; at the end exactly
    ``truth``, also for subsystems unlinked just before stacd was killed or while it was down
    (the restarted stacd finds them in the ownership registry). (adds, removes)."""
    doc = json.loads(path.read_text())
    live: set[tuple[str, str, str]] = set()
    removes: Counter[str] = Counter()
    adds = 0
    for rec in doc["journal"]:
        if rec["cntrltype"] != "io":
            continue
        key = (rec["subsysnqn"], rec["traddr"], rec["trsvcid"])
        if rec["action"] == "add":
            assert key not in live, f"{key} connected twice: {doc['journal']}"
            live.add(key)
            adds += 1
        else:
            live.discard(key)
            removes[rec["subsysnqn"]] += 1
    for nqn, n in removes.items():
        assert nqn not in STABLE, f"{nqn} was never unlinked but disconnected {n} times"
        assert n <= unlinks[nqn], f"{nqn} disconnected {n} times, unlinked {unlinks[nqn]} times"
    ios = [c["subsysnqn"] for c in doc["controllers"] if c["cntrltype"] == "io"]
    assert len(ios) == len(set(ios)), ios
    assert set(ios) == truth, (ios, truth)
    return adds, sum(removes.values())


def _one_dc_world(world: World) -> tuple[Path, Simulator]:
    """One simulator, stafd.conf naming it, an empty stacd.conf, a fake kernel kept in a file
    (so that it outlives a SIGKILLed stacd): the kernel file and the simulator."""
    tmp, env = world.tmp, world.env
    kernel_file = tmp / "kernel.json"
    env["STAS_FAKE_KERNEL_FILE"] = str(kernel_file)
    sim = world.simulator("sim")
    (tmp / "stafd.conf").write_text(
        "[Service Discovery]\nzeroconf=disabled\n"
        f"[Controllers]\ncontroller=transport=tcp;traddr=::1;trsvcid={sim.port}\n"
    )
    (tmp / "stacd.conf").write_text("[Global]\n")
    return kernel_file, sim


def test_sigkill_at_random_moments_converges(world: World) -> None:
    tmp, env = world.tmp, world.env
    seed = int(os.environ.get("STAS_CRASH_SEED") or random.randrange(1 << 32))
    print(f"crash-safety seed {seed} (replay: STAS_CRASH_SEED={seed})")
    rng = random.Random(seed)
    kernel_file, sim = _one_dc_world(world)
    state_dir = tmp / "state"
    daemons: dict[str, Daemon] = {"stafd": world.stafd(), "stacd": _stacd(world)}
    truth = set(SEED)
    unlinks: Counter[str] = Counter()

    def converged() -> bool:
        return (
            subnqns(env) == truth and connected(env) == truth and _kernel_io(kernel_file) == truth
        )

    def toggle() -> None:
        nqn = rng.choice(CHURN)
        op = "unlink" if nqn in truth else "link"
        control_request(sim.control, {"op": op, "port": 1, "nqn": nqn})
        if op == "unlink":
            truth.discard(nqn)
            unlinks[nqn] += 1
        else:
            truth.add(nqn)

    wait_for("first convergence", converged)
    wait_for("stafd's first state file", (state_dir / FILE_NAME).exists)

    schedule = ["stafd", "stacd"] * (KILLS // 2)
    rng.shuffle(schedule)
    t_start = time.monotonic()
    settle: list[float] = []
    for name in schedule:
        toggle()  # the kill may land before stacd reacts
        time.sleep(rng.uniform(0.0, 0.4))  # where the kill lands: mid-fetch, mid-save, idle
        _kill(world, daemons[name])
        left_by_kill = _temp_files(state_dir)
        if rng.random() < 0.5:
            toggle()  # the page changes while the daemon is down
        t0 = time.monotonic()
        daemons[name] = world.stafd() if name == "stafd" else _stacd(world)
        if name == "stafd":
            _check_stafd_start(daemons[name], state_dir, left_by_kill)
        wait_for(f"convergence after restarting {name}", converged)
        settle.append(time.monotonic() - t0)

    adds, removes = _check_journal(kernel_file, unlinks, truth)
    for log in [*tmp.glob("stafd-*.log"), *tmp.glob("stacd-*.log")]:
        assert "Traceback" not in log.read_text(errors="replace"), log
    print(
        f"crash-safety: {len(schedule)} SIGKILLs ({schedule.count('stafd')} stafd, "
        f"{schedule.count('stacd')} stacd), {len(settle)} restarts, "
        f"{sum(unlinks.values())} unlinks; restart to converged: "
        f"max {max(settle):.2f} s, mean {sum(settle) / len(settle):.2f} s; "
        f"kernel journal: {adds} connects, {removes} disconnects; "
        f"campaign {time.monotonic() - t_start:.1f} s"
    )


async def test_fake_kernel_file_outlives_the_process(tmp_path: Path) -> None:
    """What the campaign relies on: a new FakeKernel on the same file finds the controllers
    (without an 'add' uevent: they were already there) and the journal of adds/removes."""
    from stas.kernel.api import ConnectRequest
    from stas.kernel.fake import FakeKernel

    path = tmp_path / "kernel.json"
    first = FakeKernel(persist=path)
    req = ConnectRequest("tcp", "::1", "4420", "klingons", "nqn.2014-08.org.nvmexpress:uuid:x")
    ctrl = await first.connect(req)
    other = await first.connect(attrs.evolve(req, subsysnqn="starfleet"))
    await first.disconnect(other.device)
    assert not list(path.parent.glob("*.tmp"))

    second = FakeKernel(persist=path)
    assert await second.list_controllers() == [ctrl]
    assert [(r["action"], r["subsysnqn"]) for r in second.journal] == [
        ("add", "klingons"), ("add", "starfleet"), ("remove", "starfleet"),
    ]  # fmt: skip
    with pytest.raises(trio.WouldBlock):
        second.events.receive_nowait()


def test_restarted_stacd_disconnects_what_was_unlinked_while_it_was_down(world: World) -> None:
    """The deterministic case behind the random campaign: stop stacd cleanly, unlink a
    subsystem it had connected, start it again: the registry says the controller is stacd's,
    stafd's complete picture no longer lists it, so it goes (one line saying why); the other
    subsystems stay connected, never disconnected."""
    env = world.env
    kernel_file, sim = _one_dc_world(world)
    world.stafd()
    stacd = _stacd(world)
    wait_for("stacd connected the seed", lambda: connected(env) == SEED)
    assert world.stop(stacd) == 0
    control_request(sim.control, {"op": "unlink", "port": 1, "nqn": "klingons"})
    wait_for("stafd dropped klingons", lambda: subnqns(env) == SEED - {"klingons"})
    stacd = _stacd(world)
    wait_for("stacd back", lambda: connected(env) == SEED - {"klingons"})
    wait_for("klingons disconnected", lambda: _kernel_io(kernel_file) == SEED - {"klingons"})
    lines = [ln for ln in stacd.log_text().splitlines() if "before its restart; no log page" in ln]
    assert len(lines) == 1 and "klingons" in lines[0] and "no log page lists it" in lines[0], lines
    removed = [r["subsysnqn"] for r in json.loads(kernel_file.read_text())["journal"]
               if r["action"] == "remove"]  # fmt: skip
    assert removed == ["klingons"], removed
