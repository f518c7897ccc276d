"""stafd.conf / stacd.conf text -> ``ServiceConfig`` plus warnings.

A bad value, unknown option or unknown section never fails the load: it becomes a
``ConfigWarning`` (also logged on the ``stas.config`` logger) and the default is used, as
upstream does. For a scalar option the *last* line wins, bad or not. Only a file that is not
a config file at all raises ``ConfigError`` (see ``parser``).
"""

from __future__ import annotations

import logging
import os

import attrs

from stas.config import checks
from stas.config.controllers import ControllerSpec, Exclusion, parse_controller, parse_exclusion
from stas.config.errors import ConfigWarning
from stas.config.options import (
    CONTROLLERS,
    DAEMONS,
    LEGACY_ALIASES,
    OPTIONS,
    OPTIONS_BY_KEY,
    SECTION_DAEMONS,
    Daemon,
    Option,
    ServiceConfig,
)
from stas.config.parser import IniDocument, IniEntry, parse_ini, read_config_text

LOGGER_NAME = "stas.config"
SECRET_OPTIONS = frozenset({"tls-key"})  # never echoed in a warning


def _shown(value: str) -> str:
    text = value.replace("\n", "\\n")
    return text if len(text) <= 100 else text[:100] + "..."


def _convert(opt: Option, entry: IniEntry, daemon: str, source: str, out: list[str]) -> object:
    """The value of one option line, or the default with a warning if it is bad."""
    where = f"{source}: [{entry.section}] {entry.key}"
    default = opt.defaults[daemon]
    if entry.value is None:
        out.append(f"{where}: no value, using default ({opt.default_text(daemon)})")
        return default
    shown = "***" if opt.name in SECRET_OPTIONS else _shown(entry.value)
    where = f"{where}={shown}"
    try:
        if opt.list_sep is None:
            value = opt.check(entry.value)
        else:
            value = _convert_list(opt, entry.value, where, out)
    except checks.BadValue as e:
        out.append(f"{where}: {e}, using default ({opt.default_text(daemon)})")
        return default
    if opt.adjust is not None:
        value, note = opt.adjust(value)
        if note:
            out.append(f"{where}: {note}")
    return value


def _convert_list(opt: Option, text: str, where: str, out: list[str]) -> tuple[object, ...]:
    """Check each item of a ``+`` list; bad items are dropped, an empty result is bad."""
    items: list[object] = []
    for raw in text.split(opt.list_sep):
        item = raw.strip()
        if not item:
            continue
        try:
            value = opt.check(item)
        except checks.BadValue as e:
            out.append(f"{where}: {item!r} dropped: {e}")
            continue
        if value not in items:
            items.append(value)
    if not items:
        raise checks.BadValue("no valid item")
    return tuple(items)


def _check_sections(doc: IniDocument, daemon: str, source: str, out: list[str]) -> None:
    seen: set[str] = set()
    for name, _lineno in doc.sections:
        if name in seen:
            continue
        seen.add(name)
        readers = SECTION_DAEMONS.get(name)
        if readers is None:
            hint = next((s for s in SECTION_DAEMONS if s.lower() == name.lower()), None)
            extra = f" (section names are case-sensitive: did you mean [{hint}]?)" if hint else ""
            out.append(f"{source}: [{name}]: unknown section, ignored{extra}")
        elif daemon not in readers:
            out.append(f"{source}: [{name}]: section only used by {readers[0]}, ignored")


# Options of older releases that are gone: say so instead of "unknown".
OBSOLETE_OPTIONS = {
    "sticky-connections": "obsolete since 2.0, replaced by [I/O controller connection "
    "management] disconnect-scope, ignored",
}


def _unknown_option(entry: IniEntry, daemon: str, source: str) -> str:
    where = f"{source}: [{entry.section}] {entry.key}"
    if entry.key in OBSOLETE_OPTIONS:
        return f"{where}: {OBSOLETE_OPTIONS[entry.key]}"
    home = next((o.section for o in OPTIONS if o.name == entry.key and daemon in o.defaults), None)
    if home is not None:
        return f"{where}: unknown option in this section (it belongs in [{home}]), ignored"
    return f"{where}: unknown option, ignored"


def _read_controllers(
    entry: IniEntry,
    daemon: str,
    source: str,
    out: list[str],
    controllers: list[ControllerSpec],
    excluded: list[Exclusion],
) -> None:
    if entry.key not in ("controller", "exclude", "blacklist"):
        out.append(_unknown_option(entry, daemon, source))
        return
    if entry.key == "blacklist":
        out.append(f"{source}: [Controllers] blacklist= is deprecated, use exclude= instead")
    if entry.value is None:
        out.append(f"{source}: [Controllers] {entry.key}: no value, ignored")
        return
    if not entry.value and entry.key == "controller":
        return  # an empty placeholder line, as in the shipped templates
    if entry.key == "controller":
        spec, notes = parse_controller(entry.value, daemon, source=source)
        if spec is not None:
            controllers.append(spec)
    else:
        excl, notes = parse_exclusion(entry.value, source=source, key=entry.key)
        if excl is not None:
            excluded.append(excl)
    out.extend(notes)


def parse_service_config(
    text: str, daemon: Daemon, *, source: str = "stafd.conf"
) -> tuple[ServiceConfig, list[ConfigWarning]]:
    """Build the config of ``daemon`` from the text of its file (pure apart from logging)."""
    if daemon not in DAEMONS:
        raise ValueError(f"daemon must be 'stafd' or 'stacd', not {daemon!r}")
    doc, notes = parse_ini(text, source=source)
    out: list[str] = list(notes)
    _check_sections(doc, daemon, source, out)
    values: dict[str, object] = {}
    legacy: dict[str, object] = {}
    controllers: list[ControllerSpec] = []
    excluded: list[Exclusion] = []
    for entry in doc.entries:
        readers = SECTION_DAEMONS.get(entry.section)
        if readers is None or daemon not in readers:
            continue  # the section was reported once
        if entry.section == CONTROLLERS:
            _read_controllers(entry, daemon, source, out, controllers, excluded)
            continue
        opt = OPTIONS_BY_KEY.get((entry.section, entry.key))
        alias = LEGACY_ALIASES.get((entry.section, entry.key))
        if opt is None and alias is not None and daemon in alias.defaults:
            out.append(
                f"{source}: [{entry.section}] {entry.key} is deprecated, "
                f"use [{alias.section}] {alias.name} instead"
            )
            legacy[alias.attr] = _convert(alias, entry, daemon, source, out)
        elif opt is None:
            out.append(_unknown_option(entry, daemon, source))
        elif daemon not in opt.defaults:
            other = next(d for d in opt.defaults)
            out.append(
                f"{source}: [{entry.section}] {entry.key}: not a {daemon} option "
                f"(only {other} reads it), ignored"
            )
        else:
            values[opt.attr] = _convert(opt, entry, daemon, source, out)
    fields = {**legacy, **values, "controllers": tuple(controllers), "excluded": tuple(excluded)}
    config = attrs.evolve(ServiceConfig.defaults(daemon), **fields)  # type: ignore[arg-type]
    warnings = [ConfigWarning(w) for w in out]
    log = logging.getLogger(LOGGER_NAME)
    for w in warnings:
        log.warning("%s", w)
    return config, warnings


def load_service_config(
    path: str | os.PathLike[str], daemon: Daemon
) -> tuple[ServiceConfig, list[ConfigWarning]]:
    """Read stafd.conf or stacd.conf. A missing file gives the defaults without warnings;
    an unreadable or non-text file raises ``ConfigError`` (keep the running config)."""
    text = read_config_text(path)
    if text is None:
        logging.getLogger(LOGGER_NAME).info("%s: not found, using defaults", path)
        return ServiceConfig.defaults(daemon), []
    return parse_service_config(text, daemon, source=os.fspath(path))
