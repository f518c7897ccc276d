"""stafd end to end with real parts: private dbus-daemon, simulator over NVMe/TCP on ::1,
mDNS on loopback, stafd and stafctl as processes, sd_notify over a real datagram socket.

Every wait is on an event (sd_notify, a bus signal, a log line) or a polled condition with a
generous deadline; how fast a change arrives is a benchmark (``make bench``), not a test."""

from __future__ import annotations

import signal

from stas.dbus.idl import PROPERTIES, STAFD
from tests.helpers.e2e import SEED, WK, World, stafctl, subnqns, wait_for
from tests.helpers.signals import SignalWatch


def test_seed_workflow_reload_and_warm_restart(world: World) -> None:
    tmp, env = world.tmp, world.env
    sim = world.simulator("sim1")
    (tmp / "stafd.conf").write_text(
        "[Global]\ntron=true\n[Service Discovery]\nzeroconf=disabled\n"
        f"[Controllers]\ncontroller=transport=tcp;traddr=localhost;trsvcid={sim.port}\n"
    )
    stafd = world.stafd()  # READY=1 comes after the bus name is owned: stafctl answers at once
    assert isinstance(stafctl(env, "ls"), list)

    # stafctl ls: the seed's localhost line reaches the DC listening on ::1 only
    ls = wait_for("stafctl ls", lambda: stafctl(env, "ls"))
    assert [(d["transport"], d["traddr"], d["trsvcid"], d["subsysnqn"]) for d in ls] == [
        ("tcp", "::1", sim.port, WK)
    ]
    wait_for("three subsystems", lambda: subnqns(env) == SEED)
    # the userspace backend's device is upstream's 'nvme?'; `connection` says what it is
    (dc,) = stafctl(env, "ls", "-d")
    assert dc["device"] == "nvme?" and dc["connection"].startswith("userspace tcp [::1]:")
    assert dc["connection"].endswith(f" -> [::1]:{sim.port}")

    # unlink: the AEN makes stafd refetch and signal the change; stafctl shows it
    with SignalWatch(world.bus_address, STAFD.main_interface, "log_pages_changed") as signals:
        sim.cli("unlink", "-p", "1", "-s", "klingons")
        assert signals.next_body()[:4] == ("tcp", "::1", sim.port, WK)
        assert subnqns(env) == SEED - {"klingons"}
        sim.cli("link", "-p", "1", "-s", "klingons")
        signals.next()
        assert subnqns(env) == SEED

    # SIGHUP with a second controller= line adds that DC
    sim2 = world.simulator("sim2")
    with (tmp / "stafd.conf").open("a") as f:
        f.write(f"controller=transport=tcp;traddr=::1;trsvcid={sim2.port}\n")
    stafd.reload()
    wait_for("second DC", lambda: len(stafctl(env, "ls")) == 2)

    # SIGTERM, storage gone, restart: the cached log pages are there before any reconnect
    stafd.send(signal.SIGTERM)
    assert stafd.next_notify() == b"STOPPING=1"
    assert world.stop(stafd) == 0
    world.stop(sim)
    world.stop(sim2)
    world.stafd()
    assert subnqns(env) == SEED
    details = stafctl(env, "ls", "-d")
    assert {d["connected"] for d in details} == {"False"}
    assert {d["connection"] for d in details} == {""}  # no link while disconnected


def test_mdns_discovery(world: World) -> None:
    tmp, env = world.tmp, world.env
    sim = world.simulator("simm", mdns=True)
    (tmp / "stafd.conf").write_text("[Service Discovery]\nzeroconf=enabled\n")
    world.stafd("--mdns-interfaces", "127.0.0.1")

    def found() -> list[dict[str, str]]:
        return [d for d in stafctl(env, "ls", "-d") if d["trsvcid"] == sim.port]

    (dc,) = wait_for("the mDNS-discovered DC", found)
    assert dc["origin"] == "discovered" and dc["traddr"] == "::1" and dc["host-iface"] == "lo"
    wait_for("its log page", lambda: subnqns(env) >= SEED)


def test_unreadable_config_on_reload_keeps_the_running_one(world: World) -> None:
    tmp, env = world.tmp, world.env
    sim = world.simulator("simr")
    conf = tmp / "stafd.conf"
    conf.write_text(
        "[Service Discovery]\nzeroconf=disabled\n"
        f"[Controllers]\ncontroller=transport=tcp;traddr=::1;trsvcid={sim.port}\n"
    )
    stafd = world.stafd()
    wait_for("the DC's log page", lambda: subnqns(env) == SEED)
    conf.write_bytes(b"\x00\xff not a config file")
    stafd.reload()  # RELOADING=1, then READY=1 with the running configuration kept
    log = stafd.log_text()
    assert "keeping the running configuration" in log
    assert str(conf) in log and "Traceback" not in log
    assert stafd.proc.poll() is None and subnqns(env) == SEED
    assert world.stop(stafd, signal.SIGINT) == 0
    assert "SIGINT: stopping" in stafd.log_text()


def test_tron_from_a_reload_is_announced(world: World) -> None:
    """PropertiesChanged for a tron change made by SIGHUP, not only by a D-Bus Set; a reload
    that changes nothing announces nothing (the next signal received is the next change's)."""
    conf = world.tmp / "stafd.conf"
    conf.write_text("[Global]\ntron=false\n[Service Discovery]\nzeroconf=disabled\n")
    stafd = world.stafd()
    on = {"tron": ("b", True), "log_level": ("s", "DEBUG")}
    off = {"tron": ("b", False), "log_level": ("s", "INFO")}
    with SignalWatch(world.bus_address, PROPERTIES.name, "PropertiesChanged") as signals:
        conf.write_text("[Global]\ntron=true\n[Service Discovery]\nzeroconf=disabled\n")
        stafd.reload()
        assert signals.next_body() == (STAFD.debug_interface, on, [])
        stafd.reload()  # unchanged: nothing announced
        conf.write_text("[Global]\ntron=false\n[Service Discovery]\nzeroconf=disabled\n")
        stafd.reload()
        assert signals.next_body() == (STAFD.debug_interface, off, [])
