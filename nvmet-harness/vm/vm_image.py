"""vm_image.py - what the stas test VM boots: host packages, Debian's kernel, the initramfs.

Prepared once into a cache directory (default /var/cache/stas-vm) and reused: the kernel
package is fetched with ``apt-get download`` and unpacked, an uncompressed vmlinux is cut out
of its bzImage (qemu boots it directly, skipping decompression), and a small initramfs holds
busybox, init.sh and the modules needed to mount the host's root over 9p.

Standard library only (it runs before the project's venv exists). The parsers and the cpio
writer are pure; tests/vm checks them on the host.
"""

from __future__ import annotations

import fcntl
import hashlib
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST_PACKAGES = ("qemu-system-x86", "busybox-static", "kmod", "cpio", "xz-utils", "nvme-cli")
DEFAULT_CACHE = Path("/var/cache/stas-vm")
# Just enough for stage 1 to mount the host root over 9p under an overlay; the rest is
# modprobed in stage 2 from the unpacked kernel package.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
INIT_SCRIPT = Path(__file__).resolve().parent / "init.sh"
BUSYBOX = Path("/bin/busybox")
XZ_MAGIC = b"\xfd7zXZ\x00"
ELF_MAGIC = b"\x7fELF"


class VmError(Exception):
    """Preparing or booting the VM failed; the message says what and is shown as one line."""


def log(message: str) -> None:
    print(f"stas-vm: {message}", file=sys.stderr, flush=True)


# --- parsers and formats (pure) ----------------------------------------------------------


def parse_kernel_package(apt_cache_depends: str) -> str | None:
    """The versioned image package that ``apt-cache depends linux-image-amd64`` names."""
    match = re.search(r"Depends:\s*(linux-image-\d[\w.+-]*-amd64)\b", apt_cache_depends)
    return match[1] if match else None


def missing_packages(dpkg_query_output: str, wanted: Iterable[str]) -> list[str]:
    """Packages of ``wanted`` not shown as installed ('ii') by
    ``dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n'``."""
    installed = set()
    for line in dpkg_query_output.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1].startswith("ii"):
            installed.add(fields[0].split(":")[0])
    return [p for p in wanted if p not in installed]


def version_key(kver: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", kver))


def module_name(path: str) -> str:
    """'kernel/net/9p/9pnet_virtio.ko.xz' -> '9pnet_virtio' (dashes and underscores are one)."""
    base = path.rsplit("/", 1)[-1]
    return re.sub(r"\.ko(\.(xz|gz|zst))?$", "", base).replace("-", "_")


def module_load_order(modules_dep: str, wanted: Iterable[str], builtin: str = "") -> list[str]:
    """Module files to insmod, dependencies first, for ``wanted`` (built-in ones are skipped)."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in modules_dep.splitlines():
        path, sep, rest = line.partition(":")
        if sep:
            deps[module_name(path)] = (path.strip(), rest.split())
    builtins = {module_name(line.strip()) for line in builtin.splitlines() if line.strip()}
    order: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise VmError(f"modules.dep: dependency cycle through {name}")
        if name not in deps:
            if name in builtins:
                return
            raise VmError(f"module {name} is neither in modules.dep nor built in")
        path, needs = deps[name]
        for dep in needs:
            visit(module_name(dep), (*chain, name))
        if path not in order:
            order.append(path)

    for name in wanted:
        visit(name.replace("-", "_"), ())
    return order


@dataclass(frozen=True)
class CpioEntry:
    """One member of a newc archive; ``rdev`` is (major, minor) for device nodes."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def newc_archive(entries: Sequence[CpioEntry]) -> bytes:
    """An uncompressed 'newc' cpio archive, the format the kernel unpacks as initramfs.

    Written here rather than with cpio(1) so device nodes need no root and the bytes are
    reproducible (fixed inode numbers, mtime 0)."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    trailer = CpioEntry("TRAILER!!!", 0)
    for ino, entry in enumerate([*entries, trailer], start=1):
        name = entry.name.encode() + b"\0"
        nlink = 2 if entry.mode & 0o170000 == 0o040000 else 1
        fields = (ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0, *entry.rdev)
        out += b"070701" + b"".join(b"%08X" % f for f in fields)
        out += b"%08X%08X" % (len(name), 0) + name
        pad()
        out += entry.data
        pad()
    return bytes(out)


def find_vmlinux(bzimage: bytes) -> bytes | None:
    """The uncompressed ELF kernel inside an xz-compressed bzImage, or None.

    qemu boots the ELF directly (PVH), which skips decompression: seconds under TCG."""
    start = bzimage.find(XZ_MAGIC)
    if start < 0:
        return None
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
    except lzma.LZMAError:
        return None
    return elf if elf.startswith(ELF_MAGIC) else None


# --- host preparation ---------------------------------------------------------------------


def _run(argv: Sequence[str], what: str, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise VmError(f"{what} failed ({shlex.join(argv)}): {' / '.join(tail)}")
    return done.stdout


def host_missing_packages() -> list[str]:
    if shutil.which("dpkg-query") is None:
        return [] if shutil.which("qemu-system-x86_64") else list(HOST_PACKAGES)
    fmt = "${Package} ${db:Status-Abbrev}\\n"
    done = subprocess.run(
        ["dpkg-query", "-W", f"-f={fmt}", *HOST_PACKAGES], capture_output=True, text=True
    )
    return missing_packages(done.stdout, HOST_PACKAGES)


def ensure_packages() -> None:
    missing = host_missing_packages()
    if not missing:
        return
    log(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], "apt-get update")
    argv = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if subprocess.run(argv, env=env, capture_output=True, check=False).returncode != 0:
        _run(argv, "apt-get install")


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel package: <cache>/<kver>/root plus vmlinux when it could be made."""

    kdir: Path

    @property
    def kver(self) -> str:
        return self.kdir.name

    @property
    def moddir(self) -> Path:
        return self.kdir / "root" / "lib" / "modules" / self.kver

    @property
    def boot_image(self) -> Path:
        vmlinux = self.kdir / "vmlinux"
        return vmlinux if vmlinux.exists() else self.kdir / "root" / "boot" / f"vmlinuz-{self.kver}"


def cached_kernel(cache: Path) -> Kernel | None:
    """The newest fully prepared kernel in the cache (its directory appears by rename)."""
    try:
        names = [d.name for d in cache.iterdir() if not d.name.startswith(".")]
    except OSError:
        return None
    ready = [
        Kernel(cache / n) for n in names if (Kernel(cache / n).moddir / "modules.dep").exists()
    ]
    return max(ready, key=lambda k: version_key(k.kver), default=None)


def _kernel_package() -> str:
    for attempt in range(2):
        out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True)
        if pkg := parse_kernel_package(out.stdout.decode(errors="replace")):
            return pkg
        if attempt == 0:
            _run(["apt-get", "update", "-qq"], "apt-get update")
    raise VmError("apt-cache knows no linux-image-amd64 (is this Debian with deb.debian.org?)")


def prepare_kernel(cache: Path) -> Kernel:
    """Download and unpack the kernel package once; later runs reuse it."""
    if found := cached_kernel(cache):
        return found
    pkg = _kernel_package()
    kver = pkg.removeprefix("linux-image-")
    work = cache / f".{kver}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log(f"downloading {pkg} into {cache}")
    try:
        _run(["apt-get", "download", "-qq", pkg], "apt-get download", cwd=work)
    except VmError:
        _run(["apt-get", "update", "-qq"], "apt-get update")
        _run(["apt-get", "download", "-qq", pkg], "apt-get download", cwd=work)
    deb = next(work.glob("*.deb"))
    _run(["dpkg-deb", "-x", str(deb), str(work / "root")], "unpacking the kernel")
    deb.unlink()
    _run(["depmod", "-b", str(work / "root"), kver], "depmod")  # the .deb has no modules.dep
    if elf := find_vmlinux((work / "root" / "boot" / f"vmlinuz-{kver}").read_bytes()):
        (work / "vmlinux").write_bytes(elf)
    work.rename(cache / kver)
    return Kernel(cache / kver)


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.suffix == ".xz" else data


def build_initramfs(kernel: Kernel, init_script: Path, busybox: Path) -> Path:
    """Stage 1: busybox, init.sh as /init, the boot modules; cached by content hash."""
    dep = (kernel.moddir / "modules.dep").read_text()
    builtin_file = kernel.moddir / "modules.builtin"
    builtin = builtin_file.read_text() if builtin_file.exists() else ""
    order = module_load_order(dep, BOOT_MODULES, builtin)
    init, bb = init_script.read_bytes(), busybox.read_bytes()
    digest = hashlib.sha256(init + bb + "\n".join(order).encode()).hexdigest()[:16]
    target = kernel.kdir / f"initramfs-{digest}.cpio"
    if target.exists():
        return target
    dirs = ("bin", "dev", "proc", "sys", "lower", "rw", "newroot", "modules")
    entries = [CpioEntry(d, 0o040755) for d in dirs]
    entries.append(CpioEntry("dev/console", 0o020600, rdev=(5, 1)))
    entries += [CpioEntry("bin/busybox", 0o100755, bb), CpioEntry("init", 0o100755, init)]
    for n, rel in enumerate(order):
        name = f"modules/{n:02d}-{module_name(rel)}.ko"
        entries.append(CpioEntry(name, 0o100644, _module_bytes(kernel.moddir / rel)))
    partial = target.with_suffix(".partial")
    partial.write_bytes(newc_archive(entries))
    partial.rename(target)
    return target


def prepare(cache: Path) -> tuple[Kernel, Path]:
    """Packages, kernel and initramfs, serialised between concurrent runs by a lock file."""
    ensure_packages()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        kernel = prepare_kernel(cache)
        return kernel, build_initramfs(kernel, INIT_SCRIPT, BUSYBOX)
