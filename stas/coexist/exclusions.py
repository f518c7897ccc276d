"""libnvme's system-wide exclusion list: /etc/nvme/exclusions.conf and exclusions.conf.d/*.conf.

nvme-cli (``nvme exclusion add``), nvme-discoverd and upstream nvme-stas 3.x all honour it, so
an administrator says once "never touch this controller". Format (libnvme's, as documented
by nvme-cli): INI; entries are ``exclusion = key=val;key=val`` lines inside an ``[exclusions]``
section, ``#`` starts a comment line, other sections are ignored. Keys are nvme connect's
option names: transport, traddr, trsvcid, nqn, host-traddr, host-iface, hostnqn, hostid. An
entry matches a controller when every key it gives matches (addresses compare as IPs, fc
addresses without case); a malformed entry (unknown key, token without ``=``, empty value,
no key at all, a non-numeric address on tcp/rdma) matches nothing, as in libnvme: we never
guess. A missing file or directory excludes nothing.

stacd neither connects nor disconnects a matching controller (stafd: a matching DC is not
connected); each match is logged once. Parsing is pure (``parse_exclusions``); reading the
files is ``load_exclusions``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from stas.net import parse_ip

log = logging.getLogger("stas.coexist")

DEFAULT_DIR = Path("/etc/nvme")
MAIN_FILE = "exclusions.conf"
DROPIN_DIR = "exclusions.conf.d"
SECTION = "exclusions"
LINE_KEY = "exclusion"
LINE_MAX = 4096  # libnvme reads lines of up to this many bytes
FILE_MAX = 1024 * 1024  # and caps one list file at 1 MiB
# Entry keys -> the Tid dict keys they compare with ('hostid' is the host's, not the Tid's).
KEYS: Mapping[str, str] = {
    "transport": "transport",
    "traddr": "traddr",
    "trsvcid": "trsvcid",
    "nqn": "subsysnqn",
    "host-traddr": "host-traddr",
    "host-iface": "host-iface",
    "hostnqn": "host-nqn",
    "hostid": "hostid",
}
IP_TRANSPORTS = ("tcp", "rdma")


class BadEntry(ValueError):
    """An exclusion entry libnvme would never match; the message says why."""


def _numeric(text: str) -> bool:
    return parse_ip(text) is not None


def parse_entry(text: str) -> dict[str, str]:
    """``key=val;key=val`` -> {Tid dict key: value}; BadEntry names the first problem."""
    fields: dict[str, str] = {}
    for raw in text.split(";"):
        token = raw.strip()
        if not token:
            continue  # ';;' and a trailing ';' are harmless
        key, eq, value = token.partition("=")
        key, value = key.strip(), value.strip()
        if not eq:
            raise BadEntry(f"{token!r} has no '='")
        if key not in KEYS:
            raise BadEntry(f"unknown key {key!r} (known: {', '.join(KEYS)})")
        if not value:
            raise BadEntry(f"{key} has an empty value")
        fields[KEYS[key]] = value
    if not fields:
        raise BadEntry("no key=value field")
    if fields.get("transport") in IP_TRANSPORTS:
        for key in ("traddr", "host-traddr"):
            if key in fields and not _numeric(fields[key]):
                raise BadEntry(f"{key}={fields[key]} is not a numeric IP address")
    return fields


def _same_addr(entry: str, actual: str, transport: str) -> bool:
    if transport == "fc":
        return entry.lower() == actual.lower()
    if entry == actual:
        return True
    try:
        a = ipaddress.ip_address(entry)
        b = ipaddress.ip_address(actual)
    except ValueError:
        return False
    return a == b


def fields_match(fields: Mapping[str, str], tid: Mapping[str, str]) -> bool:
    """libnvme's minimal match: only the keys the entry gives are compared."""
    transport = tid.get("transport", "")
    for key, want in fields.items():
        have = tid.get(key, "")
        if key in ("traddr", "host-traddr"):
            if not have or not _same_addr(want, have, transport):
                return False
        elif have != want:
            return False
    return True


@attrs.frozen
class Entry:
    """One ``exclusion =`` line: where it is, its text, its fields (None: never matches)."""

    where: str  # file:line
    text: str
    fields: Mapping[str, str] | None = None
    problem: str = ""

    def matches(self, tid: Mapping[str, str]) -> bool:
        return self.fields is not None and fields_match(self.fields, tid)


def parse_exclusions(text: str, source: str) -> tuple[list[Entry], list[str]]:
    """One list file's entries and warnings (bad entries are kept, matching nothing)."""
    entries: list[Entry] = []
    notes: list[str] = []
    inside = False
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{source}:{lineno}"
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("["):
            end = s.find("]")
            if end < 0:
                inside = False  # fail safe: what follows is ignored, not misattributed
                notes.append(f"{where}: malformed section header {s[:80]!r}; entries ignored")
            else:
                inside = s[1:end].strip() == SECTION
            continue
        key, eq, value = s.partition("=")
        if not eq or key.strip() != LINE_KEY:
            continue  # other keys are reserved for libnvme's future use
        value = value.strip()
        if not inside:
            notes.append(f"{where}: 'exclusion =' outside [{SECTION}], ignored")
            continue
        if len(line.encode()) >= LINE_MAX:
            entries.append(Entry(where, value[:80] + "...", None, "line too long"))
            notes.append(f"{where}: line longer than {LINE_MAX} bytes: matches nothing")
            continue
        try:
            entries.append(Entry(where, value, parse_entry(value)))
        except BadEntry as exc:
            entries.append(Entry(where, value, None, str(exc)))
            notes.append(f"{where}: exclusion = {value[:200]}: {exc}: matches nothing")
    return entries, notes


@attrs.frozen(eq=False)
class Exclusions:
    """The host's exclusion list. ``hostid`` is this host's (entries may name one)."""

    entries: tuple[Entry, ...] = ()
    hostid: str = ""
    _noted: set[str] = attrs.field(factory=set, repr=False)

    def match(self, tid: Mapping[str, str]) -> Entry | None:
        """The first entry matching this Tid dict (``Tid.as_dict()`` keys), or None."""
        if not self.entries:
            return None
        full = {**tid, "hostid": self.hostid}
        return next((e for e in self.entries if e.matches(full)), None)

    def excluded(self, tid: Mapping[str, str], what: str = "controller") -> bool:
        """True if excluded; the first time for each controller, say so in the log."""
        entry = self.match(tid)
        if entry is None:
            return False
        key = "|".join(tid.values())
        if key not in self._noted:
            self._noted.add(key)
            shown = ", ".join(v for v in tid.values() if v)
            log.info(
                "%s (%s) matches the exclusion list (%s: %s): neither connected nor disconnected",
                what,
                shown,
                entry.where,
                entry.text,
            )
        return True


def list_files(base: Path) -> list[Path]:
    """The main list, then the drop-ins ``exclusions.conf.d/<name>.conf`` by name."""
    files = [base / MAIN_FILE]
    try:
        dropins = sorted((base / DROPIN_DIR).iterdir())
    except OSError:
        dropins = []  # a missing directory excludes nothing
    files += [p for p in dropins if p.name.endswith(".conf") and len(p.name) > len(".conf")]
    return files


def _read(path: Path, notes: list[str]) -> str | None:
    try:
        if not path.is_file():
            return None
        with open(path, "rb") as f:
            data = f.read(FILE_MAX + 1)
    except OSError as exc:
        notes.append(f"{path}: cannot read: {exc.strerror or exc}; its entries are not applied")
        return None
    if len(data) > FILE_MAX:
        notes.append(f"{path}: larger than {FILE_MAX} bytes; only the first {FILE_MAX} read")
        data = data[:FILE_MAX]
    return data.decode("utf-8", errors="replace")


def load_exclusions(
    base: Path = DEFAULT_DIR, *, hostid: str = "", files: Iterable[Path] | None = None
) -> Exclusions:
    """Read the host's exclusion lists (warnings logged); absent files exclude nothing."""
    entries: list[Entry] = []
    notes: list[str] = []
    for path in list_files(base) if files is None else files:
        text = _read(path, notes)
        if text is not None:
            found, more = parse_exclusions(text, str(path))
            entries += found
            notes += more
    for note in notes:
        log.warning("%s", note)
    usable = sum(1 for e in entries if e.fields is not None)
    if usable:
        log.info("exclusion list: %d entries from %s", usable, base)
    return Exclusions(tuple(entries), hostid)
