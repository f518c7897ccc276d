#!/usr/bin/env python3
"""Build ACPI NBFT tables (NVM Express Boot Specification 1.0) for tests and the VM.

An encoder written independently of ``stas/nbft.py`` (it shares no code with the parser), so
a round trip checks both against the layout, and libnvme's parser can read the same bytes.
It lays the table out the way firmware does: header, control descriptor, host descriptor,
the HFI / SSNS / security / discovery descriptor lists, then the heap (NUL-terminated
strings, addresses, HFI transport info and SSNS extended info).

    nbft_gen.py -o NBFT --hostnqn NQN --hostid UUID \\
        --hfi mac=52:54:00:12:34:56,ip=10.0.2.15,prefix=24,gw=10.0.2.2 \\
        --discovery uri=nvme+tcp://10.0.2.2:8009/,hfi=1 \\
        --subsys traddr=10.0.2.2,trsvcid=4420,nqn=nqn.x:boot,hfi=1,disc=1
"""

from __future__ import annotations

import argparse
import ipaddress
import struct
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HEADER_LEN, CONTROL_LEN, HOST_LEN = 64, 64, 32
HFI_LEN, TCP_INFO_LEN, SSNS_LEN, EXT_INFO_LEN, SEC_LEN, DISC_LEN = 32, 128, 128, 18, 64, 32
TCP = 3


@dataclass
class Hfi:
    mac: str = "52:54:00:12:34:56"
    ip: str = "10.0.2.15"
    prefix: int = 24
    gateway: str = ""
    vlan: int = 0
    route_metric: int = 500
    primary_dns: str = ""
    secondary_dns: str = ""
    dhcp_server: str = ""  # set = DHCP override flag
    host_name: str = ""
    pci_sbdf: int = 0
    ip_origin: int = 0
    default_route: bool = False
    valid: bool = True


@dataclass
class Subsys:
    traddr: str
    trsvcid: str = "4420"
    nqn: str = "nqn.2014-08.org.example:boot"
    hfi: int = 1  # 1-based HFI descriptor index
    secondary_hfis: Sequence[int] = ()
    disc: int = 0  # primary discovery descriptor index, 0 = none
    sec: int = 0
    nsid: int = 1
    nidt: int = 3
    nid: bytes = bytes(range(16))
    port_id: int = 1
    hdr_digest: bool = False
    data_digest: bool = False
    flags_extra: int = 0  # more SSNS flag bits (non-bootable, discovered, ...)
    cntlid: int | None = None  # set = an SSNS extended info descriptor
    asqsz: int = 0
    valid: bool = True


@dataclass
class Discovery:
    uri: str
    nqn: str = ""
    hfi: int = 1
    sec: int = 0
    valid: bool = True


@dataclass
class Security:
    flags: int = 1
    secret_type: int = 0
    sec_chan_alg: bytes = b""
    auth_proto: bytes = b""
    cipher_suite: bytes = b""
    dh_groups: bytes = b""
    hash_funcs: bytes = b""
    keypath: str = ""


@dataclass
class Table:
    hostnqn: str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001"
    hostid: str = "00000000-0000-0000-0000-000000000001"
    host_flags: int = 0x07  # valid, host ID and host NQN administratively configured
    hfis: list[Hfi] = field(default_factory=list)
    subsystems: list[Subsys] = field(default_factory=list)
    discoveries: list[Discovery] = field(default_factory=list)
    securities: list[Security] = field(default_factory=list)
    oem_id: bytes = b"STAS"
    oem_table_id: bytes = b"NBFTGEN"
    driver_sig: str = ""


def ip16(text: str) -> bytes:
    """16 bytes: IPv6 as is, IPv4 as ::ffff:a.b.c.d, empty as zeros."""
    if not text:
        return bytes(16)
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return bytes(10) + b"\xff\xff" + ip.packed
    return ip.packed


class _Heap:
    """Objects appended after the descriptors; references are table offsets."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.data = bytearray()

    def put(self, blob: bytes, terminator: bool = False) -> bytes:
        if not blob:
            return struct.pack("<IH", 0, 0)
        off = self.base + len(self.data)
        self.data += blob + (b"\0" if terminator else b"")
        return struct.pack("<IH", off, len(blob))

    def text(self, s: str) -> bytes:
        return self.put(s.encode(), terminator=True)


def _hfi_info(h: Hfi, index: int) -> bytes:
    flags = 1 | (2 if h.default_route else 0) | (4 if h.dhcp_server else 0)
    mac = bytes(int(x, 16) for x in h.mac.split(":"))
    return struct.pack(
        "<BBBBHBI6sHB16sB16sBH16s16s16s",
        7, 1, TCP, 1, index, flags, h.pci_sbdf, mac, h.vlan, h.ip_origin, ip16(h.ip),
        h.prefix, ip16(h.gateway), 0, h.route_metric, ip16(h.primary_dns),
        ip16(h.secondary_dns), ip16(h.dhcp_server),
    )  # fmt: skip


def build(t: Table) -> bytes:
    """The table's bytes, checksum included."""
    hfio = HEADER_LEN + CONTROL_LEN + HOST_LEN
    ssnso = hfio + HFI_LEN * len(t.hfis)
    seco = ssnso + SSNS_LEN * len(t.subsystems)
    disco = seco + SEC_LEN * len(t.securities)
    heap_off = disco + DISC_LEN * len(t.discoveries)
    heap = _Heap(heap_off)

    host = struct.pack("<BB16s", 2, t.host_flags, uuid.UUID(t.hostid).bytes)
    host += heap.text(t.hostnqn) + bytes(8)

    hfis = b""
    for i, h in enumerate(t.hfis, 1):
        info = heap.put(_hfi_info(h, i) + bytes(TCP_INFO_LEN - 104))
        hname = heap.text(h.host_name)
        # the host-name reference sits at offset 110 of the transport info: patch it in place
        off = struct.unpack_from("<I", info)[0] - heap.base
        heap.data[off + 104 : off + 110] = hname
        hfis += struct.pack("<BBBB12s", 3, i, 1 if h.valid else 0, TCP, bytes(12)) + info
        hfis += bytes(10)

    ssns = b""
    for i, s in enumerate(t.subsystems, 1):
        flags = (1 if s.valid else 0) | s.flags_extra | (4 if s.sec else 0)
        trflags = 1 | (2 if s.hdr_digest else 0) | (4 if s.data_digest else 0)
        ext = b""
        if s.cntlid is not None:
            flags |= 0x10
            ext = struct.pack("<BBHIHH", 9, 1, i, 1 | (2 if s.asqsz else 0), s.cntlid, s.asqsz)
            ext += bytes(6)
        ssns += struct.pack("<BHHBHBB", 4, i, flags, TCP, trflags, s.disc, 0)
        ssns += heap.put(ip16(s.traddr)) + heap.text(s.trsvcid)
        ssns += struct.pack("<HIB16sBBB", s.port_id, s.nsid, s.nidt, s.nid, s.sec, s.hfi, 0)
        ssns += heap.put(bytes(s.secondary_hfis)) + heap.text(s.nqn) + heap.put(ext)
        ssns += bytes(62)

    secs = b""
    for i, c in enumerate(t.securities, 1):
        secs += struct.pack("<BBHBB", 5, i, c.flags, c.secret_type, 0)
        for blob in (c.sec_chan_alg, c.auth_proto, c.cipher_suite, c.dh_groups, c.hash_funcs):
            secs += heap.put(blob)
        secs += heap.text(c.keypath) + bytes(22)

    discs = b""
    for i, d in enumerate(t.discoveries, 1):
        discs += struct.pack("<BBBBBB", 6, 1 if d.valid else 0, i, d.hfi, d.sec, 0)
        discs += heap.text(d.uri) + heap.text(d.nqn) + bytes(14)

    sig = heap.text(t.driver_sig)
    heap_bytes = bytes(heap.data)
    total = heap_off + len(heap_bytes)
    control = struct.pack(
        "<BBBBHBB", 1, 1, 0, 0, CONTROL_LEN, 1, 0
    ) + struct.pack("<IH", HEADER_LEN + CONTROL_LEN, HOST_LEN) + struct.pack(
        "<BBIHBBIHBBIHBBIHBB",
        1, 0,
        hfio if t.hfis else 0, HFI_LEN, 1, len(t.hfis),
        ssnso if t.subsystems else 0, SSNS_LEN, 1, len(t.subsystems),
        seco if t.securities else 0, SEC_LEN, 1, len(t.securities),
        disco if t.discoveries else 0, DISC_LEN, 1, len(t.discoveries),
    ) + bytes(16)  # fmt: skip
    header = struct.pack(
        "<4sIBB6s8sIIIII",
        b"NBFT", total, 1, 0, t.oem_id, t.oem_table_id, 1, 0x53544153, 1, heap_off,
        len(heap_bytes),
    ) + sig + struct.pack("<B13s", 0, bytes(13))  # fmt: skip
    body = bytearray(header + control + host + hfis + ssns + secs + discs + heap_bytes)
    assert len(header) == HEADER_LEN and len(control) == CONTROL_LEN and len(host) == HOST_LEN
    assert len(body) == total
    body[9] = (-sum(body)) & 0xFF
    return bytes(body)


def _kv(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"nbft_gen: {part!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("+") if x)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--hostnqn", default=Table.hostnqn)
    p.add_argument("--hostid", default=Table.hostid)
    p.add_argument("--hfi", action="append", default=[], help="mac=,ip=,prefix=,gw=,vlan=")
    p.add_argument("--subsys", action="append", default=[],
                   help="traddr=,trsvcid=,nqn=,hfi=,disc=,nsid=")  # fmt: skip
    p.add_argument("--discovery", action="append", default=[], help="uri=,nqn=,hfi=")
    a = p.parse_args(argv)
    t = Table(hostnqn=a.hostnqn, hostid=a.hostid)
    for text in a.hfi:
        d = _kv(text)
        t.hfis.append(
            Hfi(mac=d.get("mac", Hfi.mac), ip=d.get("ip", Hfi.ip),
                prefix=int(d.get("prefix", "24")), gateway=d.get("gw", ""),
                vlan=int(d.get("vlan", "0")))
        )  # fmt: skip
    for text in a.subsys:
        d = _kv(text)
        t.subsystems.append(
            Subsys(traddr=d["traddr"], trsvcid=d.get("trsvcid", "4420"),
                   nqn=d.get("nqn", Subsys.nqn), hfi=int(d.get("hfi", "1")),
                   disc=int(d.get("disc", "0")), nsid=int(d.get("nsid", "1")),
                   secondary_hfis=_ints(d.get("hfis", "")))
        )  # fmt: skip
    for text in a.discovery:
        d = _kv(text)
        t.discoveries.append(
            Discovery(uri=d["uri"], nqn=d.get("nqn", ""), hfi=int(d.get("hfi", "1")))
        )
    Path(a.output).write_bytes(build(t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
