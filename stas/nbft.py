"""ACPI NBFT (NVM Express Boot Specification 1.0): a sans-IO parser, and what stas uses of it.

Firmware that booted from NVMe/TCP leaves this table in ``/sys/firmware/acpi/tables/NBFT*``:
the host identity, the host fabric interfaces (HFIs), the boot subsystems (SSNS) and the
discovery controllers it used. The bytes come from firmware, so nothing is trusted: every
offset is checked against the heap, every string and address is validated. A broken header,
control or host descriptor makes the table unusable (:class:`NbftError`, naming the field);
a broken HFI, SSNS, security or discovery descriptor is skipped and named in ``problems``,
so one bad entry does not hide the boot disks. Descriptors whose Valid flag is clear are
skipped silently, as the specification says they are reserved.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from stas.constants import WELL_KNOWN_DISC_NQN, default_trsvcid
from stas.kernel.options import InvalidOption, check_nqn
from stas.messages import Tid
from stas.nbft_files import FILE_PREFIX, SYSFS_DIR
from stas.net import normalise_ip

HEADER_LEN, CONTROL_LEN, HOST_LEN = 64, 64, 32
HFI_LEN, TCP_INFO_LEN, SSNS_LEN, EXT_INFO_LEN, SEC_LEN, DISC_LEN = 32, 128, 128, 18, 64, 32
TRTYPE_TCP = 3
DESC_CONTROL, DESC_HOST, DESC_HFI, DESC_SSNS, DESC_SEC, DESC_DISC, DESC_TRINFO, DESC_EXT = (
    1, 2, 3, 4, 5, 6, 7, 9,
)  # fmt: skip
SSNS_NON_BOOTABLE, SSNS_USE_SECURITY, SSNS_EXT_INFO = 0x02, 0x04, 0x10
SSNS_DISCOVERED, SSNS_UNAVAIL_MASK = 0x40, 0x0180
UNAVAILABILITY = {0x0000: "not indicated", 0x0080: "available", 0x0100: "unavailable"}
PRIMARY_ADMIN = {0x00: "not indicated", 0x08: "unselected", 0x10: "selected"}
URI_TRANSPORTS = ("tcp", "rdma")
log = logging.getLogger("stas.nbft")


class NbftError(ValueError):
    """The table cannot be used; the message names the file (if known), field and value."""


@attrs.frozen
class Host:
    nqn: str
    hostid: str  # UUID text
    hostid_configured: bool
    hostnqn_configured: bool
    primary_admin: str  # 'not indicated', 'unselected', 'selected', 'reserved'


@attrs.frozen
class Hfi:
    """A host fabric interface (only NVMe/TCP ones are defined by the specification)."""

    index: int
    transport: str
    mac: str  # aa:bb:cc:dd:ee:ff
    vlan: int
    ip: str
    prefix: int
    gateway: str  # '' when none
    route_metric: int
    primary_dns: str
    secondary_dns: str
    dhcp_override: bool
    dhcp_server: str
    host_name: str
    default_route: bool
    ip_origin: int
    pci_sbdf: int


@attrs.frozen
class Subsystem:
    """A boot subsystem and namespace (SSNS descriptor)."""

    index: int
    transport: str
    traddr: str
    trsvcid: str
    nqn: str
    port_id: int
    nsid: int
    nid_type: int  # 1 EUI-64, 2 NGUID, 3 UUID
    nid: bytes
    hfi_indexes: tuple[int, ...]  # primary first
    discovery_index: int  # 0 = none
    security_index: int  # 0 = none
    hdr_digest: bool
    data_digest: bool
    bootable: bool
    discovered: bool
    availability: str
    controller_id: int = 0
    asqsz: int = 0
    dhcp_root_path: str = ""


@attrs.frozen
class Discovery:
    index: int
    uri: str
    transport: str
    traddr: str
    trsvcid: str  # '' when the URI names no port
    nqn: str
    hfi_index: int
    security_index: int


@attrs.frozen
class Security:
    index: int
    flags: int
    secret_type: int
    sec_chan_algs: tuple[int, ...]
    auth_protocols: tuple[int, ...]
    cipher_suites: tuple[int, ...]
    dh_groups: tuple[int, ...]
    hash_functions: tuple[int, ...]
    keypath: str


@attrs.frozen
class Nbft:
    major: int
    minor: int
    oem_id: str
    oem_table_id: str
    oem_revision: int
    creator_id: int
    creator_revision: int
    driver_signature: str
    host: Host | None  # None when the control descriptor is not marked valid
    hfis: tuple[Hfi, ...] = ()
    subsystems: tuple[Subsystem, ...] = ()
    discoveries: tuple[Discovery, ...] = ()
    securities: tuple[Security, ...] = ()
    problems: tuple[str, ...] = ()  # descriptors skipped, and why

    def hfi(self, index: int) -> Hfi | None:
        return next((h for h in self.hfis if h.index == index), None)


class _Skip(Exception):
    """One descriptor is unusable; the table goes on."""


class _Reader:
    """Bounds-checked access to the table; every read names what it reads."""

    def __init__(self, data: bytes, heap_start: int, heap_end: int) -> None:
        self.data = data
        self.heap = (heap_start, heap_end)

    def unpack(self, fmt: str, off: int) -> tuple[Any, ...]:  # ints, and bytes for 's'
        return struct.unpack_from("<" + fmt, self.data, off)

    def obj(self, off: int, what: str) -> bytes:
        """The heap object a 6-byte reference at ``off`` points to (b'' when absent)."""
        where, length = self.unpack("IH", off)
        if length == 0:
            return b""
        lo, hi = self.heap
        if where < lo or where + length > hi:
            raise _Skip(f"{what}: heap object at {where}+{length} is outside the heap {lo}..{hi}")
        return self.data[where : where + length]

    def text(self, off: int, what: str) -> str:
        return _ascii(self.obj(off, what), what)


def _ascii(blob: bytes, what: str) -> str:
    text = blob.split(b"\0", 1)[0]
    if any(c < 0x20 or c > 0x7E for c in text):
        raise _Skip(f"{what}: {text[:64]!r} is not printable ASCII")
    return text.decode("ascii")


def _ip(raw: bytes) -> str:
    """16 address bytes: '' when zero, IPv4 when IPv4-mapped, else IPv6."""
    if not any(raw):
        return ""
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped) if ip.ipv4_mapped is not None else str(ip)


def _nqn(value: str, what: str, *, host: bool = False) -> str:
    try:
        return check_nqn(what, value, must_be_nqn=host)
    except InvalidOption as exc:
        raise _Skip(str(exc)) from None


def parse_uri(uri: str) -> tuple[str, str, str]:
    """``nvme+tcp://ADDR[:PORT]/`` as (transport, traddr, trsvcid); NbftError if malformed."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise NbftError(f"discovery URI {uri!r}: {exc}") from None
    scheme, _, transport = parts.scheme.partition("+")
    if scheme != "nvme" or transport not in URI_TRANSPORTS:
        raise NbftError(f"discovery URI {uri!r}: scheme is not nvme+tcp or nvme+rdma")
    host = parts.hostname or ""
    ip = normalise_ip(host)  # IPv4-mapped: the IPv4 address
    if ip is None:
        raise NbftError(f"discovery URI {uri!r}: {host!r} is not an IP address")
    if port == 0:
        raise NbftError(f"discovery URI {uri!r}: port 0")
    return transport, ip[1], "" if port is None else str(port)


def _list(r: _Reader, ctl_off: int, size: int, length: int, what: str) -> list[int]:
    """Offsets of each descriptor of one list of the control descriptor."""
    start, stride, _version, count = r.unpack("IHBB", ctl_off)
    if count == 0:
        return []
    if stride < size:
        raise NbftError(f"{what} descriptor length {stride} is shorter than {size}")
    if start < HEADER_LEN + CONTROL_LEN or start + stride * count > length:
        raise NbftError(f"{what} descriptor list at {start} ({count} x {stride}) is outside the "
                        f"table ({length} bytes)")  # fmt: skip
    return [start + i * stride for i in range(count)]


def _host(r: _Reader, length: int) -> Host:
    off, size = r.unpack("IH", HEADER_LEN + 8)
    if size < HOST_LEN or off < HEADER_LEN + CONTROL_LEN or off + HOST_LEN > length:
        raise NbftError(f"host descriptor at {off}+{size} is outside the table ({length} bytes)")
    sid, flags, hostid = r.unpack("BB16s", off)
    if sid != DESC_HOST:
        raise NbftError(f"host descriptor: structure ID {sid}, expected {DESC_HOST}")
    if not flags & 1:
        raise NbftError("host descriptor: Valid flag not set")
    try:
        nqn = _nqn(r.text(off + 18, "host NQN"), "host NQN", host=True)
    except _Skip as exc:
        raise NbftError(str(exc)) from None
    return Host(
        nqn=nqn,
        hostid=str(uuid.UUID(bytes=hostid)),
        hostid_configured=bool(flags & 2),
        hostnqn_configured=bool(flags & 4),
        primary_admin=PRIMARY_ADMIN.get(flags & 0x18, "reserved"),
    )


def _hfi(r: _Reader, off: int) -> Hfi | None:
    sid, index, flags, trtype = r.unpack("BBBB", off)
    if not flags & 1:
        return None
    what = f"HFI descriptor {index}"
    if sid != DESC_HFI:
        raise _Skip(f"{what}: structure ID {sid}, expected {DESC_HFI}")
    if index == 0:
        raise _Skip(f"{what}: index 0 (indexes start at 1)")
    if trtype != TRTYPE_TCP:
        raise _Skip(f"{what}: transport type {trtype} (only 3, NVMe/TCP, is defined)")
    info = r.obj(off + 16, f"{what}: transport info")
    if len(info) < TCP_INFO_LEN:
        raise _Skip(f"{what}: transport info is {len(info)} bytes, expected {TCP_INFO_LEN}")
    (isid, version, itrtype, _trv, hfi_index, iflags, sbdf, mac, vlan, origin, ip, prefix,
     gateway, _r, metric, dns1, dns2, dhcp) = struct.unpack_from(
        "<BBBBHBI6sHB16sB16sBH16s16s16s", info)  # fmt: skip
    if isid != DESC_TRINFO or version != 1 or itrtype != TRTYPE_TCP:
        raise _Skip(f"{what}: transport info has structure ID {isid}, version {version}, "
                    f"transport {itrtype} (expected 7, 1, 3)")  # fmt: skip
    if not iflags & 1:
        raise _Skip(f"{what}: transport info Valid flag not set")
    if hfi_index != index:
        raise _Skip(f"{what}: its transport info names HFI {hfi_index}")
    address = _ip(ip)
    if not address:
        raise _Skip(f"{what}: no IP address")
    if prefix > (32 if ":" not in address else 128):
        raise _Skip(f"{what}: subnet prefix /{prefix} for {address}")
    if not any(mac):
        raise _Skip(f"{what}: MAC address is zero")
    info_at = r.unpack("I", off + 16)[0]
    host_name = r.text(info_at + 104, f"{what}: host name")
    return Hfi(
        index=index,
        transport="tcp",
        mac=":".join(f"{b:02x}" for b in mac),
        vlan=vlan,
        ip=address,
        prefix=prefix,
        gateway=_ip(gateway),
        route_metric=metric,
        primary_dns=_ip(dns1),
        secondary_dns=_ip(dns2),
        dhcp_override=bool(iflags & 4),
        dhcp_server=_ip(dhcp) if iflags & 4 else "",
        host_name=host_name,
        default_route=bool(iflags & 2),
        ip_origin=origin,
        pci_sbdf=sbdf,
    )


def _ext_info(r: _Reader, off: int, index: int, what: str) -> tuple[int, int, str]:
    """(controller ID, ASQSZ, DHCP root path) from an SSNS extended info descriptor."""
    blob = r.obj(off, f"{what}: extended info")
    if len(blob) < EXT_INFO_LEN:
        raise _Skip(f"{what}: extended info is {len(blob)} bytes, expected {EXT_INFO_LEN}")
    sid, version, ssns_index, flags, cntlid, asqsz = struct.unpack_from("<BBHIHH", blob)
    if sid != DESC_EXT or version != 1 or ssns_index != index:
        raise _Skip(f"{what}: extended info has structure ID {sid}, version {version}, "
                    f"SSNS index {ssns_index} (expected {DESC_EXT}, 1, {index})")  # fmt: skip
    if not flags & 1:
        return 0, 0, ""
    at = r.unpack("I", off)[0]
    root = r.text(at + 12, f"{what}: DHCP root path")
    return cntlid, asqsz if flags & 2 else 0, root


def _ssns(r: _Reader, off: int, hfis: dict[int, Hfi]) -> tuple[Subsystem | None, list[str]]:
    sid, index, flags, trtype, trflags, disc, _r = r.unpack("BHHBHBB", off)
    if not flags & 1:
        return None, []
    what = f"SSNS descriptor {index}"
    if sid != DESC_SSNS:
        raise _Skip(f"{what}: structure ID {sid}, expected {DESC_SSNS}")
    if trtype != TRTYPE_TCP:
        raise _Skip(f"{what}: transport type {trtype} (only 3, NVMe/TCP, is defined)")
    raw_addr = r.obj(off + 10, f"{what}: transport address")
    if len(raw_addr) != 16 or not any(raw_addr):
        raise _Skip(f"{what}: transport address is {raw_addr.hex() or 'empty'}, "
                    "expected a 16-byte IP address")  # fmt: skip
    trsvcid = r.text(off + 16, f"{what}: transport service ID")
    if not trsvcid.isdigit() or not 0 < int(trsvcid) < 65536:
        raise _Skip(f"{what}: transport service ID {trsvcid!r} is not a TCP port")
    port_id, nsid, nidt, nid, sec, hfi = r.unpack("HIB16sBB", off + 22)
    problems = []
    if hfi not in hfis:
        raise _Skip(f"{what}: primary HFI {hfi} is not in the table")
    secondary = []
    for i in r.obj(off + 48, f"{what}: secondary HFIs"):
        if i in hfis and i != hfi and i not in secondary:
            secondary.append(i)
        elif i and i not in hfis:
            problems.append(f"{what}: secondary HFI {i} is not in the table; ignored")
    nqn = _nqn(r.text(off + 54, f"{what}: NQN"), f"{what}: NQN")
    cntlid, asqsz, root = 0, 0, ""
    if flags & SSNS_EXT_INFO:
        cntlid, asqsz, root = _ext_info(r, off + 60, index, what)
    sub = Subsystem(
        index=index,
        transport="tcp",
        traddr=_ip(raw_addr),
        trsvcid=trsvcid,
        nqn=nqn,
        port_id=port_id,
        nsid=nsid,
        nid_type=nidt,
        nid=nid,
        hfi_indexes=(hfi, *secondary),
        discovery_index=disc,
        security_index=sec if flags & SSNS_USE_SECURITY else 0,
        hdr_digest=bool(trflags & 1 and trflags & 2),
        data_digest=bool(trflags & 1 and trflags & 4),
        bootable=not flags & SSNS_NON_BOOTABLE,
        discovered=bool(flags & SSNS_DISCOVERED),
        availability=UNAVAILABILITY.get(flags & SSNS_UNAVAIL_MASK, "reserved"),
        controller_id=cntlid,
        asqsz=asqsz,
        dhcp_root_path=root,
    )
    return sub, problems


def _security(r: _Reader, off: int) -> Security | None:
    sid, index, flags, secret_type, _r = r.unpack("BBHBB", off)
    if not flags & 1:
        return None
    what = f"security descriptor {index}"
    if sid != DESC_SEC:
        raise _Skip(f"{what}: structure ID {sid}, expected {DESC_SEC}")
    lists = [tuple(r.obj(off + 6 + 6 * i, f"{what}: list {i}")) for i in range(5)]
    algs, protocols, ciphers, groups, hashes = lists
    keypath = r.text(off + 36, f"{what}: key path")
    return Security(index, flags, secret_type, algs, protocols, ciphers, groups, hashes, keypath)


def _discovery(r: _Reader, off: int, hfis: dict[int, Hfi]) -> tuple[Discovery | None, list[str]]:
    sid, flags, index, hfi, sec, _r = r.unpack("BBBBBB", off)
    if not flags & 1:
        return None, []
    what = f"discovery descriptor {index}"
    if sid != DESC_DISC:
        raise _Skip(f"{what}: structure ID {sid}, expected {DESC_DISC}")
    uri = r.text(off + 6, f"{what}: URI")
    if not uri:
        raise _Skip(f"{what}: no URI")
    try:
        transport, traddr, trsvcid = parse_uri(uri)
    except NbftError as exc:
        raise _Skip(f"{what}: {exc}") from None
    nqn = r.text(off + 12, f"{what}: NQN") or WELL_KNOWN_DISC_NQN
    problems = []
    if hfi and hfi not in hfis:
        problems.append(f"{what}: HFI {hfi} is not in the table; no host interface")
        hfi = 0
    d = Discovery(index, uri, transport, traddr, trsvcid, _nqn(nqn, f"{what}: NQN"), hfi, sec)
    return d, problems


def parse_nbft(data: bytes) -> Nbft:
    """The table in ``data``; NbftError when the header, control or host part is unusable."""
    data = bytes(data)
    if len(data) < HEADER_LEN + CONTROL_LEN:
        raise NbftError(f"table is {len(data)} bytes, shorter than its header and control "
                        f"descriptor ({HEADER_LEN + CONTROL_LEN})")  # fmt: skip
    (sig, length, major, _csum, oem_id, oem_table_id, oem_rev, creator, creator_rev,
     heap_off, heap_len) = struct.unpack_from("<4sIBB6s8sIIIII", data)  # fmt: skip
    minor = data[50]
    if sig != b"NBFT":
        raise NbftError(f"signature {sig!r} is not 'NBFT'")
    if not HEADER_LEN + CONTROL_LEN <= length <= len(data):
        raise NbftError(f"header length {length} does not fit the {len(data)} bytes read")
    data = data[:length]
    if sum(data) & 0xFF:
        raise NbftError(f"checksum mismatch (the bytes sum to {sum(data) & 0xFF:#04x}, not 0)")
    if major != 1:
        raise NbftError(f"major revision {major} is not supported (only 1)")
    if heap_len and (heap_off < HEADER_LEN + CONTROL_LEN or heap_off + heap_len > length):
        raise NbftError(f"heap at {heap_off}+{heap_len} is outside the table ({length} bytes)")
    r = _Reader(data, heap_off, heap_off + heap_len)
    sid, cmajor, _cminor, _r1, _csl, cflags = r.unpack("BBBBHB", HEADER_LEN)
    try:
        sig_text = r.text(44, "driver signature")
        oem = _ascii(oem_id, "OEM ID"), _ascii(oem_table_id, "OEM table ID")
    except _Skip as exc:
        raise NbftError(str(exc)) from None
    head = dict(major=major, minor=minor, oem_id=oem[0], oem_table_id=oem[1],
                oem_revision=oem_rev, creator_id=creator, creator_revision=creator_rev,
                driver_signature=sig_text)  # fmt: skip
    if not cflags & 1:
        return Nbft(host=None, **head)
    if sid != DESC_CONTROL:
        raise NbftError(f"control descriptor: structure ID {sid}, expected {DESC_CONTROL}")
    if cmajor != 1:
        raise NbftError(f"control descriptor: major revision {cmajor} is not supported")
    host = _host(r, length)
    problems: list[str] = []
    found: dict[str, list[Any]] = {"hfi": [], "ssns": [], "sec": [], "disc": []}

    def each(ctl: int, size: int, what: str, read: Callable[[int], object]) -> None:
        for off in _list(r, HEADER_LEN + ctl, size, length, what):
            try:
                got = read(off)
            except _Skip as exc:
                problems.append(str(exc))
                continue
            if isinstance(got, tuple):
                got, more = got
                problems.extend(more)
            if got is not None:
                found[what].append(got)

    each(16, HFI_LEN, "hfi", lambda off: _hfi(r, off))
    hfis: dict[int, Hfi] = {}
    for h in found["hfi"]:
        if h.index in hfis:
            problems.append(f"HFI descriptor {h.index}: index used twice; the first one is kept")
        else:
            hfis[h.index] = h
    each(32, SEC_LEN, "sec", lambda off: _security(r, off))
    each(40, DISC_LEN, "disc", lambda off: _discovery(r, off, hfis))
    each(24, SSNS_LEN, "ssns", lambda off: _ssns(r, off, hfis))
    return Nbft(
        host=host,
        hfis=tuple(hfis.values()),
        subsystems=tuple(found["ssns"]),
        discoveries=tuple(found["disc"]),
        securities=tuple(found["sec"]),
        problems=tuple(problems),
        **head,
    )


# --- I/O: the only part that touches files -----------------------------------------------------

FILE_GLOB = FILE_PREFIX + "*"


def read_tables(directory: str | Path = SYSFS_DIR) -> tuple[dict[str, Nbft], list[str]]:
    """Every ``NBFT*`` file of ``directory`` parsed, by path, and one message per unusable file
    (a missing directory is no NBFT, not an error)."""
    tables: dict[str, Nbft] = {}
    errors: list[str] = []
    try:
        paths = sorted(Path(directory).glob(FILE_GLOB))
    except OSError:
        return tables, errors
    for path in paths:
        try:
            tables[str(path)] = parse_nbft(path.read_bytes())
        except (OSError, NbftError) as exc:
            errors.append(f"{path}: {exc}")
    return tables, errors


def _interfaces(net_dir: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    try:
        entries = sorted(net_dir.iterdir())
    except OSError:
        return out
    for d in entries:
        try:
            out.append((d.name, (d / "address").read_text().strip().lower()))
        except OSError:
            continue
    return out


def iface_of_hfi(hfi: Hfi, net_dir: str | Path = "/sys/class/net") -> str:
    """The interface with the HFI's MAC ('' if none): ``*.VLAN`` for a VLAN HFI, else the
    one that is not a VLAN (VLAN interfaces share their parent's MAC)."""
    names = [n for n, mac in _interfaces(Path(net_dir)) if mac == hfi.mac]
    if hfi.vlan:
        names.sort(key=lambda n: not n.endswith(f".{hfi.vlan}"))
    else:
        names.sort(key=lambda n: "." in n)
    return names[0] if names else ""


# --- what stas uses: discovery controllers (stafd) and boot subsystems (stacd) ----------------

IfaceOf = Callable[[Hfi], str]


def _host_side(t: Nbft, hfi_index: int, host_nqn: str, iface_of: IfaceOf) -> tuple[str, str]:
    hfi = t.hfi(hfi_index) if hfi_index else None
    nqn = t.host.nqn if t.host is not None and t.host.hostnqn_configured else host_nqn
    return (iface_of(hfi) if hfi is not None else ""), nqn


def discovery_tids(t: Nbft, *, host_nqn: str, iface_of: IfaceOf = iface_of_hfi) -> list[Tid]:
    """The table's discovery controllers, reached over the interface of their HFI and with
    the table's host NQN when the firmware marks it administratively configured."""
    out = []
    for d in t.discoveries:
        iface, nqn = _host_side(t, d.hfi_index, host_nqn, iface_of)
        port = d.trsvcid or default_trsvcid(d.transport)
        tid = Tid(d.transport, d.traddr, port, d.nqn, "", iface, nqn)
        if tid not in out:
            out.append(tid)
    return out


def boot_subsystems(
    t: Nbft, *, host_nqn: str, iface_of: IfaceOf = iface_of_hfi
) -> list[tuple[Tid, dict[str, str]]]:
    """Every subsystem the table names, as an I/O controller TID with the digests the firmware
    used. Non-bootable entries are included: the OS may need them to finish booting."""
    out: dict[Tid, dict[str, str]] = {}
    for s in t.subsystems:
        iface, nqn = _host_side(t, s.hfi_indexes[0], host_nqn, iface_of)
        tid = Tid(s.transport, s.traddr, s.trsvcid, s.nqn, "", iface, nqn)
        params = {"hdr-digest": "true"} if s.hdr_digest else {}
        if s.data_digest:
            params["data-digest"] = "true"
        out.setdefault(tid, params)
    return list(out.items())


def boot_subsystems_reader(
    directory: str | Path = SYSFS_DIR, *, iface_of: IfaceOf = iface_of_hfi
) -> Callable[[str], list[tuple[Tid, dict[str, str]]]]:
    """Read the tables once (they do not change while the system runs); the result gives the
    boot subsystems for a host NQN (sys.conf's may change on reload)."""
    tables, errors = read_tables(directory)
    for text in errors:
        log.warning("NBFT %s; ignored", text)
    for path, t in tables.items():
        for problem in t.problems:
            log.warning("NBFT %s: %s", path, problem)

    def boot(host_nqn: str) -> list[tuple[Tid, dict[str, str]]]:
        return [
            b
            for t in tables.values()
            for b in boot_subsystems(t, host_nqn=host_nqn, iface_of=iface_of)
        ]

    return boot
