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

from stas.messages import DcStatus, StafdSnapshot, Tid
from stas.nvme.errors import ProtocolError
from stas.nvme.logpage import ExtAttr, LogPageEntry

log = logging.getLogger("stas.state")

FORMAT = "nvme-stas-stafd-state"
VERSION = 1
FILE_NAME = "last-known-config.json"
ENTRY_INTS = ("trtype", "adrfam", "subtype", "treq", "portid", "cntlid", "asqsz", "eflags")
ENTRY_STRS = ("trsvcid", "subnqn", "traddr")


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


def entry_from_json(d: Mapping[str, Any]) -> LogPageEntry:
    """Rebuild an entry; the constructor re-validates every field (the file is untrusted)."""
    ints = {k: int(d[k]) for k in ENTRY_INTS}
    strs = {k: str(d[k]) for k in ENTRY_STRS}
    tsas = bytes.fromhex(d["tsas"]) if "tsas" in d else bytes(256)
    ext = tuple(ExtAttr(int(t), bytes.fromhex(v)) for t, v in d.get("ext_attrs", ()))
    return LogPageEntry(**ints, **strs, tsas=tsas, ext_attrs=ext)


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
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable state file %s: %s", self.path, exc)
            return {}
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            log.warning("ignoring %s: not a stafd state file", self.path)
            return {}
        if doc.get("version") != VERSION:
            log.warning("ignoring %s: state version %r unknown", self.path, doc.get("version"))
            return {}
        out: dict[Tid, DcStatus] = {}
        for item in doc.get("dcs", []):
            try:
                tid = Tid.from_dict({k: str(v) for k, v in item["tid"].items()})
                entries = tuple(entry_from_json(e) for e in item.get("log_pages", []))
                genctr = item.get("genctr")
                out[tid] = DcStatus(
                    tid=tid,
                    origin=str(item.get("origin", "configured")),
                    genctr=int(genctr) if genctr is not None else None,
                    log_pages=entries,
                )
            except (KeyError, TypeError, ValueError, AttributeError, ProtocolError) as exc:
                log.warning("ignoring a bad DC in %s: %s", self.path, exc)
        return out


def restore(status: DcStatus) -> DcStatus:
    """A cached status as published before the first reconnect."""
    return attrs.evolve(status, state="idle", connected=False, device="nvme?")
