"""stafd's last-known state as JSON (not pickle), written atomically, read defensively.

A warm restart brings back every DC with its origin and cached log page before the first
reconnect, so stacd keeps seeing the same controllers while stafd restarts. The format is
versioned plain data: no Python class paths (upstream's pickle tied the file to its classes).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from stas.messages import ORIGIN_RANK, DcStatus, StafdSnapshot, Tid
from stas.nvme.errors import ProtocolError

if TYPE_CHECKING:  # the codec loads when a state file is read: stacd never needs it
    from stas.nvme.logpage import LogPageEntry

log = logging.getLogger("stas.state")

FORMAT = "nvme-stas-stafd-state"
VERSION = 1
FILE_NAME = "last-known-config.json"
ENTRY_INTS = ("trtype", "adrfam", "subtype", "treq", "portid", "cntlid", "asqsz", "eflags")
ENTRY_STRS = ("trsvcid", "subnqn", "traddr")
MAX_FILE_BYTES = 64 << 20  # one bound for save and load; checked before reading (untrusted)
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
    from stas.nvme.logpage import ExtAttr, LogPageEntry

    # keyword arguments by name: mypy cannot match a dict's keys to the fields
    ints: dict[str, Any] = {k: _int(d[k]) for k in ENTRY_INTS}
    strs: dict[str, Any] = {k: _str(d[k]) for k in ENTRY_STRS}
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


def _dc_doc(dc: DcStatus, *, pages: bool = True) -> dict[str, Any]:
    return {
        "tid": dc.tid.as_dict(),
        "origin": dc.origin,
        "genctr": dc.genctr if pages else None,  # no page kept: fetch it again, whatever GENCTR
        "log_pages": [entry_to_json(e) for e in dc.log_pages] if pages else [],
    }


def _dumps(item: Any) -> bytes:
    return json.dumps(item, sort_keys=True, separators=(",", ":")).encode()


_HEAD = b'{"dcs":[\n'
_TAIL = b'\n],"format":"' + FORMAT.encode() + b'","version":' + str(VERSION).encode() + b"}\n"
_KEEP_ORDER = {"configured": 0, "discovered": 1, "referral": 2}  # what is kept first


def _names(dcs: list[DcStatus], limit: int = 5) -> str:
    shown = ", ".join(str(dc.tid) for dc in dcs[:limit])
    return shown + (f" and {len(dcs) - limit} more" if len(dcs) > limit else "")


def encode_state(dcs: tuple[DcStatus, ...], max_bytes: int) -> tuple[bytes, list[str]]:
    """The state file's bytes, at most ``max_bytes``, and what had to be left out.

    ``load`` accepts whatever this writes: at most ``MAX_DCS`` DCs (configured ones kept
    first, referrals dropped first) and ``MAX_ENTRIES_PER_DC`` entries each. When the result
    would be too large, cached log pages are left out, referrals' first, then the largest:
    those DCs come back without a page and fetch it again. DCs are dropped only if even
    their identities do not fit.
    """
    notes: list[str] = []
    ranked = sorted(dcs, key=lambda dc: _KEEP_ORDER.get(dc.origin, 3))
    if len(ranked) > MAX_DCS:
        notes.append(f"{len(ranked) - MAX_DCS} DCs above the {MAX_DCS}-DC limit not saved: "
                     f"{_names(ranked[MAX_DCS:])}")  # fmt: skip
        ranked = ranked[:MAX_DCS]
    big = {i for i, dc in enumerate(ranked) if len(dc.log_pages) > MAX_ENTRIES_PER_DC}
    if big:
        notes.append(f"log pages of more than {MAX_ENTRIES_PER_DC} entries not saved: "
                     f"{_names([ranked[i] for i in sorted(big)])}")  # fmt: skip
    parts = [_dumps(_dc_doc(dc, pages=i not in big)) for i, dc in enumerate(ranked)]
    overhead = len(_HEAD) + len(_TAIL) + max(len(parts) - 1, 0) * 2

    def total() -> int:
        return overhead + sum(len(p) for p in parts)

    if total() > max_bytes:
        before = total()
        order = sorted(
            range(len(ranked)),
            key=lambda i: (ranked[i].origin != "referral", -len(parts[i])),
        )
        dropped: list[DcStatus] = []
        for i in order:
            if total() <= max_bytes:
                break
            if ranked[i].log_pages and i not in big:
                parts[i] = _dumps(_dc_doc(ranked[i], pages=False))
                dropped.append(ranked[i])
        if dropped:
            notes.append(f"{before} bytes is above the {max_bytes}-byte limit: cached log pages "
                         f"of {len(dropped)} DCs not saved (fetched again after a restart): "
                         f"{_names(dropped)}")  # fmt: skip
        gone: list[DcStatus] = []
        while parts and total() > max_bytes:
            parts.pop()
            gone.append(ranked.pop())
            overhead = len(_HEAD) + len(_TAIL) + max(len(parts) - 1, 0) * 2
        if gone:
            notes.append(f"{len(gone)} DCs not saved at all (no room even without their log "
                         f"pages): {_names(gone)}")  # fmt: skip
    return _HEAD + b",\n".join(parts) + _TAIL, notes


class StateStore:
    """Reads and writes stafd's state file; never raises on a bad file (starts cold instead).

    Both directions share one size bound (``MAX_FILE_BYTES``): what ``save`` writes, ``load``
    reads back. ``load`` does not follow a symlink at the path, reads regular files only,
    checks the size before reading, and removes temporary files an interrupted save left.
    """

    def __init__(self, path: Path | str, max_bytes: int | None = None) -> None:
        self.path = Path(path)
        self._max_bytes = max_bytes

    @property
    def max_bytes(self) -> int:
        return MAX_FILE_BYTES if self._max_bytes is None else self._max_bytes

    def save(self, snapshot: StafdSnapshot) -> bool:
        data, notes = encode_state(snapshot.dcs, self.max_bytes)
        for note in notes:
            log.warning("state file %s: %s", self.path, note)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self._temp_prefix(), dir=self.path.parent)
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

    def _temp_prefix(self) -> str:
        return f".{self.path.name}."

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete what a save killed between mkstemp and rename left behind (start-up only)."""
        removed: list[Path] = []
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return removed
        for name in names:
            if not name.startswith(self._temp_prefix()):
                continue
            stale = self.path.parent / name
            try:
                stale.unlink()
            except OSError as exc:
                log.warning("cannot remove stale temporary state file %s: %s", stale,
                            exc.strerror or exc)  # fmt: skip
                continue
            log.info("removed stale temporary state file %s (an interrupted save)", stale)
            removed.append(stale)
        return removed

    def _read(self) -> bytes | None:
        """The file's bytes; ``None`` if absent; ``ValueError`` saying why it is not read."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ValueError("it is a symbolic link, not followed") from None
            raise ValueError(exc.strerror or str(exc)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError("not a regular file")
            if st.st_size > self.max_bytes:
                raise ValueError(f"{st.st_size} bytes, above the {self.max_bytes}-byte limit")
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read(self.max_bytes + 1)
        finally:
            os.close(fd)
        if len(data) > self.max_bytes:
            raise ValueError(f"above the {self.max_bytes}-byte limit")
        return data

    def load(self) -> dict[Tid, DcStatus]:
        """The saved DCs as initial statuses (state 'idle', not connected, pages cached)."""
        self.remove_stale_temp_files()
        try:
            data = self._read()
            if data is None:
                log.info("no state file at %s: starting with no cached DCs", self.path)
                return {}
            doc = json.loads(data)
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


UPSTREAM_STATE = "last-known-config.pickle"


def note_upstream_state(directory: Path | str, prog: str) -> Path | None:
    """Say once (at start) that upstream nvme-stas's pickled state was found and is ignored.

    Upstream keeps ``last-known-config.pickle`` in ``/run/stafd`` and ``/run/stacd``; it is
    never read here (unpickling runs code, and its classes do not exist here). The path if
    found, else ``None``.
    """
    path = Path(directory) / UPSTREAM_STATE
    if not os.path.lexists(path):
        return None
    then = ("cached log pages are fetched again" if prog == "stafd"
            else "starting from the kernel's existing connections")  # fmt: skip
    log.warning("%s: found %s from upstream nvme-stas: ignored (never read); %s",
                prog, path, then)  # fmt: skip
    return path


def restore(status: DcStatus) -> DcStatus:
    """A cached status as published before the first reconnect."""
    return attrs.evolve(status, state="idle", connected=False, device="nvme?")
