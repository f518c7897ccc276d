#!/usr/bin/env python3
"""`make install` / `make uninstall`: put nvme-stas where upstream's packages put it.

Layout (PREFIX=/usr, SYSCONFDIR=/etc, both under DESTDIR for staging):
  PREFIX/sbin/{stafd,stacd}, PREFIX/bin/{stafctl,stacctl,stasadm}  small launchers
  PREFIX/lib/nvme-stas/                                         the stas package (+ its deps)
  PREFIX/lib/systemd/system/                                    units
  PREFIX/share/dbus-1/system.d/                                 D-Bus policy
  SYSCONFDIR/stas/{stafd,stacd}.conf                            templates, never overwritten
  SYSCONFDIR/stas/sys.conf.doc
  PREFIX/share/man/man{1,5,8}/                                  man pages
Every installed path is recorded in PREFIX/lib/nvme-stas/INSTALLED_FILES for uninstall.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = {
    "sbin/stafd": "stas.main:stafd_main",
    "sbin/stacd": "stas.main:stacd_main",
    "bin/stafctl": "stas.ctl.stafctl:main",
    "bin/stacctl": "stas.ctl.stacctl:main",
    "bin/stasadm": "stas.ctl.stasadm:main",
}
MANIFEST = "INSTALLED_FILES"
# what stas imports from outside the standard library, libnvme ([kernel]) included: without
# it in the private directory the host's python3-libnvme may be the one to use
BUNDLED_DEPS = ("trio", "trio_util", "attrs", "attr", "jeepney", "zeroconf", "libnvme")


def launcher(libdir: str, target: str, python: str, bundled: bool = False) -> str:
    """A program's launcher. ``bundled`` (every dependency in ``libdir``): ``python -S``, no
    ``site``: the host's site-packages and their ``.pth`` hooks (_distutils_hack, certifi,
    sitecustomize...: imports every start pays, seconds under emulation) are not needed."""
    module, func = target.split(":")
    return (
        f"#!{python}{' -S' if bundled else ''}\n"
        f'"""nvme-stas launcher: {module}.{func} from {libdir}."""\n'
        "import sys\n\n"
        f"sys.path.insert(0, {libdir!r})\n"
        f"from {module} import {func}\n\n"
        f"sys.exit({func}())\n"
    )


class Installer:
    def __init__(self, destdir: str, prefix: str, sysconfdir: str, python: str) -> None:
        self.dest = Path(destdir or "/")
        self.prefix = prefix
        self.sysconfdir = sysconfdir
        self.python = python
        self.libdir = f"{prefix}/lib/nvme-stas"
        self.installed: list[str] = []

    def path(self, abs_path: str) -> Path:
        return self.dest / abs_path.lstrip("/")

    def put(self, abs_path: str, data: bytes, mode: int = 0o644) -> None:
        target = self.path(abs_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)
        self.installed.append(abs_path)

    def put_text(self, abs_path: str, text: str, mode: int = 0o644) -> None:
        self.put(abs_path, text.encode(), mode)

    def install_package(self, with_deps: bool) -> None:
        lib = self.path(self.libdir)
        lib.mkdir(parents=True, exist_ok=True)
        if with_deps:
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--upgrade",
                 "--target", str(lib), f"{ROOT}[kernel]"],
                check=True,
            )  # fmt: skip
        else:
            shutil.copytree(
                ROOT / "stas", lib / "stas", dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )  # fmt: skip
        self.byte_compile(lib)
        self.record_attrs_code(lib, self.bundled())
        for f in sorted(lib.rglob("*")):
            if f.is_file():
                self.installed.append("/" + str(f.relative_to(self.dest)))

    def byte_compile(self, lib: Path) -> None:
        """Compile with the interpreter the programs run under, so a daemon's first start does
        not compile ~300 modules (seconds under emulation); paths recorded as installed."""
        cmd = [self.python, "-m", "compileall", "-q", "-j", "0", "-s", str(self.dest), "-p", "/"]
        done = subprocess.run([*cmd, str(lib)], capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            print(f"install: byte-compiling with {self.python} failed: {tail}", file=sys.stderr)

    def record_attrs_code(self, lib: Path, bundled: bool) -> None:
        """attrs' generated methods of the daemons' start-up, compiled once with the launchers'
        interpreter and path (stas.attrs_cache: a daemon would compile them at every start)."""
        out = lib / "stas" / "attrs-code.cache"
        code = f"import sys; sys.path.insert(0, {str(lib)!r}); import stas.attrs_cache as c; " \
               f"c.main([{str(out)!r}])"  # fmt: skip
        flags = ["-S"] if bundled else []
        done = subprocess.run([self.python, *flags, "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            out.unlink(missing_ok=True)  # the daemons then compile as usual
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            print(f"install: recording attrs' code with {self.python} failed: {tail}",
                  file=sys.stderr)  # fmt: skip

    def bundled(self) -> bool:
        """Whether the dependencies are in the private library directory (not the host's)."""
        lib = self.path(self.libdir)
        return all((lib / dep).is_dir() for dep in BUNDLED_DEPS)

    def install(self, with_deps: bool) -> None:
        self.install_package(with_deps)
        bundled = self.bundled()
        for rel, target in PROGRAMS.items():
            text = launcher(self.libdir, target, self.python, bundled)
            self.put_text(f"{self.prefix}/{rel}", text, 0o755)
        unitdir = (
            "/usr/lib/systemd/system"
            if self.prefix == "/usr"
            else f"{self.prefix}/lib/systemd/system"
        )
        for unit in sorted((ROOT / "units").iterdir()):
            text = unit.read_text()
            for rel in PROGRAMS:
                text = text.replace(f"/usr/{rel}", f"{self.prefix}/{rel}")
            self.put_text(f"{unitdir}/{unit.name}", text)
        for policy in sorted((ROOT / "conf").glob("org.nvmexpress.*.conf")):
            self.put(f"{self.prefix}/share/dbus-1/system.d/{policy.name}", policy.read_bytes())
        etc = f"{self.sysconfdir}/stas"
        for name in ("stafd.conf", "stacd.conf"):
            if self.path(f"{etc}/{name}").exists():
                print(f"install: keeping existing {etc}/{name}")
                continue
            self.put(f"{etc}/{name}", (ROOT / "conf" / name).read_bytes())
        self.put(f"{etc}/sys.conf.doc", (ROOT / "conf" / "sys.conf.doc").read_bytes())
        mandir = ROOT / ".build" / "man"
        if mandir.is_dir():
            for page in sorted(mandir.iterdir()):
                section = page.suffix.lstrip(".")
                self.put(f"{self.prefix}/share/man/man{section}/{page.name}", page.read_bytes())
        manifest = f"{self.libdir}/{MANIFEST}"
        self.installed.append(manifest)
        self.put_text(manifest, "\n".join(sorted(set(self.installed))) + "\n")

    def uninstall(self) -> int:
        manifest = self.path(f"{self.libdir}/{MANIFEST}")
        if not manifest.exists():
            print(f"uninstall: nothing recorded at {manifest}", file=sys.stderr)
            return 1
        etc_confs = {f"{self.sysconfdir}/stas/{n}" for n in ("stafd.conf", "stacd.conf")}
        for abs_path in manifest.read_text().split():
            if abs_path in etc_confs:
                continue  # the admin's configuration stays, like a package's conffiles
            p = self.path(abs_path)
            if p.is_file() or p.is_symlink():
                p.unlink()
        lib = self.path(self.libdir)
        if lib.exists():
            shutil.rmtree(lib)
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("action", choices=("install", "uninstall"))
    ap.add_argument("--destdir", default=os.environ.get("DESTDIR", ""))
    ap.add_argument("--prefix", default=os.environ.get("PREFIX", "/usr"))
    ap.add_argument("--sysconfdir", default=os.environ.get("SYSCONFDIR", "/etc"))
    ap.add_argument("--python", default="/usr/bin/python3", help="interpreter for the launchers")
    ap.add_argument("--no-deps", action="store_true", help="copy stas only (deps from the system)")
    args = ap.parse_args(argv)
    inst = Installer(args.destdir, args.prefix, args.sysconfdir, args.python)
    if args.action == "uninstall":
        return inst.uninstall()
    try:
        inst.install(with_deps=not args.no_deps)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"install: {exc}", file=sys.stderr)
        return 1
    print(f"installed {len(inst.installed)} files under {inst.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
