"""stafd's last-known state as JSON (not pickle), written atomically, read defensively.

A warm restart brings back every DC with its origin and cached log page before the first
reconnect, so stacd keeps seeing the same controllers while stafd restarts. The format is
versioned plain data: no Python class paths (upstream's pickle tied the file to its classes).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from stas.messages import ORIGIN_RANK, DcStatus, StafdSnapshot, Tid
from stas.nvme.errors import ProtocolError
from stas.nvme.logpage import ExtAttr, LogPageEntry

log = logging.getLogger("stas.state")

FORMAT = "nvme-stas-stafd-state"
VERSION = 1
FILE_NAME = "last-known-config.json"
ENTRY_INTS = ("trtype", "adrfam", "subtype", "treq", "portid", "cntlid", "asqsz", "eflags")
ENTRY_STRS = ("trsvcid", "subnqn", "traddr")
MAX_FILE_BYTES = 64 << 20  # far above any real state; checked before reading (untrusted file)
MAX_DCS = 4096
MAX_ENTRIES_PER_DC = 8192  # the log page decoder's NUMREC limit
MAX_GENCTR = (1 << 64) - 1


def default_path(prog: str = "stafd") -> Path:
    base = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or f"/run/{prog}"
    return Path(base) / FILE_NAME


def entry_to_json(e: LogPageEntry) -> dict[str, Any]:
    d: dict[str, Any] = {k: getattr(e, k) for k in (*ENTRY_INTS, *ENTRY_STRS)}
    if any(e.tsas):
        d["tsas"] = e.tsas.hex()
    if e.ext_attrs:
        d["ext_attrs"] = [[a.type, a.value.hex()] for a in e.ext_attrs]
    return d


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def entry_from_json(d: Mapping[str, Any]) -> LogPageEntry:
    """Rebuild an entry; the constructor re-validates every field (the file is untrusted)."""
    ints = {k: _int(d[k]) for k in ENTRY_INTS}
    strs = {k: _str(d[k]) for k in ENTRY_STRS}
    tsas = bytes.fromhex(_str(d["tsas"])) if "tsas" in d else bytes(256)
    ext_attrs = d.get("ext_attrs", [])
    if not isinstance(ext_attrs, list) or len(ext_attrs) > 0xFFFF:
        raise ValueError("ext_attrs must be a list of at most 65535 [type, hex] pairs")
    ext = tuple(ExtAttr(_int(t), bytes.fromhex(_str(v))) for t, v in ext_attrs)
    return LogPageEntry(**ints, **strs, tsas=tsas, ext_attrs=ext)


def dc_from_json(item: Any) -> DcStatus:
    """One saved DC as an idle status with its cached page; ValueError/TypeError if bad."""
    tid_dict = item["tid"]
    if not isinstance(tid_dict, dict):
        raise ValueError("tid must be an object")
    tid = Tid.from_dict({k: _str(v) for k, v in tid_dict.items()})
    if not (tid.transport and tid.traddr):
        raise ValueError(f"{tid_dict!r} lacks transport or traddr")
    origin = _str(item.get("origin", "configured"))
    if origin not in ORIGIN_RANK:
        raise ValueError(f"unknown origin {origin!r}")
    pages = item.get("log_pages", [])
    if not isinstance(pages, list) or len(pages) > MAX_ENTRIES_PER_DC:
        raise ValueError(f"log_pages must be a list of at most {MAX_ENTRIES_PER_DC} entries")
    genctr = item.get("genctr")
    if genctr is not None and not 0 <= _int(genctr) <= MAX_GENCTR:
        raise ValueError(f"genctr {genctr!r} out of range")
    return DcStatus(
        tid=tid,
        origin=origin,
        genctr=genctr,
        log_pages=tuple(entry_from_json(e) for e in pages),
    )


class StateStore:
    """Reads and writes stafd's state file; never raises on a bad file (starts cold instead)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def save(self, snapshot: StafdSnapshot) -> bool:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "dcs": [
                {
                    "tid": dc.tid.as_dict(),
                    "origin": dc.origin,
                    "genctr": dc.genctr,
                    "log_pages": [entry_to_json(e) for e in dc.log_pages],
                }
                for dc in snapshot.dcs
            ],
        }
        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dirfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        except OSError as exc:
            log.warning("cannot save state to %s: %s", self.path, exc.strerror or exc)
            return False
        return True

    def load(self) -> dict[Tid, DcStatus]:
        """The saved DCs as initial statuses (state 'idle', not connected, pages cached)."""
        try:
            with self.path.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
            doc = json.loads(data)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("ignoring unreadable state file %s: %s", self.path, exc)
            return {}
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            log.warning("ignoring %s: not a stafd state file", self.path)
            return {}
        if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
            log.warning("ignoring %s: state version %r unknown", self.path, doc.get("version"))
            return {}
        dcs = doc.get("dcs", [])
        if not isinstance(dcs, list) or len(dcs) > MAX_DCS:
            log.warning("ignoring %s: 'dcs' is not a list of at most %d DCs", self.path, MAX_DCS)
            return {}
        out: dict[Tid, DcStatus] = {}
        for item in dcs:
            try:
                status = dc_from_json(item)
            except (KeyError, TypeError, ValueError, AttributeError, ProtocolError) as exc:
                log.warning("ignoring a bad DC in %s: %s", self.path, exc)
                continue
            out[status.tid] = status
        return out


def restore(status: DcStatus) -> DcStatus:
    """A cached status as published before the first reconnect."""
    return attrs.evolve(status, state="idle", connected=False, device="nvme?")
