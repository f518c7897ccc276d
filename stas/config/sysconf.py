"""sys.conf ``[Host]`` and the /etc/nvme host files: who this host is.

Keys ``nqn``, ``id``, ``key`` and ``symname``. A value ``file://PATH`` means: the first
whitespace-separated word of the first line of PATH. Defaults point at ``/etc/nvme/hostnqn``,
``/etc/nvme/hostid`` and ``/etc/nvme/hostkey``. Nothing here exits or raises for a missing or
bad identity: the values become ``None`` and ``problems`` says why, so each daemon decides
(and stafctl works without them). Only an unreadable sys.conf itself raises ``ConfigError``.

``set_sys_option`` edits one key in place, keeping comments and every other line (upstream's
stasadm rewrites the file through configparser and loses them).
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

import attrs

from stas.config import checks
from stas.config.errors import ConfigError
from stas.config.files import read_regular_file
from stas.config.parser import BOM, parse_ini, read_config_text, strip_inline_comment

DEFAULT_SYS_CONF = "/etc/stas/sys.conf"
HOST_SECTION = "Host"
SYS_KEYS = ("nqn", "id", "key", "symname")
DEFAULT_VALUES = {
    "nqn": "file:///etc/nvme/hostnqn",
    "id": "file:///etc/nvme/hostid",
    "key": "file:///etc/nvme/hostkey",
}
MAX_HOST_FILE_BYTES = 64 << 10  # host NQN, ID, key and symname files are one short line
NEW_FILE_HEADER = (
    "# sys.conf: host identity shared by stafd and stacd (see sys.conf(5)).\n"
    "# Written by stasadm. A value file://PATH means: the first word of the\n"
    "# first line of PATH.\n"
    "\n"
)
_LABELS = {"nqn": "host NQN", "id": "host ID", "key": "host key", "symname": "host symname"}
_CHECKS = {
    "nqn": checks.to_nqn,
    "id": checks.to_uuid,
    "key": checks.to_dhchap_secret,
    "symname": checks.to_symname,
}
_HINTS = {"nqn": " (stasadm hostnqn -f {path} creates it)", "id": " (stasadm hostid -f {path})"}


def _hide_secret(value: str | None) -> str:
    return "None" if value is None else "'***'"


@attrs.frozen
class SysConfig:
    """The host identity; ``None`` where missing or invalid, with the reasons in ``problems``.

    ``hostkey`` is a secret: ``repr`` and ``redacted()`` never show it.
    """

    hostnqn: str | None = None
    hostid: str | None = None
    hostkey: str | None = attrs.field(default=None, repr=_hide_secret)
    symname: str | None = None
    problems: tuple[str, ...] = ()

    def redacted(self) -> dict[str, str]:
        """For status output: every value as text ('' when unset), the host key as ``***``."""
        return {
            "hostnqn": self.hostnqn or "",
            "hostid": self.hostid or "",
            "hostkey": "***" if self.hostkey else "",
            "symname": self.symname or "",
        }


def _read_host_file(path: str) -> str:
    """First word of the first line of ``path``; ``ValueError`` with a reason otherwise.

    Regular files only (``read_regular_file``): ``nqn=file://FIFO`` must not hang a daemon.
    """
    try:
        data = read_regular_file(path, MAX_HOST_FILE_BYTES)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    if data is None:
        raise ValueError(f"{path} does not exist")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    word = host_file_word(text)
    if word is None:
        raise ValueError(f"{path} is empty")
    return word


def host_file_word(text: str) -> str | None:
    """What a daemon takes from a host file's text: the first word of its first line (as
    upstream reads /etc/nvme/hostnqn); ``None`` if there is none. Shared with stasadm's check
    so that what it writes with ``-f`` is what is read back."""
    lines = text.removeprefix(BOM).splitlines()
    words = lines[0].split() if lines else []
    return words[0] if words else None


def _resolve(key: str, raw: str, explicit: bool, problems: list[str]) -> str | None:
    """The checked value of one key, following ``file://``; ``None`` with a problem if bad."""
    label = _LABELS[key]
    origin = ""
    value = raw
    if raw.lower().startswith("file://"):
        path = raw[len("file://") :]
        try:
            value = _read_host_file(path)
        except ValueError as e:
            if key == "key" and not explicit and not os.path.lexists(path):
                return None  # the host key is optional: no file, no key
            hint = _HINTS.get(key, "").format(path=path) if "does not exist" in str(e) else ""
            problems.append(f"{label}: {e}{hint}")
            return None
        origin = f" from {path}"
    try:
        return _CHECKS[key](value)
    except checks.BadValue as e:
        shown = "" if key == "key" else f" {value[:100]!r}"
        problems.append(f"{label}{origin}{shown}: {e}")
        return None


def load_sys_config(path: str | os.PathLike[str] = DEFAULT_SYS_CONF) -> SysConfig:
    """Read sys.conf (absent: all defaults) and resolve the host files it points to."""
    source = os.fspath(path)
    text = read_config_text(path)
    problems: list[str] = []
    raw: dict[str, str] = {}
    if text is not None:
        doc, notes = parse_ini(text, source=source)
        problems.extend(notes)
        for name, _lineno in doc.sections:
            if name != HOST_SECTION:
                problems.append(f"{source}: [{name}]: unknown section, ignored")
        for entry in doc.entries:
            if entry.section != HOST_SECTION:
                continue
            if entry.key not in SYS_KEYS:
                problems.append(f"{source}: [Host] {entry.key}: unknown option, ignored")
            elif entry.value is None or not entry.value:
                problems.append(f"{source}: [Host] {entry.key}: no value, using the default")
                raw.pop(entry.key, None)
            else:
                raw[entry.key] = entry.value
    values: dict[str, str | None] = {}
    for key in SYS_KEYS:
        value = raw.get(key, DEFAULT_VALUES.get(key))
        values[key] = None if value is None else _resolve(key, value, key in raw, problems)
    log = logging.getLogger("stas.config")
    for problem in problems:
        log.warning("%s", problem)
    return SysConfig(
        hostnqn=values["nqn"],
        hostid=values["id"],
        hostkey=values["key"],
        symname=values["symname"],
        problems=tuple(problems),
    )


def _comment_tail(line: str) -> str:
    """The inline comment of a line (``  # ...``), or ''."""
    kept = strip_inline_comment(line)
    rest = line.strip()[len(kept) :]
    return "  " + rest.strip() if rest.strip() else ""


def rewrite_sys_option(text: str | None, key: str, value: str | None) -> str:
    """``text`` with ``[Host] key`` set to ``value`` (or removed if ``None``); every other line,
    comment and blank is kept. ``None`` text means a new file (with a header comment)."""
    lines = (text if text is not None else NEW_FILE_HEADER + "[Host]\n").splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"
    section: str | None = None
    owner: str | None = None  # key of the option a continuation line would belong to
    owner_indent = 0
    matches: list[int] = []  # lines of ``key`` in [Host], continuation lines included
    insert_at: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        indent = len(line) - len(line.lstrip())
        if owner is not None and indent > owner_indent:
            if owner == key and section == HOST_SECTION:
                matches.append(i)
            if section == HOST_SECTION:
                insert_at = i + 1
            continue
        content = strip_inline_comment(stripped)
        if content.startswith("[") and "]" in content:
            section, owner = content[1 : content.rindex("]")].strip(), None
            if section == HOST_SECTION:
                insert_at = i + 1
            continue
        owner, owner_indent = content.partition("=")[0].strip().lower(), indent
        if section == HOST_SECTION:
            insert_at = i + 1
            if owner == key:
                matches.append(i)
    new_line = f"{key}={value}" if value is not None else None
    if matches:
        first = matches[0]
        if new_line is not None:
            lines[first] = new_line + _comment_tail(lines[first]) + "\n"
        drop = set(matches[1:] if new_line is not None else matches)
        lines = [line for i, line in enumerate(lines) if i not in drop]
    elif new_line is not None and insert_at is not None:
        lines.insert(insert_at, new_line + "\n")
    elif new_line is not None:
        if lines and lines[-1].strip():
            lines.append("\n")
        lines.extend(["[Host]\n", new_line + "\n"])
    return "".join(lines)


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory, fsync, rename, fsync the directory."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _shown(key: str, value: str) -> str:
    """``value`` for an error message: the host key never, a long value cut."""
    if key == "key":
        return "'***'"
    return repr(value) if len(value) <= 64 else f"{value[:64]!r}..."


def check_sys_value(key: str, value: str | None) -> None:
    """ConfigError unless ``value`` can be stored for ``key``, read back unchanged and used by
    the daemons (stasadm checks a value with this before writing it anywhere, sys.conf or a
    ``-f`` file). A ``file://PATH`` value is checked for its path only: the file is read, and
    its word checked by the same ``_CHECKS`` rule, when a daemon loads sys.conf."""
    if key not in SYS_KEYS:
        raise ConfigError(f"sys.conf has no key {key!r} (expected one of {', '.join(SYS_KEYS)})")
    if value is None:
        return
    if not value or not value.isprintable() or value != value.strip():
        raise ConfigError(
            f"{key}: value must be non-empty printable text on one line, without leading "
            "or trailing spaces"
        )
    if strip_inline_comment("=" + value) != "=" + value:
        raise ConfigError(
            f"{key}: value {_shown(key, value)} would be read back cut at its ' #' or ' ;'"
        )
    if value.lower().startswith("file://"):
        return
    try:
        _CHECKS[key](value)
    except checks.BadValue as e:
        raise ConfigError(f"{key}: value {_shown(key, value)}: {e}") from None


def check_file_value(key: str, value: str) -> None:
    """ConfigError unless ``value``, written alone to a host file (stasadm ``-f FILE``), is
    read back whole: the daemons take only the file's first word, so ``rack 7`` would silently
    become ``rack``. Refused at write time, since the reading is upstream's and stays."""
    check_sys_value(key, value)
    read_back = host_file_word(value + "\n")
    if read_back == value:
        return
    got = "nothing" if read_back is None else _shown(key, read_back)
    raise ConfigError(
        f"{key}: value {_shown(key, value)} contains whitespace, and the daemons read only the"
        f" first word of a -f file (as upstream): they would read {got}; choose a value"
        " without spaces, or store it in sys.conf itself (without -f)"
    )


def set_sys_option(path: str | os.PathLike[str], key: str, value: str | None) -> None:
    """Set (or with ``None`` remove) ``[Host] key`` in sys.conf, creating it if missing.

    For stasadm: ``set-symname``, ``clear-symname``, ``hostnqn -f FILE`` (``nqn=file://FILE``).
    Raises ``ConfigError`` for an unknown key, a multi-line value, or an I/O failure.
    """
    check_sys_value(key, value)
    target = Path(os.path.realpath(path))
    text = read_config_text(target)
    new_text = rewrite_sys_option(text, key, value)
    if new_text == text:
        return
    try:
        _atomic_write(target, new_text)
    except OSError as e:
        raise ConfigError(f"{target}: cannot write: {e.strerror or e}") from None
