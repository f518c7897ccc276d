"""vm_image.py - what the stas test VM boots: host packages, Debian's kernel, the initramfs.

Prepared once into a cache directory (default /var/cache/stas-vm) and reused: the kernel
package is fetched with ``apt-get download`` and unpacked, an uncompressed vmlinux is cut out
of its bzImage (qemu boots it directly, skipping decompression), and a small initramfs holds
busybox, init.sh and the modules needed to mount the host's root over 9p.

Two kernels: "6.1" (Debian 12's own, from the host's apt sources) and "6.12" (Debian 13's,
which has NVMe in-band authentication and TLS). The 6.12 package comes through a private apt
configuration under ``<cache>/trixie/apt`` (its own sources list, package lists and archive
directory): the host's apt sources, pins and installed packages are never touched, so nothing
on the host can be upgraded to trixie by it. Only the kernel and its modules are used; the
VM's root stays the host's Debian 12.

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
from collections.abc import Callable, Iterable, Sequence
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
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ELF_MAGIC = b"\x7fELF"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class KernelChoice:
    """A kernel series the VM can boot and where its package comes from.

    ``suite`` None: the host's own apt sources; else that Debian suite through a private apt
    configuration (see ``private_apt_options``), prepared in its own cache subdirectory."""

    series: str
    suite: str | None = None

    def cache_dir(self, cache: Path) -> Path:
        return cache if self.suite is None else cache / self.suite


KERNELS = {"6.1": KernelChoice("6.1"), "6.12": KernelChoice("6.12", "trixie")}
DEFAULT_KERNEL = "6.1"


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


def kernel_series(kver: str) -> str:
    """'6.12.117+deb13-amd64' -> '6.12'; '6.1.0-57-amd64' -> '6.1' ('' if not a version)."""
    m = re.match(r"(\d+)\.(\d+)(?=[.-]|$)", kver)
    return f"{m[1]}.{m[2]}" if m else ""


def private_sources(suite: str, mirror: str = DEBIAN_MIRROR) -> str:
    """A deb822 sources file naming only ``suite`` main, signed by Debian's archive keys."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", suite):
        raise VmError(f"not a Debian suite name: {suite!r}")
    return (
        f"Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n"
        f"Signed-By: {DEBIAN_KEYRING}\n"
    )


def private_apt_options(state: Path) -> list[str]:
    """apt options that use only ``state``: its sources, lists, archives; no pins, no dpkg
    status (nothing counts as installed), so a download can never change the host."""
    return [
        "-o", f"Dir::Etc::SourceList={state / 'sources.sources'}",
        "-o", f"Dir::Etc::SourceParts={state / 'empty'}",
        "-o", f"Dir::Etc::Preferences={state / 'empty' / 'preferences'}",
        "-o", f"Dir::Etc::PreferencesParts={state / 'empty'}",
        "-o", f"Dir::State::Lists={state / 'lists'}",
        "-o", f"Dir::State::status={state / 'empty' / 'status'}",
        "-o", f"Dir::Cache={state / 'cache'}",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip


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


def find_vmlinux(bzimage: bytes, zstd: Callable[[bytes], bytes] | None = None) -> bytes | None:
    """The uncompressed ELF kernel inside an xz- or zstd-compressed bzImage, or None.

    qemu boots the ELF directly (PVH), which skips decompression: seconds under TCG. Debian
    12 compresses its kernel with xz (stdlib); Debian 13 with zstd, which Python 3.11 lacks,
    so ``zstd`` is a decompressor supplied by the caller (the zstd program)."""
    start = bzimage.find(XZ_MAGIC)
    if start >= 0:
        try:
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
        except lzma.LZMAError:
            elf = b""
        if elf.startswith(ELF_MAGIC):
            return elf
    start = bzimage.find(ZSTD_MAGIC)
    while zstd is not None and start >= 0:
        elf = zstd(bzimage[start:])
        if elf.startswith(ELF_MAGIC):
            return elf
        start = bzimage.find(ZSTD_MAGIC, start + 1)
    return None


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


def cached_kernel(cache: Path, series: str | None = None) -> Kernel | None:
    """The newest fully prepared kernel in the cache (its directory appears by rename),
    of ``series`` ('6.1', '6.12') when given."""
    try:
        names = [d.name for d in cache.iterdir() if not d.name.startswith(".")]
    except OSError:
        return None
    ready = [
        Kernel(cache / n)
        for n in names
        if (Kernel(cache / n).moddir / "modules.dep").exists()
        and (series is None or kernel_series(n) == series)
    ]
    return max(ready, key=lambda k: version_key(k.kver), default=None)


class _Apt:
    """apt-get/apt-cache with the host's configuration, or a private one for another suite."""

    def __init__(self, choice: KernelChoice, cache: Path) -> None:
        self.options: list[str] = []
        if choice.suite is not None:
            state = choice.cache_dir(cache) / "apt"
            for sub in ("lists/partial", "cache/archives/partial", "empty"):
                (state / sub).mkdir(parents=True, exist_ok=True)
            (state / "sources.sources").write_text(private_sources(choice.suite))
            self.options = private_apt_options(state)
        self.where = f"Debian {choice.suite}" if choice.suite else "the host's apt sources"

    def update(self) -> None:
        _run(["apt-get", *self.options, "update", "-qq"], f"apt-get update ({self.where})")

    def kernel_package(self, series: str) -> str:
        for attempt in range(2):
            argv = ["apt-cache", *self.options, "depends", "linux-image-amd64"]
            out = subprocess.run(argv, capture_output=True)
            pkg = parse_kernel_package(out.stdout.decode(errors="replace"))
            if pkg and kernel_series(pkg.removeprefix("linux-image-")) == series:
                return pkg
            if attempt == 0:
                self.update()
        raise VmError(f"{self.where} offer no linux-image-amd64 of the {series} series")

    def download(self, pkg: str, cwd: Path) -> None:
        argv = ["apt-get", *self.options, "download", "-qq", pkg]
        try:
            _run(argv, "apt-get download", cwd=cwd)
        except VmError:
            self.update()
            _run(argv, "apt-get download", cwd=cwd)


def _zstd(data: bytes) -> bytes:
    """zstd -dc of a stream followed by other bytes (it complains about those, yet decodes)."""
    if shutil.which("zstd") is None:
        return b""
    return subprocess.run(["zstd", "-dcq"], input=data, capture_output=True).stdout


def prepare_kernel(cache: Path, kernel: str = DEFAULT_KERNEL) -> Kernel:
    """Download and unpack the kernel package of that series once; later runs reuse it."""
    choice = KERNELS[kernel]
    kcache = choice.cache_dir(cache)
    if found := cached_kernel(kcache, choice.series):
        return found
    apt = _Apt(choice, cache)
    pkg = apt.kernel_package(choice.series)
    kver = pkg.removeprefix("linux-image-")
    work = kcache / f".{kver}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log(f"downloading {pkg} ({apt.where}) into {kcache}")
    apt.download(pkg, work)
    deb = next(work.glob("*.deb"))
    root = work / "root"
    _run(["dpkg-deb", "-x", str(deb), str(root)], "unpacking the kernel")
    deb.unlink()
    if not (root / "lib").exists() and (root / "usr" / "lib").is_dir():
        (root / "lib").symlink_to("usr/lib")  # Debian 13 ships merged-/usr: /usr/lib/modules
    _run(["depmod", "-b", str(root), kver], "depmod")  # the .deb has no modules.dep
    if elf := find_vmlinux((root / "boot" / f"vmlinuz-{kver}").read_bytes(), _zstd):
        (work / "vmlinux").write_bytes(elf)
    work.rename(kcache / kver)
    return Kernel(kcache / kver)


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


def prepare(cache: Path, kernel: str = DEFAULT_KERNEL) -> tuple[Kernel, Path]:
    """Packages, kernel and initramfs, serialised between concurrent runs by a lock file."""
    if kernel not in KERNELS:
        raise VmError(f"unknown kernel {kernel!r} (choose from {', '.join(KERNELS)})")
    ensure_packages()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        prepared = prepare_kernel(cache, kernel)
        return prepared, build_initramfs(prepared, INIT_SCRIPT, BUSYBOX)
