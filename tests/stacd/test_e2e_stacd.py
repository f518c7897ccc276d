"""stacd end to end: simulator -> stafd (userspace) -> D-Bus -> stacd (fake kernel) -> stacctl.

Waits are on events (sd_notify READY, a log line) or polled conditions with a generous
deadline; stacctl failing (stacd absent) fails the test instead of reading as "nothing"."""

from __future__ import annotations

import pytest

from stas.dbus.idl import PROPERTIES, STACD
from tests.helpers.e2e import (
    SEED,
    World,
    connected,
    run_ctl,
    run_module,
    stacctl,
    stafctl,
    wait_for,
)
from tests.helpers.signals import SignalWatch


def test_stacd_follows_stafd_and_survives_its_absence(world: World) -> None:
    tmp, env = world.tmp, world.env
    sim = world.simulator("sim")
    (tmp / "stafd.conf").write_text(
        "[Service Discovery]\nzeroconf=disabled\n"
        f"[Controllers]\ncontroller=transport=tcp;traddr=localhost;trsvcid={sim.port}\n"
    )
    (tmp / "stacd.conf").write_text("[Global]\ntron=true\n")
    stacd = world.stacd()  # started before stafd, like a slow stafd start
    assert connected(env) == set()
    stafd = world.stafd()
    wait_for("stacctl ls shows the three I/O controllers", lambda: connected(env) == SEED)
    (ioc,) = [c for c in stacctl(env, "ls") if c["subsysnqn"] == "klingons"]
    assert (ioc["traddr"], ioc["trsvcid"], ioc["transport"]) == ("::1", sim.port, "tcp")

    sim.cli("unlink", "-p", "1", "-s", "klingons")
    wait_for("klingons disconnected", lambda: connected(env) == SEED - {"klingons"})

    # stafd goes away: stacd notices and disconnects nothing
    assert world.stop(stafd) == 0
    stacd.wait_log("stafd is away; changing nothing")
    assert connected(env) == SEED - {"klingons"}

    # stafd back (warm, from its cache) and klingons linked again
    sim.cli("link", "-p", "1", "-s", "klingons")
    world.stafd()
    wait_for("klingons back", lambda: connected(env) == SEED)


def test_connected_fails_when_stacd_is_absent(world: World) -> None:
    """The helper the tests above rely on cannot read a missing stacd as 'nothing connected'."""
    with pytest.raises(AssertionError, match="Is stacd running"):
        connected(world.env)


def test_dry_run_prints_the_plan(world: World) -> None:
    tmp, env = world.tmp, world.env
    (tmp / "stacd.conf").write_text(
        "[Controllers]\ncontroller=transport=tcp;traddr=10.0.0.9;trsvcid=4420;nqn=vol\n"
    )
    conf, sys_conf = str(tmp / "stacd.conf"), str(tmp / "sys.conf")
    args = ("-f", conf, "--sys-conf", sys_conf, "--dry-run", "--kernel", "fake")
    out = run_module("stas.stacd", env, *args)
    assert out.returncode == 0, out.stderr
    assert "connect     (tcp, 10.0.0.9, 4420, vol)  <- configured in stacd.conf" in out.stdout
    assert "stafd not reachable" in out.stdout
    assert (tmp / "stacd.conf").exists()


def test_stacctl_plan_uses_stafd_pages(world: World) -> None:
    tmp, env = world.tmp, world.env
    sim = world.simulator("simp")
    (tmp / "stafd.conf").write_text(
        "[Service Discovery]\nzeroconf=disabled\n"
        f"[Controllers]\ncontroller=transport=tcp;traddr=::1;trsvcid={sim.port}\n"
    )
    (tmp / "stacd.conf").write_text("[Controllers]\nexclude=nqn=starfleet\n")
    world.stafd()

    def pages() -> int:
        return sum(len(dc["log-pages"]) for dc in stafctl(env, "adlp"))

    wait_for("stafd has the pages", lambda: pages() == 3)
    out = run_ctl("stacctl", env, "plan", "-f", str(tmp / "stacd.conf"),
                  "--sys-conf", str(tmp / "sys.conf"))  # fmt: skip
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 2, out.stdout + out.stderr
    assert all(ln.startswith("connect ") and "listed by DC (tcp, ::1" in ln for ln in lines)
    assert not any("starfleet" in ln for ln in lines)


def test_tron_from_a_reload_is_announced(world: World) -> None:
    """stacd too: PropertiesChanged for a tron change made by SIGHUP, once per change."""
    conf = world.tmp / "stacd.conf"
    conf.write_text("[Global]\ntron=false\n")
    stacd = world.stacd()
    on = {"tron": ("b", True), "log_level": ("s", "DEBUG")}
    off = {"tron": ("b", False), "log_level": ("s", "INFO")}
    with SignalWatch(world.bus_address, PROPERTIES.name, "PropertiesChanged") as signals:
        conf.write_text("[Global]\ntron=true\n")
        stacd.reload()
        assert signals.next_body() == (STACD.debug_interface, on, [])
        stacd.reload()  # unchanged: nothing announced
        conf.write_text("[Global]\ntron=false\n")
        stacd.reload()
        assert signals.next_body() == (STACD.debug_interface, off, [])
