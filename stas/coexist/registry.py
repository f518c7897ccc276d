"""libnvme's controller ownership registry: /run/nvme/registry/nvmeX/owner.

Several orchestrators (nvme-stas, nvme-discoverd, the initramfs' NBFT connects, nvme-cli's
autoconnect) share one host's controllers; the registry says who manages which, so none
tears down what another depends on. Facts (libnvme's REGISTRY.md): one directory per
controller, one plain-text file per attribute; ``owner`` is the orchestrator's name (``stas``
for nvme-stas, ``nbft``, ``discoverd``, ...); absence means unowned; directories 0755, files
0644; writes are atomic (temporary file, fsync, rename); ``seqnum`` holds
/sys/kernel/uevent_seqnum at connect (libnvme's udev rule uses it to tell a stale entry of a
recycled instance number from a live one).

stacd (as libnvme does on a connect with an owner set) creates the registry on demand:
a controller it connected is claimed as ``stas`` (overwriting a stale entry: the kernel just
created that controller); one it adopts is claimed only if nobody owns it; one another owner
holds is never disconnected. Write failures are logged once and never stop stacd.

At start, a controller whose live entry says ``stas`` is one stacd connected (or adopted)
before it stopped: the connector remembers it, so one that no log page wants any more is
disconnected once the picture is complete, instead of reconnecting until ctrl-loss-tmo.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("stas.coexist")

DEFAULT_ROOT = Path("/run/nvme/registry")
SEQNUM_FILE = Path("/sys/kernel/uevent_seqnum")
OWNER = "stas"
OWNER_ATTR = "owner"
SEQNUM_ATTR = "seqnum"
MAX_VALUE = 256  # an owner name is short; a longer file is not one


def valid_device(device: str) -> bool:
    """``nvmeN`` exactly: safe to join to the registry path."""
    return device.startswith("nvme") and device[4:].isdigit() and len(device) < 16


def may_disconnect(owner: str | None) -> bool:
    """stacd may disconnect a controller nobody owns, or one it owns itself."""
    return owner is None or owner == OWNER


def live_claim(owner: str | None, seqnum: str, kernel_seqnum: str) -> bool:
    """Is an entry stacd's own claim on the controller now bearing its name? Owner ``stas``
    and a seqnum that is a number not above the kernel's current one (a larger number, or
    none, is an entry from another boot or a broken write: stale). ``kernel_seqnum`` '' (not
    readable) skips the comparison."""
    if owner != OWNER or not seqnum.isdigit():
        return False
    return not kernel_seqnum.isdigit() or int(seqnum) <= int(kernel_seqnum)


def may_claim(owner: str | None) -> bool:
    """An adopted controller becomes ours only if nobody owns it yet."""
    return owner is None


class Registry:
    """The registry under ``root``; every method is a few small file operations."""

    def __init__(self, root: Path = DEFAULT_ROOT, *, seqnum_file: Path = SEQNUM_FILE) -> None:
        self.root = Path(root)
        self.seqnum_file = Path(seqnum_file)
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def owner(self, device: str) -> str | None:
        """Who owns ``device`` (None: nobody). An unreadable entry reads as owned by
        '<unreadable>': when in doubt, stacd leaves the controller alone."""
        if not valid_device(device):
            return None
        path = self.root / device / OWNER_ATTR
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_VALUE + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self._warn_once(f"read|{device}", f"{path}: cannot read: {exc.strerror or exc}")
            return "<unreadable>"
        text = raw.decode("utf-8", errors="replace").strip()
        return text or None

    def _read_attr(self, device: str, name: str) -> str:
        """One short attribute's text ('' if absent, unreadable or too long)."""
        try:
            with open(self.root / device / name, "rb") as f:
                raw = f.read(MAX_VALUE + 1)
        except OSError:
            return ""
        return "" if len(raw) > MAX_VALUE else raw.decode("utf-8", errors="replace").strip()

    def claimed_before(self, devices: Iterable[str]) -> frozenset[str]:
        """Which of ``devices`` a live entry says stacd owns (see ``live_claim``): read once at
        start, for the controllers a previous run of stacd left connected. One directory
        listing, then two small reads per entry present (not per controller)."""
        try:
            present = set(os.listdir(self.root))
        except OSError:
            return frozenset()
        kernel = self._seqnum()
        return frozenset(
            d
            for d in devices
            if d in present
            and valid_device(d)
            and live_claim(self.owner(d), self._read_attr(d, SEQNUM_ATTR), kernel)
        )

    def _seqnum(self) -> str:
        try:
            return self.seqnum_file.read_text().strip()
        except OSError:
            return ""

    def _write_attr(self, entry: Path, name: str, value: str) -> None:
        """One attribute, atomically: a temporary file in the entry, fsync, rename."""
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=entry)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
                f.flush()
                os.fchmod(f.fileno(), 0o644)
                os.fsync(f.fileno())
            os.rename(tmp, entry / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _ensure_root(self) -> None:
        if not self.root.is_dir():
            self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
            os.chmod(self.root, 0o755)  # mkdir's mode is filtered by the umask

    def claim(self, device: str, *, fresh: bool) -> bool:
        """Record ``device`` as owned by ``stas``. ``fresh``: stacd's own connect just created
        it, so any entry is stale and is replaced; else only an unowned one is claimed.
        Returns True if the entry now says ``stas``."""
        if not valid_device(device):
            return False
        current = self.owner(device)
        if current == OWNER:
            return True
        if not fresh and not may_claim(current):
            return False
        try:
            self._ensure_root()
            entry = self.root / device
            if fresh and entry.exists():
                self._drop(entry)
            if not entry.is_dir():
                self._create(entry)
            else:  # an unowned entry (other attributes only): add ours
                self._write_attr(entry, SEQNUM_ATTR, self._seqnum() or "0")
                self._write_attr(entry, OWNER_ATTR, OWNER)
        except OSError as exc:
            self._warn_once(
                "write", f"{self.root}: cannot record {device} as owned by {OWNER}: {exc}"
            )
            return False
        log.debug("%s: registry owner %s", device, OWNER)
        return True

    def _create(self, entry: Path) -> None:
        """A new entry appears complete or not at all: built aside, then renamed into place."""
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=self.root))
        try:
            os.chmod(tmp, 0o755)
            self._write_attr(tmp, SEQNUM_ATTR, self._seqnum() or "0")
            self._write_attr(tmp, OWNER_ATTR, OWNER)
            os.rename(tmp, entry)  # fails if another writer created it meanwhile
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _drop(self, entry: Path) -> None:
        """Remove an entry atomically: renamed to a hidden sibling, then purged."""
        hidden = Path(tempfile.mkdtemp(prefix=f".{entry.name}.gone.", dir=self.root))
        target = hidden / entry.name
        os.rename(entry, target)
        shutil.rmtree(hidden, ignore_errors=True)

    def release(self, device: str) -> None:
        """After stacd disconnected ``device``: drop the entry if it is ours (hosts without
        udevd have no rule to do it, and a recycled name must not look owned)."""
        if not valid_device(device) or self.owner(device) != OWNER:
            return
        try:
            self._drop(self.root / device)
        except OSError as exc:
            self._warn_once("drop", f"{self.root}: cannot drop {device}'s entry: {exc}")
