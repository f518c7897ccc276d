"""INI reading with upstream's configparser semantics, minus its two traps.

Upstream reads its files with ``configparser`` (delimiter ``=`` only, no interpolation,
``allow_no_value=True``, ``strict=False``) and collects repeated keys in file order. We keep all
of that (option names case-insensitive, section names case-sensitive, indented continuation
lines, duplicate sections merged) and fix two things:

- inline comments are stripped: ``#`` or ``;`` preceded by whitespace starts a comment. In
  list keys (``controller=``, ``exclude=``) ``;`` separates tokens, so there only ``#`` counts;
- a value is everything after the *first* ``=``; later ``=`` stay in the value.

The reader returns every entry in file order; deciding what a key means is the caller's job.
"""

from __future__ import annotations

import os
import re

import attrs

from stas.config.errors import ConfigError
from stas.config.files import read_regular_file

MAX_CONFIG_BYTES = 1 << 20  # a config file larger than 1 MiB is not a config file
LIST_KEYS = frozenset({"controller", "exclude", "blacklist"})

BOM = "\ufeff"  # a UTF-8 byte order mark, as some Windows editors write it
_NEWLINE = re.compile(r"\r\n|\r|\n")


@attrs.frozen
class IniEntry:
    """One ``key=value`` (or bare ``key``) line, with its continuation lines joined by newline."""

    section: str
    key: str
    value: str | None
    lineno: int


@attrs.frozen
class IniDocument:
    """Sections (name, line of the header) and entries, both in file order."""

    sections: tuple[tuple[str, int], ...]
    entries: tuple[IniEntry, ...]


def strip_inline_comment(text: str, prefixes: str = "#;") -> str:
    """Cut ``text`` at the first comment prefix that follows whitespace, then strip it."""
    for i in range(1, len(text)):
        if text[i] in prefixes and text[i - 1].isspace():
            return text[:i].strip()
    return text.strip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


@attrs.define
class _Pending:
    """The option being read, so indented continuation lines can be appended to it."""

    section: str
    key: str
    parts: list[str]
    indent: int
    lineno: int

    def finish(self) -> IniEntry:
        value = "\n".join(self.parts).rstrip() if self.parts else None
        return IniEntry(self.section, self.key, value, self.lineno)


def parse_ini(text: str, *, source: str) -> tuple[IniDocument, list[str]]:
    """Split ``text`` into sections and entries; returns the document and line-level notes.

    Raises ``ConfigError`` for text that is not a config file at all (NUL bytes, an option
    before any section header, or more than ``MAX_CONFIG_BYTES`` characters).
    """
    text = text.removeprefix(BOM)
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES} bytes, not a config file")
    if "\x00" in text:
        raise ConfigError(f"{source}: contains NUL bytes, not a text file")
    sections: list[tuple[str, int]] = []
    entries: list[IniEntry] = []
    notes: list[str] = []
    section: str | None = None
    pending: _Pending | None = None
    blanks = 0
    for lineno, raw in enumerate(_NEWLINE.split(text), start=1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            blanks += 0 if stripped else 1
            continue
        indent = _indent(raw)
        if pending is not None and pending.parts and indent > pending.indent:
            prefixes = "#" if pending.key in LIST_KEYS else "#;"
            pending.parts.extend([""] * blanks)
            pending.parts.append(strip_inline_comment(stripped, prefixes))
            blanks = 0
            continue
        blanks = 0
        if pending is not None:
            entries.append(pending.finish())
            pending = None
        line = strip_inline_comment(stripped, "#")
        if line.startswith("[") and "]" in line:
            section = strip_inline_comment(line[1 : line.rindex("]")], "#;").strip()
            sections.append((section, lineno))
            continue
        key, eq, value = line.partition("=")
        key = key.strip().lower()
        if section is None:
            raise ConfigError(
                f"{source}: line {lineno}: {stripped[:60]!r} appears before any [section] header"
            )
        if not key:
            notes.append(f"{source}: line {lineno}: {stripped[:60]!r} has no option name, ignored")
            continue
        parts: list[str] = []
        if eq:
            prefixes = "#" if key in LIST_KEYS else "#;"
            parts.append(strip_inline_comment(value, prefixes))
        pending = _Pending(section, key, parts, indent, lineno)
    if pending is not None:
        entries.append(pending.finish())
    return IniDocument(tuple(sections), tuple(entries)), notes


def read_config_text(path: str | os.PathLike[str]) -> str | None:
    """Read a config file as text; ``None`` if it does not exist, ``ConfigError`` if unusable.

    Regular files only (a FIFO or device is refused, never waited on), at most
    ``MAX_CONFIG_BYTES``, UTF-8; a leading byte order mark is accepted and removed.
    """
    data = read_regular_file(path, MAX_CONFIG_BYTES)
    if data is None:
        return None
    try:
        return data.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as e:
        hint = " (UTF-16 byte order mark: save the file as UTF-8)" if data[:2] in (
            b"\xff\xfe", b"\xfe\xff") else ""  # fmt: skip
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}){hint}"
        ) from None
