"""The three mechanisms inside stacd: plan (exclusions), connector (registry) on the
FakeKernel under MockClock, and the stacd process (udev shadow, exclusions) on a private bus."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from stas.coexist.exclusions import Exclusions, parse_exclusions
from stas.coexist.registry import Registry
from stas.coexist.udev_rule import MARKER, RULE_NAME
from stas.kernel.api import KernelController
from stas.kernel.fake import FakeKernel
from stas.messages import DcLogPages, IocStatus
from stas.plan import decide, wanted_iocs
from tests.helpers.config import stacd_config
from tests.helpers.connector import ConnectorHarness, external
from tests.helpers.e2e import ROOT, World, wait_for
from tests.helpers.entries import HOSTID, HOSTNQN, dc_tid, dlpe, tid

DC = dc_tid()
NQNS = ("klingons", "starfleet", "vulcans")


def config(text: str = "", *entries: str):
    cfg = stacd_config(text)
    listing = "[exclusions]\n" + "".join(f"exclusion = {e}\n" for e in entries)
    found, _ = parse_exclusions(listing, "exclusions.conf")
    return attrs.evolve(cfg, nvme_exclusions=Exclusions(tuple(found), HOSTID))


# --- plan: the system-wide exclusion list -----------------------------------------------------


def test_an_excluded_controller_is_not_wanted_even_when_configured() -> None:
    cfg = config(
        "[Controllers]\ncontroller=transport=tcp;traddr=::1;trsvcid=4420;nqn=vulcans\n",
        "nqn=starfleet", "nqn=vulcans",
    )  # fmt: skip
    wanted = wanted_iocs(config=cfg, log_pages={DC: [dlpe(n) for n in NQNS]}, host_nqn=HOSTNQN)
    assert {t.subsysnqn for t in wanted} == {"klingons"}


@pytest.mark.parametrize(
    "scope", ["only-stas-connections", "all-connections-matching-disconnect-trtypes"]
)
def test_an_excluded_controller_is_not_disconnected(scope: str) -> None:
    cfg = config(
        f"[I/O controller connection management]\ndisconnect-scope={scope}\n", "nqn=starfleet"
    )
    current = {
        tid("starfleet"): IocStatus(tid("starfleet"), "discovered", device="nvme1", connected=True)
    }
    other = KernelController(
        "nvme2", "tcp", "::1", "4420", "starfleet", hostnqn="x", cntrltype="io"
    )
    plan = decide({}, current, [other], cfg)
    assert plan.disconnect == ()
    plain = decide({}, current, [other], attrs.evolve(cfg, nvme_exclusions=None))
    assert "nvme1" in {d for d, _, _ in plain.disconnect}  # without the list it would go


# --- connector: the ownership registry ---------------------------------------------------------


class Harness(ConnectorHarness):
    """The connector with an ownership registry under ``tmp``; ``put`` takes a DC's page."""

    def __init__(self, tmp: Path, kernel: FakeKernel | None = None) -> None:
        self.registry = Registry(tmp / "registry", seqnum_file=tmp / "no-seqnum")
        super().__init__(config(), kernel, inbox=1000, registry=self.registry)

    async def put(self, *nqns: object) -> None:
        await super().put(DcLogPages(DC, tuple(dlpe(str(n)) for n in nqns)))


async def test_what_stacd_connects_is_claimed_and_released_on_disconnect(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    h = Harness(tmp_path)
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(*NQNS)
        devs = h.shown()
        assert set(devs) == set(NQNS)
        assert {h.registry.owner(d) for d in devs.values()} == {"stas"}
        await h.put("klingons", "starfleet")  # zoning removed vulcans
        assert h.kernel.disconnect_log == [devs["vulcans"]]
        assert h.registry.owner(devs["vulcans"]) is None  # its entry went with it
        n.cancel_scope.cancel()


async def test_a_controller_another_owner_holds_is_adopted_but_never_disconnected(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    kernel = FakeKernel()
    theirs, unowned = external(kernel, "starfleet"), external(kernel, "vulcans")
    h = Harness(tmp_path, kernel)
    (h.registry.root / theirs.device).mkdir(parents=True)
    (h.registry.root / theirs.device / "owner").write_text("discoverd\n")
    async with trio.open_nursery() as n:
        await h.start(n)
        await h.put(*NQNS)
        devs = h.shown()
        assert devs["starfleet"] == theirs.device and devs["vulcans"] == unowned.device
        assert len(kernel.connect_log) == 1  # klingons only: nothing connected twice
        assert h.registry.owner(theirs.device) == "discoverd"  # not taken over
        assert h.registry.owner(unowned.device) == "stas"  # borrowed, now ours
        await h.put("klingons")  # both leave the log page
        assert kernel.disconnect_log == [unowned.device]
        assert theirs.device in kernel.controllers
        n.cancel_scope.cancel()


# --- the stacd process: udev-rule= and /etc/nvme -----------------------------------------------


def shadow(root: Path) -> Path:
    return root / "run" / "udev" / "rules.d" / RULE_NAME


def test_stacd_shadows_the_rule_while_it_runs_and_follows_reloads(world: World) -> None:
    root = world.tmp / "host"
    shadow(root).parent.mkdir(parents=True)
    shadow(root).write_text(MARKER + "\n# stale: left by a crashed stacd\n")
    conf = world.tmp / "stacd.conf"
    conf.write_text("[Global]\nudev-rule=enabled\n")
    stacd = world.stacd("--coexist-root", str(root))
    assert not shadow(root).exists()  # the stale shadow is cleaned at start
    conf.write_text("[Global]\nudev-rule=disabled\n")
    stacd.reload()
    assert shadow(root).read_text().startswith(MARKER)
    assert "NVME_AEN" not in shadow(root).read_text()
    world.stop(stacd)
    assert not shadow(root).exists()  # restored on exit
    stacd = world.stacd("--coexist-root", str(root))
    assert shadow(root).exists()  # written at start
    world.stop(stacd, signal.SIGINT)
    assert not shadow(root).exists()


def test_stacd_never_touches_a_rules_file_it_did_not_write(world: World) -> None:
    root = world.tmp / "host"
    shadow(root).parent.mkdir(parents=True)
    shadow(root).write_text("# the administrator's\n")
    (world.tmp / "stacd.conf").write_text("[Global]\nudev-rule=disabled\n")
    stacd = world.stacd("--coexist-root", str(root))
    stacd.wait_log("not written by stacd")
    world.stop(stacd)
    assert shadow(root).read_text() == "# the administrator's\n"


def test_dry_run_honours_the_exclusion_list(world: World) -> None:
    root = world.tmp / "host"
    (root / "etc" / "nvme").mkdir(parents=True)
    (root / "etc" / "nvme" / "exclusions.conf").write_text("[exclusions]\nexclusion = nqn=vol\n")
    (world.tmp / "stacd.conf").write_text(
        "[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.9;trsvcid=4420;nqn=vol\n"
        "controller=transport=tcp;traddr=10.0.0.9;trsvcid=4420;nqn=other\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "stas.stacd", "-f", str(world.tmp / "stacd.conf"),
         "--sys-conf", str(world.tmp / "sys.conf"), "--kernel", "fake", "--dry-run",
         "--coexist-root", str(root)],
        capture_output=True, text=True, env=world.env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "nqn=other" not in out.stdout and "(tcp, 10.0.0.9, 4420, other)" in out.stdout
    assert "(tcp, 10.0.0.9, 4420, vol)" not in out.stdout
    assert wait_for("the log", lambda: "matches the exclusion list" in out.stdout + out.stderr)
