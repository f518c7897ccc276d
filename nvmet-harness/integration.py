#!/usr/bin/env python3
"""`make integration`: the seed document's whole workflow on the real kernel (run in the VM).

Installs nvme-stas into the (throwaway) root, configures it the way the seed's post-install
script does, builds the kernel nvmet target, starts stafd and stacd with the shipped units'
command lines on a system bus with the shipped D-Bus policy, and checks every step the seed
describes with stafctl, stacctl, sysfs and nvme-cli. Prints PASS/FAIL per step; exit 1 on any
failure. Needs root and the nvmet/nvme-tcp modules: use nvmet-harness/vm/runner.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SEED = {
    "klingons",
    "starfleet",
    "nqn.1988-11.com.dell:PowerSANxxx:01:20210225100113-454f73093ceb4847a7bdfc6e34ae8e28",
}
WK = "nqn.2014-08.org.nvmexpress.discovery"
failures: list[str] = []


def sh(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(argv)} -> {out.returncode}: {out.stderr.strip()}")
    return out.stdout


def step(name: str, check: Callable[[], object], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    error = ""
    while True:
        try:
            if check():
                print(f"PASS  {name}", flush=True)
                return True
        except Exception as exc:  # a failing check is reported, never a traceback
            error = f": {exc}"
        if time.monotonic() > deadline:
            print(f"FAIL  {name}{error}", flush=True)
            failures.append(name)
            return False
        time.sleep(0.2)


def io_devices() -> dict[str, str]:
    """Kernel I/O controllers: subsysnqn -> device."""
    out = {}
    for d in Path("/sys/class/nvme").glob("nvme*"):
        if (d / "cntrltype").read_text().strip() == "io":
            out[(d / "subsysnqn").read_text().strip()] = d.name
    return out


class Daemon:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=f, stderr=f)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


def main() -> int:
    if os.geteuid() != 0 or not Path("/sys/kernel/config").is_dir():
        print("integration: needs root and the kernel's nvmet (run it in the VM)", file=sys.stderr)
        return 1
    sys.path.insert(0, str(ROOT))
    from stas.dbus.testbus import private_bus

    # 0. make install (into the VM's throwaway root; launchers use this interpreter's deps)
    sh(PY, str(ROOT / "scripts/install.py"), "install", "--no-deps", "--python", PY)
    units = (
        Path("/usr/lib/systemd/system/stafd.service").read_text(),
        Path("/usr/lib/systemd/system/stacd.service").read_text(),
    )
    exec_start = [
        next(ln.split("=", 1)[1] for ln in u.splitlines() if ln.startswith("ExecStart="))
        for u in units
    ]
    # 1. the seed's post-install script
    Path("/etc/nvme").mkdir(exist_ok=True)
    for what in ("hostnqn", "hostid"):
        if not Path(f"/etc/nvme/{what}").is_file() or not Path(f"/etc/nvme/{what}").read_text():
            sh("/usr/bin/stasadm", what, "-f", f"/etc/nvme/{what}")
    for f in ("stafd.conf", "stacd.conf"):
        sh("sed", "-i", "/^#tron=false/a tron=true", f"/etc/stas/{f}")
    sh(
        "sed",
        "-i",
        "/^#controller=$/a controller=transport=tcp;traddr=localhost",
        "/etc/stas/stafd.conf",
    )
    sh("sed", "-i", "s/^#zeroconf=enabled/zeroconf=disabled/", "/etc/stas/stafd.conf")
    step(
        "post-install: host NQN/ID and stafd.conf edited like the seed",
        lambda: (
            "controller=transport=tcp;traddr=localhost" in Path("/etc/stas/stafd.conf").read_text()
        ),
    )
    # 2. the kernel target
    print(sh(PY, str(ROOT / "nvmet-harness/nvmet.py"), "create").strip().splitlines()[-1])
    step(
        "nvmet.py create: port 1 on ::1/8009 with the three subsystems",
        lambda: (
            {p.name for p in Path("/sys/kernel/config/nvmet/ports/1/subsystems").iterdir()} == SEED
        ),
    )
    policy = [ROOT / "conf/org.nvmexpress.staf.conf", ROOT / "conf/org.nvmexpress.stac.conf"]
    logs = Path("/tmp/stas-integration")
    logs.mkdir(exist_ok=True)
    with private_bus(system_like=True, includes=policy) as address:
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address, RUNTIME_DIRECTORY=str(logs))
        env.pop("NOTIFY_SOCKET", None)
        # 3. the daemons, with the units' command lines
        stafd = Daemon(exec_start[0].split(), env, logs / "stafd.log")
        stacd = Daemon(exec_start[1].split(), env, logs / "stacd.log")

        def ctl(tool: str, *args: str) -> object:
            return json.loads(sh(f"/usr/bin/{tool}", "--json", *args, env=env))

        # 4. what the seed document shows
        def dc_ok() -> bool:
            (dc,) = ctl("stafctl", "ls")
            return (
                dc["device"].startswith("nvme")
                and dc["traddr"] == "::1"
                and dc["trsvcid"] == "8009"
                and dc["subsysnqn"] == WK
            )

        step("stafctl ls: the DC at ::1 8009, kernel device nvmeN", dc_ok, 40)

        def iocs() -> set[str]:
            return {c["subsysnqn"] for c in ctl("stacctl", "ls") if c["device"].startswith("nvme")}

        step("stacctl ls: the three I/O controllers", lambda: iocs() == SEED, 40)
        step("nvme list -v agrees", lambda: all(n in sh("nvme", "list", "-v") for n in SEED))
        before = io_devices()
        # 5. AEN on unlink and link
        sh(PY, str(ROOT / "nvmet-harness/nvmet.py"), "unlink", "-p", "1", "-s", "klingons")
        step(
            "unlink klingons: gone from stacctl ls and sysfs",
            lambda: iocs() == SEED - {"klingons"} and "klingons" not in io_devices(),
        )
        sh(PY, str(ROOT / "nvmet-harness/nvmet.py"), "link", "-p", "1", "-s", "klingons")
        step("link klingons: back", lambda: iocs() == SEED and "klingons" in io_devices())
        # 6. restarts
        kept = io_devices()
        stafd.stop()
        time.sleep(2)
        stafd.start()
        step(
            "stafd restarted: no I/O controller disconnected",
            lambda: io_devices() == kept and len(ctl("stafctl", "ls")) == 1,
            40,
        )
        log_before = (logs / "stacd.log").read_text().count("connected as")
        stacd.stop()
        stacd.start()
        step(
            "stacd restarted: all three adopted, none connected twice",
            lambda: (
                iocs() == SEED
                and io_devices() == kept
                and (logs / "stacd.log").read_text().count("connected as") == log_before
            ),
            40,
        )
        del before
        # 7. clean up
        stacd.stop()
        stafd.stop()
        sh("nvme", "disconnect-all", check=False)
        sh(PY, str(ROOT / "nvmet-harness/nvmet.py"), "clean")
        step(
            "nvmet.py clean, daemons stopped: nothing left connected",
            lambda: not list(Path("/sys/class/nvme").glob("nvme*")),
        )
    if failures:
        print(f"integration: {len(failures)} step(s) failed; logs in {logs}")
        for f in ("stafd.log", "stacd.log"):
            print(f"--- {f} (last lines)")
            print("\n".join((logs / f).read_text().splitlines()[-25:]))
        return 1
    print("integration: all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
