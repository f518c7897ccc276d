#!/usr/bin/env python3
"""Generate the man pages from the code, so they cannot drift from it.

- Programs (stafd(8), stacd(8), stafctl(1), stacctl(1), stasadm(1)): from each program's own
  argparse parser (found by name in its module), plus a short description kept here.
- stafd.conf(5), stacd.conf(5), sys.conf(5): from the shipped templates in conf/ (whose defaults
  the tests check against the option table in stas/config/options.py).
- org.nvmexpress.staf(5), org.nvmexpress.stac(5) and their .debug(5) pages: from the interface
  definitions in stas/dbus/idl.py, which also drive the server and the clients.
- stafd.service(8), stacd.service(8), stas-config.target(8), stas-config@.service(8): from the
  unit files in units/ (their comments and directives).
- nvme-stas(7): the overview, with the list of pages taken from the lists above.
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
# FILES sections of the program pages: (path, what it is to the program)
PROGRAM_FILES = {
    "stacd": [
        ("/etc/stas/stacd.conf, /etc/stas/sys.conf", "configuration and host identity."),
        ("/run/nvme/registry",
         "libnvme's controller ownership registry: the I/O controllers stacd connected or "
         "adopted are recorded there with owner stas; one another owner holds is never "
         "disconnected."),
        ("/run/nvme/stas-connecting",
         "each connect is recorded there before it is made, so a stacd killed mid-connect "
         "still knows the controller as its own at restart."),
    ],
}  # fmt: skip
# EXIT STATUS of the command-line tools (stas.ctl.output and stas.ctl.bus make them)
CTL_EXIT_STATUS = [
    ("0", "success."),
    ("1", "failure, said in one line on standard error: for example the daemon or the bus "
          "cannot be reached, a non-root user asked for what only root may do, or a file or "
          "standard output cannot be written."),
    ("2", "bad command line (usage error naming the bad value)."),
    ("130", "interrupted (Ctrl-C)."),
    ("141", "the reader of standard output went away (stafctl ls | head); nothing is printed."),
]  # fmt: skip
CTL_PROGRAMS = ("stafctl", "stacctl", "stasadm")
CONF_PAGES = [("stafd.conf", "stafd"), ("stacd.conf", "stacd"), ("sys.conf", "sys")]
CONF_SOURCES = {"sys.conf": "sys.conf.doc"}  # the template installed under another name
UNIT_PAGES = ["stafd.service", "stacd.service", "stas-config.target", "stas-config@.service"]


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
    if name in PROGRAM_FILES:
        lines.append(".SH FILES")
        for path, what in PROGRAM_FILES[name]:
            lines += [".TP", f"\\fI{esc(path)}\\fR", esc(what)]
    if name in CTL_PROGRAMS:
        lines.append(".SH EXIT STATUS")
        for code, what in CTL_EXIT_STATUS:
            lines += [".TP", f"\\fB{code}\\fR", esc(what)]
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
        "sys.conf": "host identity shared by stafd and stacd",
        "nvme-stas": "NVMe over Fabrics STorage Appliance Services",
        "org.nvmexpress.staf": "stafd D-Bus interface",
        "org.nvmexpress.staf.debug": "stafd D-Bus debug interface",
        "org.nvmexpress.stac": "stacd D-Bus interface",
        "org.nvmexpress.stac.debug": "stacd D-Bus debug interface",
        "stafd.service": "systemd unit of stafd",
        "stacd.service": "systemd unit of stacd",
        "stas-config.target": "systemd target creating the host identity",
        "stas-config@.service": "systemd unit creating /etc/nvme/hostnqn or hostid",
    }[name]


def all_pages() -> list[str]:
    """Every page this script writes, as ``name(section)``."""
    pages = [f"{name}({section})" for name, section, *_ in PROGRAMS]
    pages += [f"{name}(5)" for name, _ in CONF_PAGES]
    pages += [f"{iface.name}(5)" for iface in dbus_interfaces()]
    pages += [f"{unit}(8)" for unit in UNIT_PAGES]
    return [*pages, "nvme-stas(7)"]


def see_also(name: str) -> str:
    core = ["nvme-stas(7)", "stafd(8)", "stacd(8)", "stafctl(1)", "stacctl(1)", "stasadm(1)",
            "stafd.conf(5)", "stacd.conf(5)", "sys.conf(5)"]  # fmt: skip
    return ", ".join(p for p in core if not p.startswith(name + "("))


def conf_page(name: str, daemon: str) -> str:
    """The template's sections, options and their comment blocks, as a man page."""
    lines = header(name, 5, desc_title(name))
    lines += [".SH SYNOPSIS", f"/etc/stas/{esc(name)}", ".SH DESCRIPTION"]
    template = (ROOT / "conf" / CONF_SOURCES.get(name, name)).read_text().splitlines()
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


def dbus_interfaces() -> list:
    """The custom interfaces of both daemons, main interface first (idl.py lists debug first)."""
    from stas.dbus.idl import STACD, STAFD

    return [iface for svc in (STAFD, STACD) for iface in sorted(
        svc.interfaces, key=lambda i: i.name.endswith(".debug"))]  # fmt: skip


def _args(args) -> str:
    return ", ".join(f"{a.signature} {a.name}" for a in args)


def dbus_page(iface) -> str:
    """One interface: where it lives, then its methods, signals and properties with signatures."""
    from stas.dbus.idl import STACD, STAFD

    svc = next(s for s in (STAFD, STACD) if iface in s.interfaces)
    daemon = "stafd" if svc is STAFD else "stacd"
    lines = header(iface.name, 5, desc_title(iface.name))
    lines += [".SH SYNOPSIS", f"bus name \\fB{esc(svc.bus_name)}\\fR (system bus), object "
              f"\\fB{esc(svc.object_path)}\\fR, interface \\fB{esc(iface.name)}\\fR"]  # fmt: skip
    lines += [".SH DESCRIPTION", esc(DBUS_TEXT.get(iface.name, "").format(daemon=daemon))]
    if iface.methods:
        lines.append(".SH METHODS")
        for m in iface.methods:
            out = f" \\(-> ({esc(_args(m.out_args))})" if m.out_args else ""
            lines += [".TP", f"\\fB{esc(m.name)}\\fR({esc(_args(m.in_args))}){out}",
                      esc(DBUS_MEMBERS.get(m.name, ""))]  # fmt: skip
    if iface.signals:
        lines.append(".SH SIGNALS")
        for sig in iface.signals:
            lines += [".TP", f"\\fB{esc(sig.name)}\\fR({esc(_args(sig.args))})",
                      esc(DBUS_MEMBERS.get(sig.name, ""))]  # fmt: skip
    if iface.properties:
        lines.append(".SH PROPERTIES")
        for prop in iface.properties:
            lines += [".TP", f"\\fB{esc(prop.name)}\\fR {esc(prop.signature)} ({prop.access})",
                      esc(DBUS_MEMBERS.get(prop.name, ""))]  # fmt: skip
    lines += [".SH SECURITY", esc(DBUS_SECURITY)]
    lines += [".SH SEE ALSO", esc(see_also(iface.name))]
    return "\n".join(lines) + "\n"


DBUS_TEXT = {
    "org.nvmexpress.staf": "What {daemon} knows: its discovery controllers and their cached "
    "discovery log pages. stacd reads it; stafctl(1) shows it. Upstream nvme-stas 2.x clients "
    "work unchanged: names, signatures and argument names are the same.",
    "org.nvmexpress.stac": "The I/O controllers {daemon} manages; stacctl(1) shows them.",
}
for _d in ("staf", "stac"):
    DBUS_TEXT[f"org.nvmexpress.{_d}.debug"] = (
        "Tracing and the run-time state of {daemon} as JSON, for troubleshooting. The standard "
        "org.freedesktop.DBus.Properties interface serves the properties and emits "
        "PropertiesChanged when one changes; setting a read-only property answers InvalidArgs."
    )
DBUS_MEMBERS = {
    "list_controllers": "One dictionary per controller: its transport ID (transport, traddr, "
    "trsvcid, subsysnqn, host-traddr, host-iface, host-nqn) and device; with detailed=true "
    "also its state, timers and sysfs attributes.",
    "get_log_pages": "The cached discovery log page entries of one discovery controller, named "
    "by its transport ID; an unknown controller gives an empty list.",
    "get_all_log_pages": 'A JSON list of {"discovery-controller": ..., "log-pages": [...]} '
    "for every discovery controller. Replies are bounded in size: a reply that would exceed the "
    "bound is refused with org.freedesktop.DBus.Error.LimitsExceeded.",
    "log_pages_changed": "Sent when a discovery controller's log page content changed (upstream "
    "sends it after every fetch).",
    "dc_removed": "Sent when one or more discovery controllers were removed.",
    "process_info": "A JSON object describing the daemon: host identity (secrets redacted for "
    "callers other than root), timers, kernel support, and for stafd the mDNS services.",
    "controller_info": "The detailed JSON of one controller, or {} when there is none.",
    "tron": "Trace on: DEBUG logging. Only root may set it (D-Bus policy).",
    "log_level": "The current log level name, e.g. INFO or DEBUG.",
}
DBUS_SECURITY = (
    "Anyone may call the methods; only root may own the names or set properties (the shipped "
    "D-Bus policy). DH-HMAC-CHAP secrets and the host key are replaced by a placeholder in "
    "every answer to a caller that is not root. Each caller (uid) has its own share of "
    "concurrent calls, so one user's flood cannot starve root's stafctl or stacctl."
)


def unit_page(unit: str) -> str:
    """A unit file: its leading comment, [Unit] description, then every directive as set."""
    text = (ROOT / "units" / unit).read_text().splitlines()
    lines = header(unit, 8, desc_title(unit))
    lines += [".SH SYNOPSIS", esc(f"/usr/lib/systemd/system/{unit}"), ".SH DESCRIPTION"]
    intro = [ln.lstrip("# ").strip() for ln in text if ln.startswith("#") and "=" not in ln]
    lines.append(esc(" ".join(intro[:3])))
    section = ""
    for raw in text:
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
            lines.append(".SH " + esc(section.upper()))
        elif section and line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            lines += [".TP", f"\\fB{esc(key)}\\fR={esc(value)}"]
    lines += [".SH SEE ALSO", esc(see_also(unit))]
    return "\n".join(lines) + "\n"


OVERVIEW = [
    ("DESCRIPTION",
     "nvme-stas finds NVMe over Fabrics storage and connects a Linux host to it. stafd(8) finds "
     "discovery controllers (from stafd.conf(5), from mDNS announcements of _nvme-disc._tcp, "
     "from NBFT boot tables and from referrals), registers with central discovery controllers "
     "(TP8010) and keeps their discovery log pages. stacd(8) turns those log pages and "
     "stacd.conf(5) into kernel NVMe I/O controller connections, keeps them up, and disconnects "
     "what zoning removes. Both share the host identity in sys.conf(5) and serve their state on "
     "the system D-Bus, which stafctl(1) and stacctl(1) read; stasadm(1) manages the identity."),
    ("COMPATIBILITY",
     "This implementation is a drop-in for upstream nvme-stas 2.x: the same configuration files "
     "and options, D-Bus names, methods and signatures, command-line tools and default output. "
     "Upstream's pickled last-known-config files are never read; a daemon that finds one says "
     "so once and starts from the kernel's connections and its own JSON state instead."),
    ("STRICTER THAN UPSTREAM",
     "Some input that upstream accepts is refused or handled more carefully here, each time with "
     "a message naming the file, section, key and value. A DH-HMAC-CHAP value that is not a valid "
     "DHHC-1 key (for example super-secret) is dropped with a warning. Numbers out of their kernel "
     "range (for example a negative kato or a queue-size above 1024) are refused. Configuration "
     "paths that are not regular files are refused (a FIFO would hang upstream), as are "
     "configuration files over 1 MiB and host files (file://) over 64 KiB. An exclude= entry left "
     "empty only because its host-traddr was removed is dropped, where upstream would exclude "
     "everything (a truly empty exclude= excludes everything, as upstream, with a warning). Values "
     "from the network (log page entries, mDNS TXT records) never reach the kernel's option "
     "string with a comma, equals sign or newline. A bad host NQN or host ID in sys.conf is "
     "ignored with the reason, and where upstream exits because sys.conf has no host NQN, the "
     "NQN is derived from /etc/machine-id exactly as upstream's stasadm derives it; as non-root "
     "with no usable machine-id, stasadm hostnqn uses a random UUID where upstream exits with "
     "Permission denied. A UTF-8 byte-order mark and CRLF line ends in configuration files are "
     "accepted. Paths given with -f are stored as absolute paths."),
    ("FILES",
     "/etc/stas/stafd.conf, /etc/stas/stacd.conf, /etc/stas/sys.conf (sys.conf.doc documents "
     "it); /run/stafd and /var/cache/stafd (JSON state, written atomically); the D-Bus policy "
     "in /usr/share/dbus-1/system.d/org.nvmexpress.staf.conf and org.nvmexpress.stac.conf."),
]  # fmt: skip


def overview_page() -> str:
    lines = header("nvme-stas", 7, desc_title("nvme-stas"))
    for title, text in OVERVIEW:
        lines += [f".SH {title}", esc(text)]
    lines += [".SH PAGES", esc(", ".join(p for p in all_pages() if p != "nvme-stas(7)"))]
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
    for iface in dbus_interfaces():
        page = out / f"{iface.name}.5"
        page.write_text(dbus_page(iface))
        written.append(page.name)
    for unit in UNIT_PAGES:
        page = out / f"{unit}.8"
        page.write_text(unit_page(unit))
        written.append(page.name)
    (out / "nvme-stas.7").write_text(overview_page())
    written.append("nvme-stas.7")
    print("man pages: " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
