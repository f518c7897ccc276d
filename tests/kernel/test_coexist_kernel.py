"""stacd beside nvme-cli's autoconnect rule on the real kernel (VM): one AEN, two reactions.

The VM has no udevd, so ``AutoconnectRule`` plays it: a netlink uevent listener that, for a
discovery-log-changed AEN (NVME_AEN=0x70f002), runs what nvme-cli's 70-nvmf-autoconnect.rules
starts through nvmf-connect@.service: ``nvme connect-all --device=<the AEN's device>
--transport=... --traddr=... --trsvcid=... --host-traddr=... --host-iface=...``. Like udevd,
it reads the rule file udev would pick (/etc, then /run, then /usr/lib), so stacd's
udev-rule=disabled shadow in /run/udev/rules.d silences it.

stafd (kernel backend) holds the discovery controller and stacd connects from its log pages
(real processes on a private bus, the VM's real /run and /etc). Linking a subsystem raises
the AEN on stafd's DC; nvme-cli and stacd both connect; the kernel ends up with exactly one
controller per subsystem and nothing is removed. Then: the registry protects another owner's
controller, /etc/nvme/exclusions.conf protects an excluded one, and udev-rule=disabled keeps
nvme-cli quiet until stacd exits.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_nvmet_kernel import nvmet, ok

from stas.coexist.udev_rule import MARKER
from stas.kernel.uevent_codec import decode_uevent
from tests.helpers import fixtures
from tests.helpers.e2e import HOSTID, HOSTNQN, Daemon, World, stacctl, wait_for
from tests.helpers.sim import DELL

NETLINK_KOBJECT_UEVENT = 15
DLP_CHANGED = "0x70f002"
RULE = "70-nvmf-autoconnect.rules"
RULE_DIRS = (Path("/etc/udev/rules.d"), Path("/run/udev/rules.d"), Path("/usr/lib/udev/rules.d"))
AEN_MATCH = f'ENV{{NVME_AEN}}=="{DLP_CHANGED}"'
REGISTRY = Path("/run/nvme/registry")
SYSFS = Path("/sys/class/nvme")


class AutoconnectRule:
    """udevd + nvme-cli's autoconnect rule, as far as discovery log change AENs go."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.bind((0, 1))  # the kernel's multicast group (udevd's own source)
        self.sock.settimeout(0.2)
        self.removed: list[str] = []  # nvme devices the kernel removed
        self.runs: list[subprocess.CompletedProcess[str]] = []
        self.silenced = 0  # AENs the effective rule file did not act on
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @staticmethod
    def effective_rule() -> Path | None:
        """The file udev reads for this name: /etc shadows /run shadows /usr/lib."""
        return next((d / RULE for d in RULE_DIRS if (d / RULE).exists()), None)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                ev = decode_uevent(self.sock.recv(1 << 16))
            except (TimeoutError, ValueError):
                continue
            if ev.subsystem != "nvme" or not ev.device.startswith("nvme"):
                continue
            if ev.action == "remove":
                self.removed.append(ev.device)
            elif ev.action == "change" and ev.env.get("NVME_AEN") == DLP_CHANGED:
                self._on_aen(ev.device, ev.env)

    def _on_aen(self, device: str, env: dict[str, str]) -> None:
        rule = self.effective_rule()
        if rule is None or AEN_MATCH not in rule.read_text():
            self.silenced += 1
            return

        def arg(key: str) -> str:
            return env.get(key) or "none"  # the rule maps an empty value to none

        argv = [
            "nvme", "connect-all", "--quiet", f"--device={device}",
            f"--transport={arg('NVME_TRTYPE')}", f"--traddr={arg('NVME_TRADDR')}",
            f"--trsvcid={arg('NVME_TRSVCID')}", f"--host-traddr={arg('NVME_HOST_TRADDR')}",
            f"--host-iface={arg('NVME_HOST_IFACE')}",
        ]  # fmt: skip
        self.runs.append(subprocess.run(argv, capture_output=True, text=True, timeout=60))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def rule() -> Iterator[AutoconnectRule]:
    r = AutoconnectRule()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def host_files() -> Iterator[None]:
    """nvme-cli and stacd must be the same host (the kernel's duplicate check compares host
    NQNs); the VM's root is a throwaway overlay, restored here all the same."""
    saved = {}
    for name, value in (("hostnqn", HOSTNQN), ("hostid", HOSTID)):
        p = Path("/etc/nvme") / name
        saved[p] = p.read_text() if p.exists() else None
        p.parent.mkdir(exist_ok=True)
        p.write_text(value + "\n")
    excl = Path("/etc/nvme/exclusions.conf")
    saved[excl] = excl.read_text() if excl.exists() else None
    try:
        yield
    finally:
        for p, text in saved.items():
            if text is None:
                p.unlink(missing_ok=True)
            else:
                p.write_text(text)


bus_address = fixtures.bus_address  # the private bus for stafd and stacd
coexist_world = fixtures.world


def io_controllers() -> dict[str, list[str]]:
    """Subsystem NQN -> the kernel's I/O controllers for it."""
    out: dict[str, list[str]] = {}
    for d in sorted(SYSFS.glob("nvme*")):
        try:
            if (d / "cntrltype").read_text().strip() != "io":
                continue
            out.setdefault((d / "subsysnqn").read_text().strip(), []).append(d.name)
        except OSError:
            continue  # going away
    return out


def owner(device: str) -> str | None:
    p = REGISTRY / device / "owner"
    return p.read_text().strip() if p.exists() else None


class KernelStacd(Daemon):
    """stacd on the real kernel and the VM's real /run and /etc (no --kernel fake)."""

    name = "stacd"

    def __init__(self, world: World) -> None:
        t = world.tmp
        super().__init__(world, [sys.executable, "-m", "stas.stacd", "-f", str(t / "stacd.conf"),
                                 "--sys-conf", str(t / "sys.conf")])  # fmt: skip


class KernelStafd(Daemon):
    name = "stafd"

    def __init__(self, world: World) -> None:
        t = world.tmp
        super().__init__(world, [sys.executable, "-m", "stas.main", "-f", str(t / "stafd.conf"),
                                 "--sys-conf", str(t / "sys.conf"),
                                 "--state-dir", str(t / "state")])  # fmt: skip


def stacd_devices(world: World) -> dict[str, str]:
    return {
        c["subsysnqn"]: c["device"]
        for c in stacctl(world.env, "ls", "-d")
        if c["connected"] == "True"
    }


@pytest.mark.usefixtures("host_files")
def test_nvme_cli_and_stacd_react_to_one_aen_without_duplicates_or_teardown(
    target: str, rule: AutoconnectRule, coexist_world: World
) -> None:
    try:
        scenario(coexist_world, rule)
    finally:
        coexist_world.stop_all()  # before the target goes: stafd would reconnect its DC


def scenario(world: World, rule: AutoconnectRule) -> None:
    ok(nvmet("unlink", "-p", "1", "-s", "klingons"))
    (world.tmp / "stafd.conf").write_text(
        "[Global]\ndc-backend=kernel\n[Service Discovery]\nzeroconf=disabled\n"
        "[Controllers]\ncontroller=transport=tcp;traddr=::1;trsvcid=8009\n"
    )
    conf = world.tmp / "stacd.conf"
    conf.write_text("[Global]\nudev-rule=enabled\n")
    world._started(KernelStafd(world), True)
    stacd = world._started(KernelStacd(world), True)
    wait_for("stacd: starfleet and Dell", lambda: set(stacd_devices(world)) == {"starfleet", DELL})

    # 1. One AEN, two reactions: nvme-cli's rule and stacd both connect klingons.
    ok(nvmet("link", "-p", "1", "-s", "klingons"))
    wait_for("nvme-cli's connect-all to run", lambda: rule.runs)
    wait_for("stacd: klingons", lambda: "klingons" in stacd_devices(world))
    wait_for("connect-all to finish", lambda: all(r.returncode is not None for r in rule.runs))
    kernel = io_controllers()
    assert {n: len(d) for n, d in kernel.items()} == {"klingons": 1, "starfleet": 1, DELL: 1}
    mine = stacd_devices(world)
    assert mine == {n: d[0] for n, d in kernel.items()}  # stacd holds (or adopted) each one
    assert {owner(d) for d in mine.values()} == {"stas"}  # claimed, whoever won the race
    assert rule.removed == []  # nothing torn down

    # 2. Another owner's controller and an excluded one survive leaving the log page.
    (REGISTRY / mine["starfleet"] / "owner").write_text("discoverd\n")
    Path("/etc/nvme/exclusions.conf").write_text(f"[exclusions]\nexclusion = nqn={DELL}\n")
    conf.write_text("[Global]\nudev-rule=disabled\n")
    stacd.reload()
    shadow = Path("/run/udev/rules.d") / RULE
    assert shadow.read_text().startswith(MARKER)
    assert rule.effective_rule() == shadow
    runs = len(rule.runs)
    ok(nvmet("unlink", "-p", "1", "-s", "starfleet"))
    stacd.wait_log("kept: the registry says owner 'discoverd'")
    ok(nvmet("unlink", "-p", "1", "-s", DELL))
    wait_for("the AENs reach the silenced rule", lambda: rule.silenced >= 2)
    wait_for("stacd to let starfleet go", lambda: "starfleet" not in stacd_devices(world))
    assert "matches the exclusion list" in stacd.log_text()
    assert len(rule.runs) == runs  # udev-rule=disabled: nvme-cli stayed quiet
    assert io_controllers() == kernel  # nothing disconnected, nothing added
    assert rule.removed == []

    # 3. stacd exits: nvme-cli's rule is back.
    world.stop(stacd)
    assert not shadow.exists()
    assert rule.effective_rule() != shadow
