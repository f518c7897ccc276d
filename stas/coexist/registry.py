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

A connect's device name is known only once the kernel made it, so a stacd killed between the
kernel's answer and the entry's write would leave a controller nobody owns. Before each
connect stacd records its intent beside the registry (/run/nvme/stas-connecting/, one small
file per connect in flight holding its transport id and host NQN, what the kernel's controller
will show; named by stacd's pid and a counter: no hashing, so no OpenSSL mapped); the
intent becomes the device's entry once the kernel answers, and is dropped then (or when the
connect fails). At start, an unowned I/O controller matching a leftover intent is one such
connect: it is claimed as stacd's, like any other of its controllers; then every leftover
intent is dropped (the stale ones of connects that never happened included). A controller
another owner holds is never claimed this way; an unowned one that nvme-cli had made before
stacd's intent (its connect then answered EALREADY and stacd adopted it) reads as stacd's, as
the adoption it was about to record would have made it. The registry's own files are as
libnvme writes them; the intents live outside it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from stas.kernel.api import ConnectRequest, KernelController, controller_matches

log = logging.getLogger("stas.coexist")

DEFAULT_ROOT = Path("/run/nvme/registry")
SEQNUM_FILE = Path("/sys/kernel/uevent_seqnum")
OWNER = "stas"
OWNER_ATTR = "owner"
SEQNUM_ATTR = "seqnum"
MAX_VALUE = 256  # an owner name is short; a longer file is not one
INTENTS_DIR = "stas-connecting"  # beside the registry: /run/nvme/stas-connecting
INTENT_FIELDS = (
    "transport", "traddr", "trsvcid", "subsysnqn", "hostnqn", "host_traddr", "host_iface",
)  # fmt: skip
MAX_INTENT = 4096  # two NQNs (223 bytes each) and a few addresses; a larger file is not one
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC
_temporaries = itertools.count(1)  # one sequence per process: every Registry's names differ
_pid = os.getpid()  # asked once (a system call each time), again in a forked child
os.register_at_fork(after_in_child=lambda: globals().update(_pid=os.getpid()))


def _temporary(directory: str, name: str) -> str:
    """A hidden name in ``directory`` for ``name`` being written: this process's pid and a
    counter (unique among its writers, no random names to make: each connect writes three)."""
    return f"{directory}/.{name}.{_pid}-{next(_temporaries)}"


def _read_small(path: str, limit: int) -> bytes:
    """Up to ``limit`` bytes of a small file: open, read, close (no buffered file object).
    A read shorter than asked is the end of a regular or sysfs file: no read to hear EOF."""
    fd = os.open(path, _READ_FLAGS)
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            want = limit - size
            chunk = os.read(fd, want)
            chunks.append(chunk)
            size += len(chunk)
            if len(chunk) < want:
                break
        return b"".join(chunks)
    finally:
        os.close(fd)


def _entry_exists(exc: OSError) -> bool:
    """``rename`` of a new entry failed because one is already there."""
    return exc.errno in (errno.ENOTEMPTY, errno.EEXIST)


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

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        *,
        seqnum_file: Path = SEQNUM_FILE,
        intents: Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.seqnum_file = Path(seqnum_file)
        self.intents = Path(intents) if intents is not None else self.root.parent / INTENTS_DIR
        # The same paths as strings: a connect's writes join names to them (no Path objects).
        self._root, self._intents_dir = str(self.root), str(self.intents)
        self.writes = 0  # files written (entries' attributes and intents): for tests and benches
        self._warned: set[str] = set()
        self._intents = itertools.count(1)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def owner(self, device: str) -> str | None:
        """Who owns ``device`` (None: nobody). An unreadable entry reads as owned by
        '<unreadable>': when in doubt, stacd leaves the controller alone."""
        if not valid_device(device):
            return None
        path = f"{self._root}/{device}/{OWNER_ATTR}"
        try:
            raw = _read_small(path, MAX_VALUE + 1)
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
            raw = _read_small(f"{self._root}/{device}/{name}", MAX_VALUE + 1)
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
            return _read_small(str(self.seqnum_file), 64).decode("ascii", "replace").strip()
        except OSError:
            return ""

    def _write_attr(self, entry: str, name: str, value: str) -> None:
        """One attribute, atomically: a temporary file in the entry, fsync, rename. Plain
        descriptors, not a text file object: this is on every connect's path."""
        tmp = _temporary(entry, name)
        fd = os.open(tmp, _WRITE_FLAGS, 0o644)
        try:
            try:
                data = (value + "\n").encode()
                while data:
                    data = data[os.write(fd, data) :]
                os.fchmod(fd, 0o644)  # the umask filtered open's mode
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, f"{entry}/{name}")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.writes += 1

    def _ensure_root(self) -> None:
        if not self.root.is_dir():
            self.root.mkdir(mode=0o755, parents=True, exist_ok=True)
            os.chmod(self.root, 0o755)  # mkdir's mode is filtered by the umask

    def claim(self, device: str, *, fresh: bool) -> bool:
        """Record ``device`` as owned by ``stas``. ``fresh``: stacd's own connect just created
        it, so any entry is stale and is replaced; else only an unowned one is claimed.
        Returns True if the entry now says ``stas``.

        A fresh claim first just creates the entry (the common case: nothing there, so no
        owner to read); only if one is there already is it read and, unless ours, replaced."""
        if not valid_device(device):
            return False
        try:
            if fresh and self._create_new(device):
                log.debug("%s: registry owner %s", device, OWNER)
                return True
        except OSError as exc:
            self._warn_once(
                "write", f"{self.root}: cannot record {device} as owned by {OWNER}: {exc}"
            )
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
                self._create(device)
            else:  # an unowned entry (other attributes only): add ours
                self._write_attr(str(entry), SEQNUM_ATTR, self._seqnum() or "0")
                self._write_attr(str(entry), OWNER_ATTR, OWNER)
        except OSError as exc:
            self._warn_once(
                "write", f"{self.root}: cannot record {device} as owned by {OWNER}: {exc}"
            )
            return False
        log.debug("%s: registry owner %s", device, OWNER)
        return True

    def _create_new(self, device: str) -> bool:
        """``device``'s entry made if there is none (True); False if one is there already
        (left as it is). The registry's root is made on the first ENOENT, not checked before
        every write."""
        try:
            self._create(device)
        except FileNotFoundError:
            self._ensure_root()
            self._create(device)
        except OSError as exc:
            if _entry_exists(exc):
                return False
            raise
        return True

    def _create(self, device: str) -> None:
        """A new entry appears complete or not at all: built aside, then renamed into place
        (the rename fails, ENOTEMPTY, if another writer created it meanwhile)."""
        tmp = _temporary(self._root, device)
        os.mkdir(tmp, 0o755)
        try:
            os.chmod(tmp, 0o755)  # mkdir's mode is filtered by the umask
            self._write_attr(tmp, SEQNUM_ATTR, self._seqnum() or "0")
            self._write_attr(tmp, OWNER_ATTR, OWNER)
            os.rename(tmp, f"{self._root}/{device}")
        except BaseException:
            _rmtree(Path(tmp))
            raise

    def _drop(self, entry: Path) -> None:
        """Remove an entry atomically: renamed to a hidden sibling, then purged."""
        hidden = _temporary(self._root, f"{entry.name}.gone")
        os.mkdir(hidden, 0o700)
        os.rename(entry, f"{hidden}/{entry.name}")
        _rmtree(Path(hidden))

    # --- connect intents ---------------------------------------------------------------------

    def intend(self, request: ConnectRequest) -> str | None:
        """Record, before the connect, that stacd is about to make the controller ``request``
        describes; returns the intent's name for ``settle`` (None: not recorded, logged)."""
        fields = {k: str(getattr(request, k)) for k in INTENT_FIELDS}
        text = "".join(f"{k}={v}\n" for k, v in fields.items()).rstrip("\n")
        name = f"{_pid}-{next(self._intents)}"
        try:
            try:
                self._write_attr(self._intents_dir, name, text)
            except FileNotFoundError:  # the first intent: make the directory
                self.intents.mkdir(mode=0o755, parents=True, exist_ok=True)
                os.chmod(self.intents, 0o755)
                self._write_attr(self._intents_dir, name, text)
        except OSError as exc:
            self._warn_once("intent", f"{self.intents}: cannot record a connect's intent: {exc}")
            return None
        return name

    def settle(self, intent: str | None, device: str | None) -> None:
        """The connect of ``intent`` ended: ``device`` made (claimed as ours first, so that a
        kill in between leaves the intent or the entry, never neither) or None (failed)."""
        if device is not None:
            self.claim(device, fresh=True)
        if intent is not None:
            self._drop_intent(intent)

    def _drop_intent(self, name: str) -> None:
        try:
            os.unlink(f"{self._intents_dir}/{name}")
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._warn_once("intent-drop", f"{self.intents}: cannot drop {name}: {exc}")

    def _read_intents(self) -> list[Mapping[str, str]]:
        """Every well-formed leftover intent (a malformed one matches nothing)."""
        try:
            names = sorted(n for n in os.listdir(self.intents) if not n.startswith("."))
        except OSError:
            return []
        found: list[Mapping[str, str]] = []
        for name in names:
            try:
                with open(self.intents / name, "rb") as f:
                    raw = f.read(MAX_INTENT + 1)
            except OSError:
                continue
            fields = parse_intent(raw)
            if fields is not None:
                found.append(fields)
        return found

    def intended(self, controllers: Iterable[KernelController]) -> frozenset[str]:
        """At start: the unowned I/O controllers a leftover intent describes (a previous run
        was stopped between the kernel's connect and its registry write) are claimed as
        stacd's; then every leftover intent is dropped. Returns those claimed."""
        intents = self._read_intents()
        ours: set[str] = set()
        for c in controllers:
            if not (c.is_io_controller and not c.is_discovery_controller):
                continue
            if not any(controller_matches(c, **i) for i in intents):
                continue
            if self.owner(c.device) is None and self.claim(c.device, fresh=False):
                log.info("%s: connected by stacd just before it stopped; claimed", c.device)
                ours.add(c.device)
        self._drop_all_intents()
        return frozenset(ours)

    def _drop_all_intents(self) -> None:
        try:
            names = os.listdir(self.intents)
        except OSError:
            return
        for name in names:
            self._drop_intent(name)

    def release(self, device: str) -> None:
        """After stacd disconnected ``device``: drop the entry if it is ours (hosts without
        udevd have no rule to do it, and a recycled name must not look owned)."""
        if not valid_device(device) or self.owner(device) != OWNER:
            return
        try:
            self._drop(self.root / device)
        except OSError as exc:
            self._warn_once("drop", f"{self.root}: cannot drop {device}'s entry: {exc}")


def parse_intent(raw: bytes) -> dict[str, str] | None:
    """An intent file's fields (``controller_matches``'s keywords), or None if it is not one:
    too long, not UTF-8, a line without ``=``, an unknown or repeated key, a field missing."""
    if len(raw) > MAX_INTENT:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or key not in INTENT_FIELDS or key in fields:
            return None
        fields[key] = value
    return fields if len(fields) == len(INTENT_FIELDS) else None


def _rmtree(path: Path) -> None:
    """shutil.rmtree, ignoring errors; shutil is imported here, not at stacd's start (issue 8)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
