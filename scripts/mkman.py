#!/usr/bin/env python3
"""Generate the man pages from the code, so they cannot drift from it.

- Programs (stafd(8), stacd(8), stafctl(1), stacctl(1), stasadm(1)): from each program's own
  argparse parser (found by name in its module), plus a short description kept here.
- stafd.conf(5), stacd.conf(5): from the shipped templates in conf/ (whose defaults the tests
  check against the option table in stas/config/options.py).
Output: roff files in .build/man/ (``make man``; ``make install`` installs them).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROGRAMS = [
    # name, section, module, parser factory names tried in order, description
    ("stafd", 8, "stas.main", ("stafd_parser", "build_stafd_parser"),
     "stafd, the STorage Appliance Finder, finds NVMe-oF discovery controllers (from "
     "stafd.conf, mDNS and referrals), connects to them, registers with central discovery "
     "controllers (TP8010), caches their discovery log pages and follows their change "
     "notices. It serves them on the system D-Bus as org.nvmexpress.staf."),
    ("stacd", 8, "stas.main", ("stacd_parser", "build_stacd_parser"),
     "stacd, the STorage Appliance Connector, connects the NVMe I/O controllers listed by "
     "stafd's discovery log pages and by stacd.conf, keeps them connected, and disconnects "
     "what zoning removes. It serves its state on the system D-Bus as org.nvmexpress.stac."),
    ("stafctl", 1, "stas.ctl.stafctl", ("build_parser", "_parser", "parser"),
     "stafctl shows what stafd knows (discovery controllers and their log pages) and "
     "switches its tracing, over D-Bus."),
    ("stacctl", 1, "stas.ctl.stacctl", ("build_parser", "_parser", "parser"),
     "stacctl shows stacd's I/O controllers and what it would connect or disconnect, and "
     "switches its tracing, over D-Bus."),
    ("stasadm", 1, "stas.ctl.stasadm", ("build_parser", "_parser"),
     "stasadm creates the host NQN and host ID and sets the host symbolic name in "
     "/etc/stas/sys.conf."),
]  # fmt: skip
CONF_PAGES = [("stafd.conf", "stafd"), ("stacd.conf", "stacd")]


def esc(text: str) -> str:
    """Escape roff specials in running text."""
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def header(name: str, section: int, title: str) -> list[str]:
    date = datetime.date.today().isoformat()
    from stas import __version__

    return [
        f'.TH "{name.upper()}" "{section}" "{date}" "nvme-stas {__version__}" "{title}"',
        ".SH NAME",
        f"{esc(name)} \\- {esc(title)}",
    ]


def find_parser(module_name: str, names: tuple[str, ...]) -> argparse.ArgumentParser | None:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    for attr in names:
        factory = getattr(module, attr, None)
        if callable(factory):
            parser = factory()
            if isinstance(parser, argparse.ArgumentParser):
                return parser
    return None


def options_section(parser: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for action in parser._actions:  # argparse has no public walk of its actions
        if isinstance(action, argparse._SubParsersAction):
            out += [".SH COMMANDS"]
            for choice, sub in action.choices.items():
                helptext = next((a.help for a in action._choices_actions if a.dest == choice), "")
                tail = esc(usage_tail(sub, skip=choice))
                out += [".TP", f"\\fB{esc(choice)}\\fR {tail}", esc(helptext or "")]
                for sa in sub._actions:
                    if sa.option_strings and sa.help != argparse.SUPPRESS and sa.dest != "help":
                        out += [".RS", ".TP", flag_text(sa), esc(sa.help or ""), ".RE"]
            continue
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if not any(line == ".SH OPTIONS" for line in out):
            out.append(".SH OPTIONS")
        out += [".TP", flag_text(action), esc(action.help or "")]
    return out


def flag_text(action: argparse.Action) -> str:
    flags = ", ".join(f"\\fB{esc(s)}\\fR" for s in action.option_strings)
    if action.nargs != 0:
        flags += f" \\fI{esc(action.metavar or action.dest.upper())}\\fR"
    return flags


def usage_tail(parser: argparse.ArgumentParser, skip: str = "") -> str:
    """The usage line after ``usage: PROG`` (and after ``skip``), on one line."""
    words = parser.format_usage().split()[2:]
    if skip and words[:1] == [skip]:
        words = words[1:]
    return " ".join(words)


def program_page(name: str, section: int, module: str, names: tuple[str, ...], text: str) -> str:
    parser = find_parser(module, names)
    if parser is None:
        raise SystemExit(f"mkman: no argument parser found for {name} in {module}")
    parser.prog = name
    lines = header(name, section, desc_title(name))
    lines += [".SH SYNOPSIS", f"\\fB{esc(name)}\\fR {esc(usage_tail(parser))}"]
    lines += [".SH DESCRIPTION", esc(text)]
    lines += options_section(parser)
    lines += [".SH SEE ALSO", esc(see_also(name))]
    return "\n".join(lines) + "\n"


def desc_title(name: str) -> str:
    return {
        "stafd": "STorage Appliance Finder daemon",
        "stacd": "STorage Appliance Connector daemon",
        "stafctl": "control stafd over D-Bus",
        "stacctl": "control stacd over D-Bus",
        "stasadm": "STorage Appliance Services administration",
        "stafd.conf": "stafd configuration file",
        "stacd.conf": "stacd configuration file",
    }[name]


def see_also(name: str) -> str:
    pages = ["stafd(8)", "stacd(8)", "stafctl(1)", "stacctl(1)", "stasadm(1)",
             "stafd.conf(5)", "stacd.conf(5)"]  # fmt: skip
    return ", ".join(p for p in pages if not p.startswith(name + "("))


def conf_page(name: str, daemon: str) -> str:
    """The template's sections, options and their comment blocks, as a man page."""
    lines = header(name, 5, desc_title(name))
    lines += [".SH SYNOPSIS", f"/etc/stas/{esc(name)}", ".SH DESCRIPTION"]
    template = (ROOT / "conf" / name).read_text().splitlines()
    intro, body = [], []
    seen_section = False
    for line in template:
        if line.startswith("["):
            seen_section = True
        (body if seen_section else intro).append(line)
    lines.append(esc(" ".join(ln.lstrip("# ").strip() for ln in intro[1:] if ln.strip("# "))))
    comment: list[str] = []
    for line in body:
        if line.startswith("["):
            lines += [".SH " + esc(line.upper())]
            comment = []
        elif line.startswith("# "):
            comment.append(line[2:])
        elif line.startswith("#") and "=" in line:
            key, _, default = line[1:].partition("=")
            lines += [".TP", f"\\fB{esc(key)}\\fR=\\fI{esc(default or 'none')}\\fR (default)"]
            if comment:  # options listed together share the comment block above them
                lines.append(esc(" ".join(c.strip() for c in comment)))
        elif not line.strip():
            comment = []
    lines += [".SH SEE ALSO", esc(see_also(name))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / ".build" / "man"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, section, module, names, text in PROGRAMS:
        page = out / f"{name}.{section}"
        page.write_text(program_page(name, section, module, names, text))
        written.append(page.name)
    for name, daemon in CONF_PAGES:
        page = out / f"{name}.5"
        page.write_text(conf_page(name, daemon))
        written.append(page.name)
    print("man pages: " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
