"""stafd end to end with an NBFT: a generated table names the simulator's DC; stafd (a process,
private dbus-daemon) connects to it and ``stafctl ls -d`` shows it with origin 'nbft'."""

from __future__ import annotations

import nbft_gen as gen

from tests.helpers.e2e import SEED, World, stafctl, subnqns, wait_for


def test_stafd_connects_the_nbft_dc_and_shows_its_origin(world: World) -> None:
    tmp, env = world.tmp, world.env
    sim = world.simulator("simn")
    tables = tmp / "acpi"
    tables.mkdir()
    table = gen.Table(
        hfis=[gen.Hfi(mac="52:54:00:00:00:99", ip="fd00::15", prefix=64)],
        discoveries=[gen.Discovery(uri=f"nvme+tcp://[::1]:{sim.port}/", hfi=1)],
    )
    (tables / "NBFT").write_bytes(gen.build(table))
    (tmp / "stafd.conf").write_text("[Service Discovery]\nzeroconf=disabled\n")
    world.stafd("--nbft-dir", str(tables))
    (dc,) = wait_for("the NBFT DC", lambda: stafctl(env, "ls", "-d"))
    assert (dc["origin"], dc["traddr"], dc["trsvcid"]) == ("nbft", "::1", sim.port)
    wait_for("its log page", lambda: subnqns(env) == SEED)
