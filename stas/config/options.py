"""The option tables of stafd.conf and stacd.conf, and the config object built from them.

One ``Option`` row per key: its section, the ``ServiceConfig`` field it fills, its checker, its
default per daemon and how the default is shown in warnings. Defaults are upstream's *code*
defaults (2.x), not its man pages (e.g. stafd ``kato`` 30, stacd none; ``persistent-connections``
true). ``dc-backend`` is ours.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from stas.config import checks
from stas.config.controllers import ControllerSpec, Exclusion
from stas.config.timespan import format_seconds

if TYPE_CHECKING:  # the daemons load it; parsing a config file does not need it
    from stas.coexist.exclusions import Exclusions

Daemon = Literal["stafd", "stacd"]
DAEMONS: tuple[Daemon, ...] = ("stafd", "stacd")

GLOBAL = "Global"
SERVICE_DISCOVERY = "Service Discovery"
DC_MGMT = "Discovery controller connection management"
IOC_MGMT = "I/O controller connection management"
CONTROLLERS = "Controllers"

# Which daemon reads which section ([Global] and [Controllers] are read by both).
SECTION_DAEMONS: Mapping[str, tuple[Daemon, ...]] = {
    GLOBAL: DAEMONS,
    SERVICE_DISCOVERY: ("stafd",),
    DC_MGMT: ("stafd",),
    IOC_MGMT: ("stacd",),
    CONTROLLERS: DAEMONS,
}

IP_FAMILIES: Mapping[str, tuple[int, ...]] = {
    "ipv4": (4,),
    "ipv6": (6,),
    "ipv4+ipv6": (4, 6),
    "ipv6+ipv4": (4, 6),  # upstream maps both orders to (4, 6): IPv4 is preferred
}
DISCONNECT_SCOPES = (
    "only-stas-connections",
    "all-connections-matching-disconnect-trtypes",
    "no-disconnect",
)
DISCONNECT_TRTYPES = ("tcp", "rdma", "fc")


def _to_ip_family(text: str) -> tuple[int, ...]:
    family = IP_FAMILIES.get(text.lower())
    if family is None:
        raise checks.BadValue("expected ipv4, ipv6, ipv4+ipv6 or ipv6+ipv4")
    return family


def _show_ip_family(value: object) -> str:
    names: dict[object, str] = {(4,): "ipv4", (6,): "ipv6"}
    return names.get(value, "ipv4+ipv6")


def _show_bool(value: object) -> str:
    return "none" if value is None else str(value).lower()


def _show_enabled(value: object) -> str:
    return "enabled" if value else "disabled"


def _show_plain(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return "+".join(str(v) for v in value)
    return str(value)


def _show_span(value: object) -> str:
    return "forever" if value == -1 else format_seconds(value)  # type: ignore[arg-type]


@attrs.frozen
class Option:
    """One key of stafd.conf/stacd.conf. ``defaults`` has an entry per daemon that reads it."""

    section: str
    name: str
    attr: str
    check: Callable[[str], object]
    defaults: Mapping[str, object]
    show: Callable[[object], str] = _show_plain
    list_sep: str | None = None  # a list option: ``check`` applies to each item
    adjust: Callable[[object], tuple[object, str | None]] | None = None  # value, note

    def default_text(self, daemon: str) -> str:
        return self.show(self.defaults[daemon])


def _raise_one_to_two(value: object) -> tuple[object, str | None]:
    """``connect-attempts-on-ncc=1`` makes no sense (one attempt is no retry): upstream uses 2."""
    return (2, "1 is raised to 2") if value == 1 else (value, None)


_CONN = checks.CONNECTION_CHECKS


def _both(value: object) -> dict[str, object]:
    return {"stafd": value, "stacd": value}


OPTIONS: tuple[Option, ...] = (
    Option(GLOBAL, "tron", "tron", checks.to_bool, _both(False), _show_bool),
    Option(GLOBAL, "hdr-digest", "hdr_digest", _CONN["hdr-digest"], _both(False), _show_bool),
    Option(GLOBAL, "data-digest", "data_digest", _CONN["data-digest"], _both(False), _show_bool),
    Option(GLOBAL, "kato", "kato", _CONN["kato"], {"stafd": 30, "stacd": None}),
    Option(GLOBAL, "queue-size", "queue_size", _CONN["queue-size"], _both(None)),
    Option(GLOBAL, "reconnect-delay", "reconnect_delay", _CONN["reconnect-delay"], _both(None)),
    Option(GLOBAL, "ctrl-loss-tmo", "ctrl_loss_tmo", _CONN["ctrl-loss-tmo"], _both(None)),
    Option(
        GLOBAL, "disable-sqflow", "disable_sqflow", _CONN["disable-sqflow"], _both(None), _show_bool
    ),
    Option(GLOBAL, "nr-io-queues", "nr_io_queues", _CONN["nr-io-queues"], {"stacd": None}),
    Option(GLOBAL, "nr-write-queues", "nr_write_queues", _CONN["nr-write-queues"], {"stacd": None}),
    Option(GLOBAL, "nr-poll-queues", "nr_poll_queues", _CONN["nr-poll-queues"], {"stacd": None}),
    Option(GLOBAL, "ignore-iface", "ignore_iface", checks.to_bool, _both(False), _show_bool),
    # NVMe/TCP TLS for every controller (per-controller values win); tls-key is a secret.
    Option(GLOBAL, "tls", "tls", _CONN["tls"], _both(False), _show_bool),
    Option(GLOBAL, "tls-key", "tls_key", checks.to_tls_key, _both(None), lambda v: "none"),
    Option(GLOBAL, "keyring", "keyring", _CONN["keyring"], _both(None)),
    Option(GLOBAL, "ip-family", "ip_family", _to_ip_family, _both((4, 6)), _show_ip_family),
    Option(GLOBAL, "pleo", "pleo", checks.to_enabled, {"stafd": True}, _show_enabled),
    Option(
        GLOBAL,
        "dc-backend",
        "dc_backend",
        checks.one_of("auto", "kernel", "userspace"),
        {"stafd": "auto"},
    ),
    Option(
        SERVICE_DISCOVERY, "zeroconf", "zeroconf", checks.to_enabled, {"stafd": True}, _show_enabled
    ),
    # Upstream 2.x (deprecated there in 2.1.3, meaningful here again): whether nvme-cli's
    # autoconnect udev rule stays active while stacd runs (stas.coexist.udev_rule).
    Option(GLOBAL, "udev-rule", "udev_rule", checks.to_enabled, {"stacd": True}, _show_enabled),
    Option(
        DC_MGMT,
        "persistent-connections",
        "persistent_connections",
        checks.to_bool,
        {"stafd": True},
        _show_bool,
    ),
    Option(
        DC_MGMT,
        "zeroconf-connections-persistence",
        "zeroconf_connections_persistence",
        checks.to_timespan,
        {"stafd": 259200.0},
        _show_span,
    ),
    Option(
        IOC_MGMT,
        "disconnect-scope",
        "disconnect_scope",
        checks.one_of(*DISCONNECT_SCOPES),
        {"stacd": "only-stas-connections"},
    ),
    Option(
        IOC_MGMT,
        "disconnect-trtypes",
        "disconnect_trtypes",
        checks.one_of(*DISCONNECT_TRTYPES),
        {"stacd": ("tcp",)},
        list_sep="+",
    ),
    Option(
        IOC_MGMT,
        "connect-attempts-on-ncc",
        "connect_attempts_on_ncc",
        checks.int_range(0),
        {"stacd": 0},
        adjust=_raise_one_to_two,
    ),
)

OPTIONS_BY_KEY: Mapping[tuple[str, str], Option] = {(o.section, o.name): o for o in OPTIONS}

# Legacy spellings kept for 2.x drop-in compatibility: (section, key) -> the option they feed.
LEGACY_ALIASES: Mapping[tuple[str, str], Option] = {
    (GLOBAL, "persistent-connections"): OPTIONS_BY_KEY[(DC_MGMT, "persistent-connections")],
}


@attrs.frozen
class ServiceConfig:
    """Everything stafd.conf or stacd.conf says, validated. Field defaults are upstream's
    (stafd's where the daemons differ); ``defaults(daemon)`` gives the exact per-daemon set.
    Fields of options a daemon does not read keep their default."""

    daemon: str = "stafd"
    # [Global]
    tron: bool = False
    hdr_digest: bool = False
    data_digest: bool = False
    kato: int | None = 30
    queue_size: int | None = None
    reconnect_delay: int | None = None
    ctrl_loss_tmo: int | None = None
    disable_sqflow: bool | None = None
    nr_io_queues: int | None = None
    nr_write_queues: int | None = None
    nr_poll_queues: int | None = None
    ignore_iface: bool = False
    tls: bool = False
    tls_key: str | None = attrs.field(default=None, repr=False)
    keyring: str | None = None
    ip_family: tuple[int, ...] = (4, 6)
    pleo: bool = True
    dc_backend: str = "auto"
    udev_rule: bool = True
    # [Service Discovery]
    zeroconf: bool = True
    # [Discovery controller connection management]
    persistent_connections: bool = True
    zeroconf_connections_persistence: float = 259200.0
    # [I/O controller connection management]
    disconnect_scope: str = "only-stas-connections"
    disconnect_trtypes: tuple[str, ...] = ("tcp",)
    connect_attempts_on_ncc: int = 0
    # [Controllers]
    controllers: tuple[ControllerSpec, ...] = ()
    excluded: tuple[Exclusion, ...] = ()
    # Not from the file: libnvme's system-wide exclusion list (/etc/nvme), set by the daemon.
    nvme_exclusions: Exclusions | None = attrs.field(default=None, eq=False, repr=False)

    @classmethod
    def defaults(cls, daemon: Daemon) -> ServiceConfig:
        """The configuration of an absent or empty file for ``daemon``."""
        values = {o.attr: o.defaults[daemon] for o in OPTIONS if daemon in o.defaults}
        return cls(daemon=daemon, **values)  # type: ignore[arg-type]

    @property
    def zeroconf_persistence_forever(self) -> bool:
        """``zeroconf-connections-persistence=-1``: never drop unreachable mDNS DCs."""
        return self.zeroconf_connections_persistence < 0

    def is_excluded(self, tid: Mapping[str, str]) -> bool:
        """True if any ``exclude=`` entry matches this TID dict (exclude wins over controller)."""
        return any(e.matches(tid) for e in self.excluded)

    def nvme_excluded(self, tid: Any, what: str = "controller") -> bool:
        """True if /etc/nvme's exclusion list names this Tid: neither connect nor disconnect."""
        return self.nvme_exclusions is not None and self.nvme_exclusions.excluded(
            tid.as_dict(), what
        )
