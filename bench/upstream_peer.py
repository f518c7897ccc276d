"""Upstream nvme-stas 2.4.1 as a peer of `make bench-kernel` (issue 8), prepared on the host.

Debian trixie packages it (nvme-stas 2.4.1-2, pure Python: ``staslib`` and the ``stafd`` /
``stacd`` scripts). Nothing is installed from trixie: ``apt-get download`` through the private
trixie apt configuration of nvmet-harness/vm/vm_image.py fetches the .deb and ``dpkg-deb -x``
unpacks it into .build/upstream-2.4.1. It runs under the host's Debian 12 /usr/bin/python3
with Debian 12's python3-dasbus, python3-gi, python3-pyudev, python3-systemd (installed with
apt-get when root and missing). Its libnvme bindings are the PyPI libnvme 1.16 wheel that
``make install`` bundles in our lib dir: its ``_nvme`` module needs ``libnvme.so.1`` of 1.16,
so the launcher loads the wheel's ``libnvme.so.1.16.2`` with RTLD_GLOBAL first (Debian 12's
python3-nvme, libnvme 1.3, corrupts its heap on disconnect and is never used).

Upstream's stafd and stacd learn of AENs (an unlinked subsystem) from udevd's re-broadcast
uevents (pyudev), so the VM runs ``systemd-udevd`` for the whole benchmark, every peer alike:
Debian 12's udev 252 binary, downloaded and unpacked beside it (matching the host's systemd;
the host's udev rules only, nvme-cli's autoconnect rule masked in the VM's /run).

    .venv/bin/python bench/upstream_peer.py prepare LIBDIR   # download + unpack (root; once)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_DIR = ROOT / ".build" / "upstream-2.4.1"
UDEV_DIR = ROOT / ".build" / "udev-252"
VERSION = "2.4.1"
PACKAGE = "nvme-stas"
HOST_PACKAGES = ("python3-dasbus", "python3-gi", "python3-pyudev", "python3-systemd")
TRIXIE_APT_STATE = Path("/var/cache/stas-vm/trixie/apt")
PYTHON = "/usr/bin/python3"
STASLIB = "usr/lib/python3/dist-packages"
LAUNCHER = "run-upstream.py"
LIBNVME_SO = ".libnvme.mesonpy.libs/libnvme.so.1.16.2"
UDEVD = "systemd-udevd"  # udevadm is multi-call: this name makes it the daemon
MASKED_RULES = ("70-nvmf-autoconnect.rules",)  # nvme-cli's connect-all on every AEN
LAUNCHER_TEXT = '''\
"""Runs upstream nvme-stas's stafd or stacd with libnvme 1.16 (written by bench/upstream_peer.py).

usage: python3 run-upstream.py UPSTREAM_ROOT OUR_LIBDIR PROG [ARGS...]"""
import ctypes, os, runpy, sys

root, libdir, prog = sys.argv[1:4]
ctypes.CDLL(os.path.join(libdir, {so!r}), mode=ctypes.RTLD_GLOBAL)
sys.path.insert(0, libdir)
from libnvme import nvme  # noqa: F401  (the 1.16 bindings, cached before the path is restored)
sys.path.remove(libdir)
sys.path.insert(0, os.path.join(root, {staslib!r}))
script = os.path.join(root, "usr", "sbin", prog)
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
'''


class UpstreamError(RuntimeError):
    """Why upstream cannot run here (the message names what is missing)."""


def launcher_text() -> str:
    return LAUNCHER_TEXT.format(so=LIBNVME_SO, staslib=STASLIB)


def argv(prog: str, libdir: str, *args: str, root: Path = UPSTREAM_DIR) -> list[str]:
    """The command line that starts upstream's ``prog`` ('stafd' or 'stacd')."""
    return [PYTHON, str(root / LAUNCHER), str(root), libdir, prog, *args]


def env(base: dict[str, str], runtime_dir: Path) -> dict[str, str]:
    """Upstream's environment: its last-known-config lives in RUNTIME_DIRECTORY (systemd's
    variable; /run/<prog> otherwise), kept per benchmark so a cold start can remove it."""
    drop = ("PYTHONPATH", "PYTHONPYCACHEPREFIX", "VIRTUAL_ENV", "PYTHONHOME")
    out = {k: v for k, v in base.items() if k not in drop}
    out["RUNTIME_DIRECTORY"] = str(runtime_dir)
    return out


def missing_reason(libdir: str, root: Path = UPSTREAM_DIR, udev: Path = UDEV_DIR) -> str | None:
    """Why upstream cannot be started (None: it can)."""
    for path in (root / LAUNCHER, root / "usr/sbin/stacd", Path(libdir) / LIBNVME_SO, udev / UDEVD):
        if not path.exists():
            return f"upstream nvme-stas {VERSION} is not prepared ({path} missing)"
    missing = [m for m in ("dasbus", "gi", "pyudev", "systemd") if not _host_has(m)]
    if missing:
        return f"{PYTHON} lacks {', '.join(missing)} (apt-get install {' '.join(HOST_PACKAGES)})"
    return None


def _host_has(module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([PYTHON, "-c", code], capture_output=True).returncode == 0


def _apt_download(options: Sequence[str], spec: str, cwd: Path) -> Path:
    res = subprocess.run(
        ["apt-get", *options, "download", "-qq", spec], cwd=cwd, capture_output=True, text=True
    )
    debs = sorted(cwd.glob(f"{spec.split('=')[0]}_*.deb"))
    if res.returncode or not debs:
        raise UpstreamError(f"apt-get download {spec} failed: {res.stderr.strip()[-300:]}")
    return debs[0]


def _unpack(deb: Path, dest: Path) -> None:
    staging = dest.with_name(dest.name + ".new")
    subprocess.run(["rm", "-rf", str(staging)], check=True)
    staging.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    staging.rename(dest)


def _host_systemd_version() -> str:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "systemd"], capture_output=True, text=True
    )
    if out.returncode or not out.stdout:
        raise UpstreamError("no systemd package on the host to match udev's version with")
    return out.stdout.strip()


def prepare(libdir: str, root: Path = UPSTREAM_DIR, udev: Path = UDEV_DIR) -> Path:
    """Download and unpack upstream and udevd (once), install the host's Python packages."""
    if missing_reason(libdir, root, udev) is None:
        return root
    if not (Path(libdir) / LIBNVME_SO).exists():
        raise UpstreamError(f"no libnvme 1.16 in {libdir} (make install bundles it)")
    if os.geteuid() != 0:
        raise UpstreamError("preparing upstream nvme-stas needs root (apt-get)")
    sys.path.insert(0, str(ROOT / "nvmet-harness" / "vm"))
    from vm_image import private_apt_options

    with tempfile.TemporaryDirectory(prefix="stas-upstream-") as tmp:
        if not (root / "usr/sbin/stacd").exists():
            trixie = private_apt_options(TRIXIE_APT_STATE)
            if not (TRIXIE_APT_STATE / "sources.sources").exists():
                raise UpstreamError(
                    f"no private trixie apt state in {TRIXIE_APT_STATE} "
                    "(make test-kernel KERNEL=6.12 prepares it)"
                )
            deb = _apt_download(trixie, f"{PACKAGE}={VERSION}-2", Path(tmp))
            _unpack(deb, root)
        if not (udev / UDEVD).exists():
            deb = _apt_download([], f"udev={_host_systemd_version()}", Path(tmp))
            _unpack(deb, udev)
            (udev / UDEVD).symlink_to(udev / "bin" / "udevadm")
    (root / LAUNCHER).write_text(launcher_text())
    missing = [
        p
        for p, m in zip(HOST_PACKAGES, ("dasbus", "gi", "pyudev", "systemd"), strict=True)
        if not _host_has(m)
    ]
    if missing:
        res = subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing],
            capture_output=True,
            text=True,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
        if res.returncode:
            raise UpstreamError(f"apt-get install {' '.join(missing)}: {res.stderr[-300:]}")
    if reason := missing_reason(libdir, root, udev):
        raise UpstreamError(reason)
    return root


def udevd_argv(udev: Path = UDEV_DIR) -> list[str]:
    """udevd in the foreground (the benchmark stops it by its pid)."""
    return [str(udev / UDEVD), "--children-max=2"]


def mask_rules(run_dir: Path = Path("/run/udev/rules.d")) -> None:
    """Empty rules of the same name in /run shadow nvme-cli's (only ever in the VM's /run)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in MASKED_RULES:
        (run_dir / name).write_text("# masked by bench/upstream_peer.py\n")


def main(args: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if args is None else args)
    if len(args) == 2 and args[0] == "prepare":
        try:
            print(prepare(args[1]))
        except UpstreamError as e:
            print(f"upstream_peer: {e}", file=sys.stderr)
            return 1
        return 0
    print("usage: upstream_peer.py prepare LIBDIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
