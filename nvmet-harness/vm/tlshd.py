#!/usr/bin/env python3
"""tlshd.py - the TLS handshake daemon (ktls-utils' tlshd) for NVMe/TCP TLS tests in the VM.

The kernel's NVMe/TCP host and target hand every TLS handshake to tlshd over the
``handshake`` netlink family. Only Debian 13 packages it (ktls-utils 1.0). Building it on this
Debian 12 host was the plan and is not possible from here: trixie's source package
(``apt-get source ktls-utils`` through the private trixie apt configuration with a deb-src
line) answers 404 for its .dsc and tarballs on the configured mirror, which serves binary
packages only, and github.com (the upstream release tarballs) does not resolve.

So trixie's *binary* is used with trixie's own libraries, never the host's: ``apt-get
download`` (the private trixie apt configuration of vm_image.py, nothing installed) fetches
ktls-utils and the packages its libraries need (glibc 2.41, GnuTLS 3.8, GLib, libnl,
libkeyutils ...), ``dpkg-deb -x`` unpacks them into ``<cache>/trixie/tlshd-root``, and tlshd
runs through that tree's dynamic loader with ``--library-path`` pointing into it: Debian 12's
glibc 2.36 and GnuTLS 3.7 are never loaded. It is a tool, like the kernel package; the VM
sees the cache because its root is the host's.

    nvmet-harness/vm/tlshd.py prepare        # download + unpack (root; once)
    nvmet-harness/vm/tlshd.py argv           # the command line that starts it
    nvmet-harness/vm/tlshd.py check          # "ok", or why not

Standard library only. The parsers and the command line are pure (tests/vm checks them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vm_image import DEFAULT_CACHE, KERNELS, VmError, _Apt

PACKAGE = "ktls-utils"
TLSHD = "usr/sbin/tlshd"
LIBDIR = "usr/lib/x86_64-linux-gnu"
LOADER = f"{LIBDIR}/ld-linux-x86-64.so.2"
# Essential-package dependencies apt does not list but the binaries need at run time.
ALWAYS = ("libc6",)
SKIP = frozenset({"debconf", "dpkg", "perl-base", "install-info"})


def root_dir(cache: Path = DEFAULT_CACHE) -> Path:
    return KERNELS["6.12"].cache_dir(cache) / "tlshd-root"


def parse_recursive_depends(text: str) -> list[str]:
    """Package names from ``apt-cache depends --recurse``: the unindented lines, without
    virtual packages (``<name>``) and packages that only matter to dpkg."""
    names: list[str] = []
    for line in text.splitlines():
        if not line or line[0].isspace() or line.startswith("<"):
            continue
        name = line.strip().split(":")[0]
        if name and name not in SKIP and name not in names:
            names.append(name)
    return names


def config_text(loglevel: int = 0) -> str:
    """tlshd.conf: look PSKs up in the kernel's ``.nvme`` keyring (ktls-utils documents
    ``keyrings=.nvme`` for NVMe-TLS)."""
    return (
        f"[debug]\nloglevel={int(loglevel)}\ntls={int(loglevel)}\nnl={int(loglevel)}\n"
        "[authenticate]\nkeyrings=.nvme\n"
    )


def tlshd_argv(root: Path, conf: Path) -> list[str]:
    """tlshd through the unpacked tree's own loader and libraries, logging to stderr."""
    return [
        str(root / LOADER),
        "--library-path",
        f"{root / LIBDIR}:{root / 'lib/x86_64-linux-gnu'}",
        str(root / TLSHD),
        "-c",
        str(conf),
        "-s",
    ]


def missing_reason(root: Path) -> str | None:
    """Why tlshd cannot be started from ``root`` (None: it can)."""
    for rel in (TLSHD, LOADER):
        if not (root / rel).exists():
            return (
                f"tlshd is not prepared ({root / rel} missing: "
                "run nvmet-harness/vm/tlshd.py prepare as root)"
            )
    return None


def prepare(cache: Path = DEFAULT_CACHE) -> Path:
    """Download ktls-utils and its libraries from trixie and unpack them (once)."""
    root = root_dir(cache)
    if missing_reason(root) is None:
        return root
    if os.geteuid() != 0:
        raise VmError("preparing tlshd needs root (apt-get download into the cache)")
    apt = _Apt(KERNELS["6.12"], cache)
    argv = ["apt-cache", *apt.options, "depends", "--recurse", "--no-recommends",
            "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces",
            "--no-enhances", PACKAGE]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0 or PACKAGE not in out.stdout:
        apt.update()
        out = subprocess.run(argv, capture_output=True, text=True)
    packages = parse_recursive_depends(out.stdout)
    if PACKAGE not in packages:
        raise VmError(f"Debian trixie offers no {PACKAGE}: {out.stderr.strip()[:200]}")
    packages += [p for p in ALWAYS if p not in packages]
    with tempfile.TemporaryDirectory(prefix="stas-tlshd-") as tmp:
        for pkg in packages:
            apt.download(pkg, Path(tmp))
        staging = root.with_name(root.name + ".new")
        subprocess.run(["rm", "-rf", str(staging)], check=True)
        staging.mkdir(parents=True)
        for deb in sorted(Path(tmp).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
        if missing_reason(staging) is not None:
            raise VmError(f"{PACKAGE} unpacked without {TLSHD} or {LOADER}")
        subprocess.run(["rm", "-rf", str(root)], check=True)
        staging.rename(root)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = args[0] if args else "check"
    root = root_dir()
    if cmd == "prepare":
        try:
            print(prepare())
        except VmError as e:
            print(f"tlshd: {e}", file=sys.stderr)
            return 1
        return 0
    if cmd == "argv":
        print(" ".join(tlshd_argv(root, Path(args[1] if len(args) > 1 else "/etc/tlshd.conf"))))
        return 0
    if cmd == "check":
        reason = missing_reason(root)
        print(reason or "ok")
        return 1 if reason else 0
    print("usage: tlshd.py prepare | argv [CONF] | check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
