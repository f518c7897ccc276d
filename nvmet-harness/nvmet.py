#!/usr/bin/env python3
"""nvmet.py - build, inspect and tear down a kernel NVMe target (nvmet) through configfs.

Same command line as upstream's utils/nvmet/nvmet.py (create, clean, ls, link, unlink), plus
``--configfs DIR`` and ``--no-modprobe`` so tests can drive it against a plain directory.

Every command is a pure *plan* (a list of operations) computed from nvmet.conf or from the
configfs tree as it is, then applied by an executor or, with -d/--dry-run, printed as the
equivalent shell commands. Keeping the plan pure is what lets the tests check exactly what
would be done to /sys/kernel/config without root or NVMe modules.

Plain directories versus real configfs (the executor's ``emulate`` mode):
- mkdir has ``mkdir -p`` semantics in both modes. In configfs, creating subsystems/<nqn> or
  ports/<id> auto-creates their default groups (namespaces/, allowed_hosts/, subsystems/ ...);
  a plain directory has none, so missing parents are created.
- rmdir of a configfs item works although it holds attribute files and default groups; in a
  plain directory the executor first deletes those files and empty sub-directories (never a
  symlink or a non-empty directory: those must have been removed by the plan).
- configfs resolves a symlink's target when the link is made, relative to the *current
  directory*; so on real configfs links are made with the absolute target (the kernel shows
  its own relative form), in a plain directory with the relative form of the plan.
"""

from __future__ import annotations

import argparse
import os
import pprint
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
from nvmet_config import NvmetConf, NvmetConfError, load_nvmet_conf

VERSION = "1.0"
PROG = "nvmet.py"
DEFAULT_CONFIGFS = Path("/sys/kernel/config")
DEFAULT_CONF = Path(__file__).resolve().parent / "nvmet.conf"
TRANSPORT_MODULES = {
    "tcp": "nvmet_tcp",
    "rdma": "nvmet_rdma",
    "fc": "nvmet_fc",
    "loop": "nvme_loop",
}
# hosts/<nqn>/ attributes holding DH-HMAC-CHAP secrets: shown as <secret> in output.
SECRET_ATTRIBUTES = frozenset({"dhchap_key", "dhchap_ctrl_key"})
# Unload order for clean: transports first (they hold nvmet), then nvmet, then the disks.
REMOVE_MODULES = (*TRANSPORT_MODULES.values(), "nvmet", "null_blk")


class NvmetError(Exception):
    """A user-facing failure: printed as one line on stderr, exit status 1."""


# --- operations ---------------------------------------------------------------------------


@attrs.frozen
class Modprobe:
    module: str
    args: tuple[str, ...] = ()


@attrs.frozen
class ModprobeRemove:
    module: str


@attrs.frozen
class Mkdir:
    path: Path


@attrs.frozen
class Write:
    """Write ``value`` to an attribute; a ``secret`` value is never printed or logged."""

    path: Path
    value: str = attrs.field(repr=False)
    secret: bool = False


@attrs.frozen
class InsertPsk:
    """Put the TLS PSK derived from ``psk`` for (host, subsystem) into the .nvme keyring,
    as ``nvme check-tls-key --insert`` does; the key is never printed."""

    hostnqn: str
    subnqn: str
    psk: str = attrs.field(repr=False)


@attrs.frozen
class Symlink:
    """``link`` pointing at ``target``, a path relative to the link's directory."""

    target: str
    link: Path

    @property
    def absolute_target(self) -> Path:
        return Path(os.path.normpath(self.link.parent / self.target))


@attrs.frozen
class Unlink:
    link: Path


@attrs.frozen
class Rmdir:
    path: Path


Op = Modprobe | ModprobeRemove | Mkdir | Write | InsertPsk | Symlink | Unlink | Rmdir


def render(op: Op) -> str:
    """The shell command equivalent to ``op`` (what --dry-run prints)."""
    q = shlex.quote
    match op:
        case Modprobe(module, args):
            return shlex.join(["modprobe", module, *args])
        case ModprobeRemove(module):
            return shlex.join(["modprobe", "-r", module])
        case Mkdir(path):
            return f"mkdir -p {q(str(path))}"
        case Write(path, value, secret):
            return f"echo -n {q('<secret>' if secret else value)} > {q(str(path))}"
        case InsertPsk(hostnqn, subnqn, _):
            return shlex.join(
                ["nvme", "check-tls-key", "--insert", f"--hostnqn={hostnqn}",
                 f"--subsysnqn={subnqn}", "--identity=1", "--keydata=<secret>"]
            )  # fmt: skip
        case Symlink():
            return f"ln -s {q(str(op.absolute_target))} {q(str(op.link))}"
        case Unlink(link):
            return f"rm {q(str(link))}"
        case Rmdir(path):
            return f"rmdir {q(str(path))}"
    raise AssertionError(op)


# --- reading the configfs tree --------------------------------------------------------------


@attrs.frozen
class NamespaceState:
    nsid: str
    device_path: str
    enable: str


@attrs.frozen
class SubsystemState:
    nqn: str
    allow_any_host: str
    namespaces: tuple[NamespaceState, ...]
    allowed_hosts: tuple[str, ...]


@attrs.frozen
class PortState:
    id: str
    trtype: str
    traddr: str
    trsvcid: str
    adrfam: str
    subsystems: tuple[str, ...]


@attrs.frozen
class TargetState:
    """What exists under <configfs>/nvmet, whoever created it."""

    ports: tuple[PortState, ...] = ()
    subsystems: tuple[SubsystemState, ...] = ()
    hosts: tuple[str, ...] = ()

    def port(self, port_id: str) -> PortState | None:
        return next((p for p in self.ports if p.id == port_id), None)

    def subsystem(self, nqn: str) -> SubsystemState | None:
        return next((s for s in self.subsystems if s.nqn == nqn), None)


def _sort_key(name: str) -> tuple[int, int, str]:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _names(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory), key=_sort_key)
    except OSError:  # absent (or unreadable): nothing there as far as we can tell
        return []


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def read_state(configfs: Path) -> TargetState:
    """Snapshot <configfs>/nvmet; a missing tree is an empty target."""
    root = configfs / "nvmet"
    ports = []
    for pid in _names(root / "ports"):
        d = root / "ports" / pid
        addr = [_read(d / f"addr_{a}") for a in ("trtype", "traddr", "trsvcid", "adrfam")]
        ports.append(PortState(pid, *addr, tuple(_names(d / "subsystems"))))
    subsystems = []
    for nqn in _names(root / "subsystems"):
        d = root / "subsystems" / nqn
        namespaces = tuple(
            NamespaceState(
                n,
                _read(d / "namespaces" / n / "device_path"),
                _read(d / "namespaces" / n / "enable"),
            )
            for n in _names(d / "namespaces")
        )
        allow = _read(d / "attr_allow_any_host")
        subsystems.append(
            SubsystemState(nqn, allow, namespaces, tuple(_names(d / "allowed_hosts")))
        )
    return TargetState(tuple(ports), tuple(subsystems), tuple(_names(root / "hosts")))


# --- plans (pure) ----------------------------------------------------------------------------


def plan_create(conf: NvmetConf, configfs: Path) -> list[Op]:
    """Modules, ports, hosts, subsystems with namespaces, then the port->subsystem links."""
    root = configfs / "nvmet"
    # Reload null_blk so nr_devices is honoured (a loaded module ignores new parameters).
    ops: list[Op] = [ModprobeRemove("null_blk")]
    ops.append(Modprobe("null_blk", (f"nr_devices={max(1, conf.namespace_count)}",)))
    ops.append(Modprobe("nvmet"))
    ops += [Modprobe(TRANSPORT_MODULES[t]) for t in conf.transports]
    for port in conf.ports:
        d = root / "ports" / str(port.id)
        ops.append(Mkdir(d))
        for attr in ("trtype", "traddr", "trsvcid", "adrfam", "tsas", "treq"):
            if value := getattr(port, attr):  # tsas before treq: nvmet derives one from the other
                ops.append(Write(d / f"addr_{attr}", value))
    for host in conf.hosts:
        ops.append(Mkdir(root / "hosts" / host.nqn))
        for attr, value in host.configfs_attributes().items():
            secret = attr in SECRET_ATTRIBUTES
            ops.append(Write(root / "hosts" / host.nqn / attr, value, secret=secret))
    device = 0
    for subsys in conf.subsystems:
        d = root / "subsystems" / subsys.nqn
        ops += [Mkdir(d), Write(d / "attr_allow_any_host", "0" if subsys.allowed_hosts else "1")]
        for host in subsys.allowed_hosts:
            ops.append(Symlink(f"../../../hosts/{host.nqn}", d / "allowed_hosts" / host.nqn))
            if host.psk is not None:
                ops.append(InsertPsk(host.nqn, subsys.nqn, host.psk))
        for nsid in subsys.namespaces:
            ns = d / "namespaces" / str(nsid)
            ops += [Mkdir(ns), Write(ns / "device_path", f"/dev/nullb{device}")]
            ops.append(Write(ns / "enable", "1"))
            device += 1
    for subsys in conf.subsystems:
        if subsys.port is not None:
            link = root / "ports" / str(subsys.port) / "subsystems" / subsys.nqn
            ops.append(Symlink(f"../../../subsystems/{subsys.nqn}", link))
    return ops


def check_create(conf: NvmetConf, state: TargetState, configfs: Path) -> None:
    """Refuse to build over an existing port or subsystem (configfs would fail half-way)."""
    where = configfs / "nvmet"
    for port in conf.ports:
        if state.port(str(port.id)):
            raise NvmetError(f"port {port.id} already exists in {where}; run '{PROG} clean' first")
    for subsys in conf.subsystems:
        if state.subsystem(subsys.nqn):
            raise NvmetError(
                f"subsystem {subsys.nqn!r} already exists in {where}; run '{PROG} clean' first"
            )


def plan_clean(state: TargetState, configfs: Path) -> list[Op]:
    """Undo whatever exists, in the only order configfs accepts, then unload the modules."""
    root = configfs / "nvmet"
    ops: list[Op] = []
    for port in state.ports:
        ops += [Unlink(root / "ports" / port.id / "subsystems" / s) for s in port.subsystems]
    for subsys in state.subsystems:
        d = root / "subsystems" / subsys.nqn
        ops += [Unlink(d / "allowed_hosts" / h) for h in subsys.allowed_hosts]
    for subsys in state.subsystems:
        d = root / "subsystems" / subsys.nqn
        for ns in subsys.namespaces:
            if ns.enable == "1":
                ops.append(Write(d / "namespaces" / ns.nsid / "enable", "0"))
            ops.append(Rmdir(d / "namespaces" / ns.nsid))
        ops.append(Rmdir(d))
    ops += [Rmdir(root / "hosts" / h) for h in state.hosts]
    ops += [Rmdir(root / "ports" / p.id) for p in state.ports]
    ops += [ModprobeRemove(m) for m in REMOVE_MODULES]
    return ops


def _port_and_subsystem(state: TargetState, port: int, nqn: str) -> tuple[PortState, bool]:
    found = state.port(str(port))
    if found is None:
        known = ", ".join(p.id for p in state.ports) or "none"
        raise NvmetError(f"unknown port {port} (existing ports: {known})")
    return found, state.subsystem(nqn) is not None


def plan_link(state: TargetState, configfs: Path, port: int, nqn: str) -> list[Op]:
    """Expose subsystem ``nqn`` on ``port`` (the target sends a discovery-change AEN)."""
    found, exists = _port_and_subsystem(state, port, nqn)
    if not exists:
        raise NvmetError(f"unknown subsystem {nqn!r}")
    if nqn in found.subsystems:
        raise NvmetError(f"subsystem {nqn!r} is already linked to port {port}")
    link = configfs / "nvmet" / "ports" / str(port) / "subsystems" / nqn
    return [Symlink(f"../../../subsystems/{nqn}", link)]


def plan_unlink(state: TargetState, configfs: Path, port: int, nqn: str) -> list[Op]:
    """Hide subsystem ``nqn`` from ``port`` (the target sends a discovery-change AEN)."""
    found, exists = _port_and_subsystem(state, port, nqn)
    if nqn not in found.subsystems:
        if not exists:
            raise NvmetError(f"unknown subsystem {nqn!r}")
        raise NvmetError(f"subsystem {nqn!r} is not linked to port {port}")
    return [Unlink(configfs / "nvmet" / "ports" / str(port) / "subsystems" / nqn)]


def _num(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def ls_view(state: TargetState) -> dict[str, Any]:
    """What ``ls`` pprints: ports with their linked subsystems, subsystems with details."""
    ports = [
        {**attrs.asdict(p), "id": _num(p.id), "subsystems": list(p.subsystems)} for p in state.ports
    ]
    subsystems = [
        {
            "subsysnqn": s.nqn,
            "attr_allow_any_host": _num(s.allow_any_host),
            "namespaces": [
                {"id": _num(n.nsid), "device_path": n.device_path, "enable": _num(n.enable)}
                for n in s.namespaces
            ],
            "allowed_hosts": list(s.allowed_hosts),
        }
        for s in state.subsystems
    ]
    return {"ports": ports, "subsystems": subsystems}


# --- executing ---------------------------------------------------------------------------------


def run_command(argv: list[str]) -> None:
    """Run modprobe; its complaint (last stderr line) becomes the error message."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {done.returncode}"
        raise NvmetError(f"{shlex.join(argv)}: {reason}")


@attrs.frozen
class Executor:
    """Applies operations to the filesystem (see the module docstring for ``emulate``)."""

    emulate: bool
    run: Callable[[list[str]], None] = run_command
    sys_module: Path = Path("/sys/module")

    def apply(self, op: Op) -> None:
        try:
            self._apply(op)
        except OSError as e:
            if self._lacks_auth(op):
                raise NvmetError(
                    f"{render(op)}: this kernel's nvmet has no in-band authentication "
                    "(no dhchap_* host attributes; Debian's 6.12 kernel has it: "
                    "nvmet-harness/vm/runner.py --kernel 6.12)"
                ) from None
            raise NvmetError(f"{render(op)}: {e.strerror or e}") from None

    def _lacks_auth(self, op: Op) -> bool:
        """A dhchap_* attribute configfs does not offer: nvmet without CONFIG_NVME_TARGET_AUTH."""
        return (
            isinstance(op, Write)
            and op.path.name.startswith("dhchap_")
            and not self.emulate
            and not op.path.exists()
        )

    def _apply(self, op: Op) -> None:
        match op:
            case Modprobe(module, args):
                self.run(["modprobe", module, *args])
            case ModprobeRemove(module):
                if (self.sys_module / module).exists():  # not loaded: nothing to undo
                    self.run(["modprobe", "-r", module])
            case Mkdir(path):
                path.mkdir(parents=True, exist_ok=True)
            case Write(path, value, _):
                with open(path, "w") as f:
                    f.write(value)
            case InsertPsk(hostnqn, subnqn, psk):
                if not self.emulate:  # a plain directory has no keyring to go with it
                    insert_tls_psk(hostnqn, subnqn, psk)
            case Symlink():
                op.link.parent.mkdir(parents=True, exist_ok=True)
                target = op.target if self.emulate else str(op.absolute_target)
                os.symlink(target, op.link)
            case Unlink(link):
                os.unlink(link)
            case Rmdir(path):
                if self.emulate:
                    self._remove_attributes(path)
                os.rmdir(path)

    @staticmethod
    def _remove_attributes(path: Path) -> None:
        """Plain-directory stand-in for configfs dropping attributes and default groups."""
        for child in path.iterdir():
            if child.is_symlink():
                continue  # left in place: the rmdir then fails as configfs would
            if child.is_dir():
                if not any(child.iterdir()):
                    child.rmdir()
            else:
                child.unlink()


def insert_tls_psk(hostnqn: str, subnqn: str, psk: str) -> int:
    """Derive (stas.nvme.tls_psk) and insert (stas.kernel.keyring) one TLS PSK; its serial."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from stas.kernel import keyring
    from stas.nvme import tls_psk

    derived = tls_psk.derive_tls_psk(tls_psk.parse_interchange(psk), hostnqn, subnqn)
    return keyring.insert_psk(keyring.resolve_keyring(keyring.DEFAULT_KEYRING), derived)


def is_configfs(path: Path) -> bool:
    """Whether ``path`` lies on a mounted configfs (longest matching mount point wins)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return path.resolve() == DEFAULT_CONFIGFS
    target = path.resolve()
    best, fstype = Path("/"), ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1]))
        if target.is_relative_to(point) and len(point.parts) >= len(best.parts):
            best, fstype = point, fields[2]
    return fstype == "configfs"


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # Global options are accepted before or after the sub-command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--configfs",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"configfs mount point (default: {DEFAULT_CONFIGFS}); tests use a plain directory",
    )
    common.add_argument(
        "--no-modprobe",
        action="store_true",
        default=argparse.SUPPRESS,
        help="do not load or unload kernel modules",
    )
    parser = argparse.ArgumentParser(
        prog=PROG, description="Configure the kernel NVMe target (nvmet).", parents=[common]
    )
    parser.add_argument("-v", "--version", action="version", version=f"{PROG} {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dry = argparse.ArgumentParser(add_help=False)
    dry.add_argument(
        "-d", "--dry-run", action="store_true", help="only print the equivalent shell commands"
    )
    create = sub.add_parser(
        "create", help="build the target from a config file", parents=[common, dry]
    )
    create.add_argument(
        "-f", "--conf-file", type=Path, default=DEFAULT_CONF, help=f"default: {DEFAULT_CONF}"
    )
    sub.add_parser(
        "clean", help="remove the whole target and unload the modules", parents=[common, dry]
    )
    sub.add_parser("ls", help="print the current ports and subsystems", parents=[common])
    for name, verb in (("link", "expose a subsystem on"), ("unlink", "hide a subsystem from")):
        p = sub.add_parser(name, help=f"{verb} a port", parents=[common, dry])
        p.add_argument("-p", "--port", type=int, required=True, help="port id")
        p.add_argument("-s", "--subnqn", required=True, help="subsystem NQN")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (user errors: one line, status 1)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else 0
    configfs: Path = getattr(args, "configfs", DEFAULT_CONFIGFS)
    modprobe = not getattr(args, "no_modprobe", False)
    dry_run = getattr(args, "dry_run", False)
    try:
        return _run(args, configfs, modprobe, dry_run)
    except (NvmetError, NvmetConfError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, configfs: Path, modprobe: bool, dry_run: bool) -> int:
    if args.command == "ls":
        pprint.pprint(ls_view(read_state(configfs)), width=120, sort_dicts=False)
        return 0
    real = is_configfs(configfs)
    if not dry_run and os.geteuid() != 0 and (modprobe or real or configfs == DEFAULT_CONFIGFS):
        raise NvmetError(
            f"must be run as root to change {configfs} or load modules (try -d/--dry-run)"
        )
    state = read_state(configfs)
    if args.command == "create":
        conf = load_nvmet_conf(args.conf_file)
        check_create(conf, state, configfs)
        ops = plan_create(conf, configfs)
    elif args.command == "clean":
        ops = plan_clean(state, configfs)
    elif args.command == "link":
        ops = plan_link(state, configfs, args.port, args.subnqn)
    else:
        ops = plan_unlink(state, configfs, args.port, args.subnqn)
    if not modprobe:
        ops = [op for op in ops if not isinstance(op, Modprobe | ModprobeRemove)]
    executor = Executor(emulate=not real)
    for op in ops:
        print(render(op), flush=True)
        if not dry_run:
            executor.apply(op)
    return 0


if __name__ == "__main__":
    sys.exit(main())
