"""Load and validate nvmet.conf, the target description used by nvmet.py and the simulator.

The file is a Python literal (a dict), as upstream's ``utils/nvmet/nvmet.conf``. Upstream
``eval()``s it; we use ``ast.literal_eval`` so the file can never run code, and we validate
every item up front: each NQN and port id becomes a configfs directory name and each value is
written into a configfs attribute, so a bad value must be caught here with a message naming
the file, the item and the value, not as an obscure EINVAL half-way through building a target.
"""

from __future__ import annotations

import ast
import base64
import binascii
import ipaddress
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import attrs

TRTYPES = ("tcp", "rdma", "fc", "loop")
IP_ADRFAMS = ("ipv4", "ipv6")
KERNEL_ADRFAMS = ("ipv4", "ipv6", "ib", "fc", "loop")
DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"

# Caps, checked before anything is built (upstream's largest config: 80 x 6 namespaces).
MAX_CONF_BYTES = 1 << 20
MAX_PORTS = 256
MAX_SUBSYSTEMS = 1024
MAX_NAMESPACES_TOTAL = 4096
MAX_ALLOWED_HOSTS = 256
MAX_NQN_BYTES = 223
MAX_NSID = 0xFFFFFFFE
MAX_PORT_ID = 0xFFFF
MAX_TOKEN_CHARS = 255


@attrs.frozen
class Caps:
    """Size caps; the simulator raises them (it builds no configfs, only memory)."""

    conf_bytes: int = MAX_CONF_BYTES
    subsystems: int = MAX_SUBSYSTEMS
    namespaces_total: int = MAX_NAMESPACES_TOTAL


SIMULATOR_CAPS = Caps(conf_bytes=64 << 20, subsystems=200_000, namespaces_total=2_000_000)

_FC_ADDR = re.compile(r"nn-0x[0-9a-fA-F]{16}:pn-0x[0-9a-fA-F]{16}")
_DHCHAP_KEY = re.compile(r"DHHC-1:(0[0-3]):([A-Za-z0-9+/]{4,200}={0,2}):")
# The secret's own size (a CRC-32 follows it) per DHHC-1 hash indicator: 00 (untransformed)
# any of them, 01/02/03 (transformed with SHA-256/384/512) exactly the digest size.
DHCHAP_SECRET_SIZES = {"00": (32, 48, 64), "01": (32,), "02": (48,), "03": (64,)}
# nvmet's hosts/<nqn>/dhchap_hash and dhchap_dhgroup values (drivers/nvme/common/auth.c).
DHCHAP_HASHES = ("hmac(sha256)", "hmac(sha384)", "hmac(sha512)")
DHCHAP_DHGROUPS = ("null", "ffdhe2048", "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192")
_PORT_KEYS = ("id", "trtype", "traddr", "trsvcid", "adrfam", "tsas", "treq")
# TLS (TP 8011) on a tcp port: configfs addr_tsas and addr_treq values (6.7+ nvmet).
TCP_TSAS = ("none", "tls1.3")
TREQS = ("not specified", "required", "not required")
_TLS_PSK = re.compile(r"NVMeTLSkey-1:(0[0-2]):([A-Za-z0-9+/]{4,200}={0,2}):")
_SUBSYS_KEYS = ("subsysnqn", "port", "namespaces", "allowed_hosts")
_HOST_KEYS = ("nqn", "key", "ctrl_key", "hash", "dhgroup", "psk")


class NvmetConfError(ValueError):
    """nvmet.conf cannot be used; the message names the file, the item and the bad value."""


@attrs.frozen
class Port:
    """One nvmet port. Empty traddr/trsvcid/adrfam mean "not set" (only for loop and fc)."""

    id: int
    trtype: str
    traddr: str = ""
    trsvcid: str = ""
    adrfam: str = ""
    tsas: str = ""  # tcp only: 'tls1.3' makes the port TLS-only (nvmet sets TREQ required)
    treq: str = ""


@attrs.frozen
class AllowedHost:
    """A host NQN allowed into a subsystem, with its optional DH-HMAC-CHAP settings.

    ``key`` is the host's secret (the target checks the host with it), ``ctrl_key`` the
    controller's (the host checks the target: bidirectional), ``hash`` and ``dhgroup`` what
    the target offers (None: the kernel's default, hmac(sha256) and null). The secrets never
    appear in ``repr``."""

    nqn: str
    key: str | None = attrs.field(default=None, repr=lambda v: "<secret>" if v else repr(v))
    ctrl_key: str | None = attrs.field(default=None, repr=lambda v: "<secret>" if v else repr(v))
    hash: str | None = None
    dhgroup: str | None = None
    # TLS PSK in interchange format: not a configfs attribute; nvmet.py derives the TLS PSK
    # for (host, subsystem) and puts it into the .nvme keyring, so it may differ between the
    # subsystems naming the host (eq=False: one hosts/<nqn> all the same).
    psk: str | None = attrs.field(
        default=None, eq=False, repr=lambda v: "<secret>" if v else repr(v)
    )

    def configfs_attributes(self) -> dict[str, str]:
        """hosts/<nqn>/ attributes to write, in an order the kernel accepts."""
        values = {
            "dhchap_hash": self.hash,
            "dhchap_dhgroup": self.dhgroup,
            "dhchap_key": self.key,
            "dhchap_ctrl_key": self.ctrl_key,
        }
        return {k: v for k, v in values.items() if v is not None}


def _crc_key_problem(encoded: str, sizes: tuple[int, ...], what: str, secret: str) -> str | None:
    """Why ``encoded`` is not base64 of a ``sizes``-byte ``secret`` followed by the CRC-32 of
    it, little-endian (DHHC-1 and NVMeTLSkey-1 both carry theirs so), or None. The message
    starts "is not ``what``" and never quotes the value."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return f"is not {what}: its base64 part does not decode"
    size = len(raw) - 4
    if size not in sizes:
        allowed = "/".join(str(n) for n in sizes)
        return f"is not {what}: {secret} is {allowed} bytes, not {max(size, 0)}"
    if zlib.crc32(raw[:size]).to_bytes(4, "little") != raw[size:]:
        return f"is not {what}: its CRC-32 does not match (mistyped?)"
    return None


def dhchap_secret_problem(value: object) -> str | None:
    """Why ``value`` is not a DHHC-1 secret the kernel accepts (never quoting it), or None.

    The kernel (nvme_auth_extract_key) wants base64 of a 32/48/64-byte secret followed by
    the CRC-32 of it, little-endian; the hash indicator fixes the size when it is not 00."""
    m = _DHCHAP_KEY.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        return "is not a DH-HMAC-CHAP key of the form DHHC-1:0N:<base64>:"
    sizes = DHCHAP_SECRET_SIZES[m[1]]
    return _crc_key_problem(m[2], sizes, "a DH-HMAC-CHAP key", f"a DHHC-1:{m[1]} secret")


def tls_psk_problem(value: object) -> str | None:
    """Why ``value`` is not a TLS PSK in interchange format (never quoting it), or None:
    ``NVMeTLSkey-1:0[0-2]:<base64 of a 32/48-byte key + CRC-32 LE>:`` as nvme gen-tls-key makes."""
    m = _TLS_PSK.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        return "is not a TLS PSK of the form NVMeTLSkey-1:0N:<base64>:"
    return _crc_key_problem(m[2], (32, 48), "a TLS PSK", "the key")


def normalize_hash(value: str) -> str | None:
    """'sha256', 'SHA-256' or 'hmac(sha256)' -> 'hmac(sha256)'; None if not one we know."""
    name = value.strip().lower().removeprefix("hmac(").removesuffix(")").replace("-", "")
    full = f"hmac({name})"
    return full if full in DHCHAP_HASHES else None


@attrs.frozen
class Subsystem:
    """A subsystem, the port it is exposed on (None: not linked) and its namespace ids."""

    nqn: str
    port: int | None
    namespaces: tuple[int, ...] = ()
    allowed_hosts: tuple[AllowedHost, ...] = ()


@attrs.frozen
class NvmetConf:
    """A validated nvmet.conf."""

    ports: tuple[Port, ...]
    subsystems: tuple[Subsystem, ...]

    @property
    def namespace_count(self) -> int:
        """Namespaces over all subsystems: each gets its own null_blk device."""
        return sum(len(s.namespaces) for s in self.subsystems)

    @property
    def transports(self) -> tuple[str, ...]:
        """Transport types used by the ports, in first-use order (one kernel module each)."""
        return tuple(dict.fromkeys(p.trtype for p in self.ports))

    @property
    def hosts(self) -> tuple[AllowedHost, ...]:
        """Distinct allowed hosts over all subsystems (configfs has one hosts/<nqn> each)."""
        return tuple(dict.fromkeys(h for s in self.subsystems for h in s.allowed_hosts))

    def as_dict(self) -> dict[str, Any]:
        """The nvmet.conf literal for this configuration (parses back to an equal value)."""
        ports = []
        for p in self.ports:
            d: dict[str, Any] = {"id": p.id, "trtype": p.trtype}
            keys = ("traddr", "trsvcid", "adrfam", "tsas", "treq")
            d.update({k: getattr(p, k) for k in keys if getattr(p, k)})
            ports.append(d)
        subsystems = []
        for s in self.subsystems:
            sd: dict[str, Any] = {"subsysnqn": s.nqn, "port": s.port}
            sd["namespaces"] = list(s.namespaces)
            if s.allowed_hosts:
                sd["allowed_hosts"] = [_host_dict(h) for h in s.allowed_hosts]
            subsystems.append(sd)
        return {"ports": ports, "subsystems": subsystems}


def _host_dict(h: AllowedHost) -> dict[str, Any]:
    d: dict[str, Any] = {"nqn": h.nqn, "key": h.key}
    extra = {"ctrl_key": h.ctrl_key, "hash": h.hash, "dhgroup": h.dhgroup, "psk": h.psk}
    d.update({k: v for k, v in extra.items() if v is not None})
    return d


def load_nvmet_conf(path: str | Path, caps: Caps = Caps()) -> NvmetConf:
    """Read and validate an nvmet.conf file; any problem raises NvmetConfError."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(caps.conf_bytes + 1)
    except OSError as e:
        raise NvmetConfError(f"{source}: cannot read: {e.strerror or e}") from None
    if len(data) > caps.conf_bytes:
        raise NvmetConfError(f"{source}: file is larger than {caps.conf_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NvmetConfError(f"{source}: not valid UTF-8 at byte {e.start}") from None
    return parse_nvmet_conf(text, source, caps)


def parse_nvmet_conf(text: str, source: str = "nvmet.conf", caps: Caps = Caps()) -> NvmetConf:
    """Validate the text of an nvmet.conf; ``source`` prefixes every error message."""
    if len(text) > caps.conf_bytes:
        raise NvmetConfError(f"{source}: file is larger than {caps.conf_bytes} bytes")
    try:
        value = ast.literal_eval(text)
    except SyntaxError as e:
        raise NvmetConfError(f"{source}: not a Python literal: {e.msg} (line {e.lineno})") from None
    except (ValueError, TypeError, MemoryError, RecursionError) as e:
        raise NvmetConfError(f"{source}: not a Python literal: {_short(str(e))}") from None
    return _Checker(source, caps).conf(value)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: object) -> str:
    """repr() for messages, shortened so a huge bad value cannot flood the terminal."""
    return _short(repr(value))


@attrs.define
class _Checker:
    """Validation of one file; every failure names ``source`` and the item path."""

    source: str
    caps: Caps = Caps()

    def fail(self, where: str, message: str) -> NoReturn:
        raise NvmetConfError(f"{self.source}: {where}: {message}")

    def mapping(self, value: object, where: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            self.fail(where, f"{_show(value)} is not a dict")
        for key in value:
            if key not in allowed:
                self.fail(where, f"unknown key {_show(key)} (expected {', '.join(allowed)})")
        return value

    def sequence(self, value: object, where: str, cap: int) -> list[Any] | tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            self.fail(where, f"{_show(value)} is not a list")
        if len(value) > cap:
            self.fail(where, f"{len(value)} items is more than the limit of {cap}")
        return value

    def required(self, d: Mapping[str, Any], key: str, where: str) -> Any:
        if key not in d:
            self.fail(where, f"missing required key {key!r}")
        return d[key]

    def integer(self, value: object, where: str, lo: int, hi: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(where, f"{_show(value)} is not an integer")
        if not lo <= value <= hi:
            self.fail(where, f"{_show(value)} is out of range {lo}..{hi}")
        return value

    def choice(self, value: object, where: str, choices: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in choices:
            self.fail(where, f"{_show(value)} is not one of {', '.join(choices)}")
        return value

    def token(self, value: object, where: str) -> str:
        """A short printable string without whitespace: safe to write to a configfs attribute."""
        if not isinstance(value, str):
            self.fail(where, f"{_show(value)} is not a string")
        if not value or len(value) > MAX_TOKEN_CHARS:
            self.fail(where, f"{_show(value)} must be 1..{MAX_TOKEN_CHARS} characters")
        if not value.isprintable() or any(c.isspace() for c in value):
            self.fail(where, f"{_show(value)} contains whitespace or control characters")
        return value

    def nqn(self, value: object, where: str) -> str:
        """An NQN that is also usable as a configfs directory name."""
        if not isinstance(value, str):
            self.fail(where, f"{_show(value)} is not a string")
        if not value:
            self.fail(where, "the NQN is empty")
        for c in value:
            if c in "/," or c.isspace() or not c.isprintable():
                self.fail(
                    where,
                    f"{_show(value)} contains {c!r} (an NQN cannot contain '/', ',', "
                    "whitespace or control characters)",
                )
        if value in (".", ".."):
            self.fail(where, f"{value!r} is not usable as a directory name")
        if len(value.encode("utf-8")) > MAX_NQN_BYTES:
            self.fail(where, f"{_show(value)} is longer than {MAX_NQN_BYTES} bytes")
        return value

    def trsvcid(self, value: object, where: str) -> str:
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
            self.fail(where, f"{_show(value)} is not a TCP/UDP port number (1..65535)")
        return str(value)

    def conf(self, value: object) -> NvmetConf:
        top = self.mapping(value, "top level", ("ports", "subsystems"))
        raw_ports = self.sequence(top.get("ports", []), "ports", MAX_PORTS)
        ports = tuple(self.port(p, f"ports[{i}]") for i, p in enumerate(raw_ports))
        ids: set[int] = set()
        for i, p in enumerate(ports):
            if p.id in ids:
                self.fail(f"ports[{i}].id", f"{p.id} is a duplicate")
            ids.add(p.id)
        raw_subs = self.sequence(top.get("subsystems", []), "subsystems", self.caps.subsystems)
        subsystems = tuple(
            self.subsystem(s, f"subsystems[{i}]", ids) for i, s in enumerate(raw_subs)
        )
        self.cross_checks(subsystems)
        return NvmetConf(ports=ports, subsystems=subsystems)

    def port(self, value: object, where: str) -> Port:
        d = self.mapping(value, where, _PORT_KEYS)
        pid = self.integer(self.required(d, "id", where), f"{where}.id", 0, MAX_PORT_ID)
        trtype = self.choice(self.required(d, "trtype", where), f"{where}.trtype", TRTYPES)
        if trtype in ("tcp", "rdma"):
            traddr = self.token(self.required(d, "traddr", where), f"{where}.traddr")
            trsvcid = self.trsvcid(self.required(d, "trsvcid", where), f"{where}.trsvcid")
            try:
                ip = ipaddress.ip_address(traddr)
            except ValueError:
                ip = None
            derived = "ipv4" if isinstance(ip, ipaddress.IPv4Address) else "ipv6"
            adrfam = self.choice(d.get("adrfam", derived), f"{where}.adrfam", IP_ADRFAMS)
            if ip is None:
                self.fail(f"{where}.traddr", f"{_show(traddr)} is not an IP address")
            if adrfam != derived:
                self.fail(f"{where}.traddr", f"{_show(traddr)} is not a valid {adrfam} address")
            tsas = treq = ""
            if "tsas" in d:
                if trtype != "tcp":
                    self.fail(f"{where}.tsas", "is only for tcp ports (TLS)")
                tsas = self.choice(d["tsas"], f"{where}.tsas", TCP_TSAS)
            if "treq" in d:
                treq = self.choice(d["treq"], f"{where}.treq", TREQS)
            return Port(pid, trtype, traddr, trsvcid, adrfam, tsas, treq)
        for key in ("tsas", "treq"):
            if key in d:
                self.fail(f"{where}.{key}", "is only for tcp ports (TLS)")
        if trtype == "fc":
            traddr = self.token(self.required(d, "traddr", where), f"{where}.traddr")
            if not _FC_ADDR.fullmatch(traddr):
                self.fail(
                    f"{where}.traddr",
                    f"{_show(traddr)} is not an FC address (nn-0x<16 hex>:pn-0x<16 hex>)",
                )
            adrfam = self.choice(d.get("adrfam", "fc"), f"{where}.adrfam", ("fc",))
        else:
            traddr = self.token(d["traddr"], f"{where}.traddr") if "traddr" in d else ""
            adrfam = ""
            if "adrfam" in d:
                adrfam = self.choice(d["adrfam"], f"{where}.adrfam", KERNEL_ADRFAMS)
        trsvcid_raw = d.get("trsvcid")
        if isinstance(trsvcid_raw, int) and not isinstance(trsvcid_raw, bool):
            trsvcid_raw = str(trsvcid_raw)
        trsvcid = "" if trsvcid_raw is None else self.token(trsvcid_raw, f"{where}.trsvcid")
        return Port(pid, trtype, traddr, trsvcid, adrfam)

    def subsystem(self, value: object, where: str, port_ids: set[int]) -> Subsystem:
        d = self.mapping(value, where, _SUBSYS_KEYS)
        nqn = self.nqn(self.required(d, "subsysnqn", where), f"{where}.subsysnqn")
        if nqn == DISCOVERY_NQN:
            self.fail(f"{where}.subsysnqn", f"{nqn!r} is reserved for the discovery subsystem")
        port = d.get("port")
        if port is not None:
            port = self.integer(port, f"{where}.port", 0, MAX_PORT_ID)
            if port not in port_ids:
                known = ", ".join(str(i) for i in sorted(port_ids)) or "none"
                self.fail(f"{where}.port", f"{port} is not the id of any port (known: {known})")
        cap = self.caps.namespaces_total
        raw_ns = self.sequence(d.get("namespaces", []), f"{where}.namespaces", cap)
        namespaces: list[int] = []
        for i, n in enumerate(raw_ns):
            nsid = self.integer(n, f"{where}.namespaces[{i}]", 1, MAX_NSID)
            if nsid in namespaces:
                self.fail(f"{where}.namespaces[{i}]", f"{nsid} is a duplicate")
            namespaces.append(nsid)
        raw_hosts = self.sequence(
            d.get("allowed_hosts", []), f"{where}.allowed_hosts", MAX_ALLOWED_HOSTS
        )
        hosts: list[AllowedHost] = []
        for i, h in enumerate(raw_hosts):
            host = self.allowed_host(h, f"{where}.allowed_hosts[{i}]")
            if any(host.nqn == other.nqn for other in hosts):
                self.fail(f"{where}.allowed_hosts[{i}].nqn", f"{host.nqn!r} is a duplicate")
            hosts.append(host)
        return Subsystem(nqn, port, tuple(namespaces), tuple(hosts))

    def allowed_host(self, value: object, where: str) -> AllowedHost:
        d = self.mapping(value, where, _HOST_KEYS)
        nqn = self.nqn(self.required(d, "nqn", where), f"{where}.nqn")
        secrets: dict[str, str | None] = {}
        for name in ("key", "ctrl_key"):
            secret = d.get(name)
            if secret is not None and (problem := dhchap_secret_problem(secret)):
                self.fail(f"{where}.{name}", problem)  # never echoes what may be a secret
            secrets[name] = secret
        if secrets["ctrl_key"] is not None and secrets["key"] is None:
            self.fail(
                f"{where}.ctrl_key", "needs 'key' too (bidirectional auth is on top of the host's)"
            )
        hash_ = d.get("hash")
        if hash_ is not None:
            norm = normalize_hash(hash_) if isinstance(hash_, str) else None
            if norm is None:
                self.fail(f"{where}.hash", f"{_show(hash_)} is not one of sha256, sha384, sha512")
            hash_ = norm
        dhgroup = d.get("dhgroup")
        if dhgroup is not None:
            dhgroup = self.choice(dhgroup, f"{where}.dhgroup", DHCHAP_DHGROUPS)
        if (hash_ or dhgroup) and secrets["key"] is None:
            self.fail(
                where, "'hash' and 'dhgroup' need a 'key' (they only matter with DH-HMAC-CHAP)"
            )
        psk = d.get("psk")
        if psk is not None and (problem := tls_psk_problem(psk)):
            self.fail(f"{where}.psk", problem)  # never echoes the key
        return AllowedHost(nqn, secrets["key"], secrets["ctrl_key"], hash_, dhgroup, psk)

    def cross_checks(self, subsystems: tuple[Subsystem, ...]) -> None:
        seen: dict[str, int] = {}
        keys: dict[str, tuple[AllowedHost, int]] = {}
        total = 0
        for i, s in enumerate(subsystems):
            if s.nqn in seen:
                self.fail(f"subsystems[{i}].subsysnqn", f"{s.nqn!r} is a duplicate")
            seen[s.nqn] = i
            total += len(s.namespaces)
            for j, h in enumerate(s.allowed_hosts):
                other, first = keys.setdefault(h.nqn, (h, i))
                for field in ("key", "ctrl_key", "hash", "dhgroup"):
                    if getattr(other, field) != getattr(h, field):
                        self.fail(
                            f"subsystems[{i}].allowed_hosts[{j}].{field}",
                            f"host {_show(h.nqn)} has a different {field} in subsystems[{first}]"
                            " (configfs has one hosts/<nqn> for all subsystems)",
                        )
        if total > self.caps.namespaces_total:
            cap = self.caps.namespaces_total
            self.fail("subsystems", f"{total} namespaces is more than {cap}")
