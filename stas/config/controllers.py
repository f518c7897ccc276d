"""``[Controllers] controller=`` and ``exclude=`` entries: parsing, validation, matching.

Syntax as upstream: ``key=value`` tokens separated by ``;``, whitespace around separators
trimmed, empty tokens ignored; ``subsysnqn=`` is accepted as an alias of ``nqn=`` (``nqn``
wins when both are given), as upstream. Unlike upstream, a token is split on its *first*
``=`` only, so DH-HMAC-CHAP secrets with base64 padding (``...==:``) survive.

Differences from upstream, on purpose:

- identity fields (transport, traddr, trsvcid, nqn, host-traddr, host-iface, host-nqn) are
  validated; a bad one drops the entry with a warning instead of failing at connect time;
  IP literals are stored in canonical form;
- ``exclude=`` entries with a bad or unknown token are dropped whole (dropping just the token
  would make the exclusion broader), and an entry left empty once ``host-traddr`` is removed
  is dropped, where upstream's would match every controller. An entry that is empty as
  written (``exclude=``) matches every controller as upstream, with a warning saying so;
- ``Exclusion.matches`` compares IP addresses as addresses (``::ffff:10.0.0.1`` equals
  ``10.0.0.1``, ``fe80::01`` equals ``fe80::1``); everything else is compared as strings.

Warnings never show secret values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from stas.config import checks
from stas.constants import default_trsvcid
from stas.net import normalise_ip

MAX_ENTRY_CHARS = 4096
MAX_TOKENS = 64
SECRET_KEYS = frozenset({"dhchap-secret", "dhchap-ctrl-secret", "tls-key"})
_SECRET_MARKS = ("DHHC-", "NVMeTLSkey-")
_EXCLUDE_KEYS = {
    "transport": "transport",
    "traddr": "traddr",
    "trsvcid": "trsvcid",
    "nqn": "subsysnqn",
    "host-iface": "host-iface",
    "host-nqn": "host-nqn",
}


def _hide_secret(value: str | None) -> str:
    return "None" if value is None else "'***'"


def _show(key: str, value: str) -> str:
    """``key=value`` for a warning, with secrets replaced by ``***``."""
    hidden = key in SECRET_KEYS or any(m in value for m in _SECRET_MARKS)
    return f"{key}=***" if hidden else f"{key}={value}"


def redact_entry(value: str) -> str:
    """The entry as written, with secret values hidden and long text shortened."""
    shown = []
    for token in value.split(";"):
        key, eq, _ = token.partition("=")
        if key.strip().lower() in SECRET_KEYS:
            shown.append(f"{key}{eq}***")
        elif any(m in token for m in _SECRET_MARKS):
            shown.append("***")
        else:
            shown.append(token)
    text = ";".join(shown)
    return text if len(text) <= 200 else text[:200] + "..."


@attrs.frozen
class ControllerSpec:
    """One ``controller=`` entry: the TID fields ('' when unset) and per-controller overrides
    (``None`` when not given, meaning "use [Global]")."""

    transport: str
    traddr: str
    trsvcid: str = ""
    subsysnqn: str = ""
    host_traddr: str = ""
    host_iface: str = ""
    host_nqn: str = ""
    hdr_digest: bool | None = None
    data_digest: bool | None = None
    kato: int | None = None
    queue_size: int | None = None
    reconnect_delay: int | None = None
    ctrl_loss_tmo: int | None = None
    disable_sqflow: bool | None = None
    nr_io_queues: int | None = None
    nr_write_queues: int | None = None
    nr_poll_queues: int | None = None
    dhchap_secret: str | None = attrs.field(default=None, repr=_hide_secret)
    dhchap_ctrl_secret: str | None = attrs.field(default=None, repr=_hide_secret)
    tls: bool | None = None
    keyring: str | None = None
    tls_key: str | None = attrs.field(default=None, repr=_hide_secret)

    def as_tid_dict(self, *, ignore_iface: bool = False) -> dict[str, str]:
        """Upstream's TID dict: the seven identity keys, then the overrides that were given.

        Contains the DH-HMAC-CHAP secrets and TLS key if given: redact before showing it.
        ``host-nqn`` is '' when not configured; the caller fills in the system host NQN.
        """
        tid = {
            "transport": self.transport,
            "traddr": self.traddr,
            "trsvcid": self.trsvcid,
            "subsysnqn": self.subsysnqn,
            "host-traddr": self.host_traddr,
            "host-iface": "" if ignore_iface else self.host_iface,
            "host-nqn": self.host_nqn,
        }
        for key in (*checks.CONNECTION_CHECKS, *SECRET_KEYS):
            value = getattr(self, key.replace("-", "_"))
            if value is not None:
                tid[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return tid


@attrs.frozen
class Exclusion:
    """One ``exclude=`` entry: (TID key, value) pairs that must all match."""

    items: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict[str, str]:
        return dict(self.items)

    def matches(self, tid: Mapping[str, str]) -> bool:
        """True if every key of this entry equals the same key of ``tid`` (minimal matching).

        Unlike upstream, addresses that both parse as IP are compared as addresses, and the
        transport is compared without case.
        """
        for key, want in self.items:
            have = tid.get(key)
            if have is None:
                return False
            if key == "transport":
                if have.lower() != want:
                    return False
            elif key == "traddr" and want != have:
                want_ip, have_ip = normalise_ip(want), normalise_ip(have)
                if want_ip is None or have_ip is None or want_ip != have_ip:
                    return False
            elif want != have:
                return False
        return True


def _tokenise(value: str, where: str, notes: list[str]) -> tuple[dict[str, str], bool]:
    """Split an entry into ``{key: value}``; the flag says a token was malformed."""
    if len(value) > MAX_ENTRY_CHARS:
        notes.append(f"{where}: longer than {MAX_ENTRY_CHARS} characters")
        return {}, True
    tokens = [t.strip() for t in value.split(";")]
    tokens = [t for t in tokens if t]
    if len(tokens) > MAX_TOKENS:
        notes.append(f"{where}: more than {MAX_TOKENS} key=value tokens")
        return {}, True
    result: dict[str, str] = {}
    malformed = False
    for token in tokens:
        key, eq, val = token.partition("=")
        key, val = key.strip().lower(), val.strip()
        if not eq or not key:
            shown = "***" if any(m in token for m in _SECRET_MARKS) else token[:60]
            notes.append(f"{where}: {shown!r} is not key=value")
            malformed = True
            continue
        if key in result:
            notes.append(f"{where}: {key} given twice, the last one is used")
        result[key] = val
    return result, malformed


def _pop_nqn(tokens: dict[str, str], where: str, notes: list[str]) -> str:
    """``nqn``, or its alias ``subsysnqn`` (upstream keeps either); ``nqn`` wins, as upstream."""
    nqn, alias = tokens.pop("nqn", None), tokens.pop("subsysnqn", None)
    if nqn is not None and alias is not None and nqn != alias:
        notes.append(f"{where}: both nqn and subsysnqn given, nqn={nqn} is used")
    return nqn if nqn is not None else alias or ""


def _check_addr(transport: str, value: str, *, source_addr: bool) -> str:
    if transport in ("tcp", "rdma"):
        return checks.to_ip(value) if source_addr else checks.to_host(value)
    if transport == "fc":
        return checks.to_fc_addr(value)
    return checks.to_word(value)  # loop: any token without separators


def parse_controller(
    value: str, daemon: str, *, source: str, key: str = "controller"
) -> tuple[ControllerSpec | None, list[str]]:
    """Parse one ``controller=`` value for ``daemon``; ``None`` (with warnings) if unusable."""
    where = f"{source}: [Controllers] {key}={redact_entry(value)}"
    notes: list[str] = []
    tokens, _ = _tokenise(value, where, notes)
    if not tokens and notes:
        return None, [*notes[:-1], notes[-1] + ", entry ignored"]
    fields: dict[str, object] = {}
    try:
        transport = tokens.pop("transport", "")
        traddr = tokens.pop("traddr", "")
        if not transport:
            raise _Drop("missing transport")
        fields["transport"] = transport = _checked(checks.to_transport, "transport", transport)
        if not traddr:
            raise _Drop("missing traddr")
        fields["traddr"] = _checked(
            lambda v: _check_addr(transport, v, source_addr=False), "traddr", traddr
        )
        trsvcid = tokens.pop("trsvcid", "")
        if transport in ("tcp", "rdma"):
            fields["trsvcid"] = (
                _checked(checks.to_port, "trsvcid", trsvcid)
                if trsvcid
                else default_trsvcid(transport)
            )
        elif trsvcid:
            notes.append(f"{where}: trsvcid is not used with {transport}, ignored")
        nqn = _pop_nqn(tokens, where, notes)
        if nqn:
            fields["subsysnqn"] = _checked(checks.to_subsysnqn, "nqn", nqn)
        elif daemon == "stafd":
            fields["subsysnqn"] = checks.WELL_KNOWN_DISC_NQN
        else:
            raise _Drop("missing nqn (stacd needs the subsystem NQN)")
        host_traddr = tokens.pop("host-traddr", "")
        if host_traddr and transport != "loop":
            fields["host_traddr"] = _checked(
                lambda v: _check_addr(transport, v, source_addr=True), "host-traddr", host_traddr
            )
        for name, convert in (("host-iface", checks.to_iface), ("host-nqn", checks.to_nqn)):
            text = tokens.pop(name, "")
            if text:
                fields[name.replace("-", "_")] = _checked(convert, name, text)
    except _Drop as drop:
        return None, [*notes, f"{where}: {drop}, entry ignored"]
    for name, text in tokens.items():
        check = checks.CONNECTION_CHECKS.get(name)
        if name in SECRET_KEYS:
            check = checks.to_tls_key if name == "tls-key" else checks.to_dhchap_secret
        if check is None:
            notes.append(f"{where}: unknown key {name!r}, ignored")
        elif daemon == "stafd" and name in checks.IO_ONLY_KEYS:
            notes.append(f"{where}: {name} is not used for discovery controllers, ignored")
        else:
            try:
                fields[name.replace("-", "_")] = check(text)
            except checks.BadValue as e:
                fallback = "ignored" if name in SECRET_KEYS else "using the [Global] value"
                notes.append(f"{where}: {_show(name, text)}: {e}, {fallback}")
    return ControllerSpec(**fields), notes  # type: ignore[arg-type]


class _Drop(Exception):
    """Internal: the entry cannot be used; the message is the reason."""


def _checked(check: Callable[[str], str], name: str, text: str) -> str:
    try:
        return check(text)
    except checks.BadValue as e:
        raise _Drop(f"{_show(name, text)}: {e}") from None


def _check_exclude_addr(text: str) -> str:
    for check in (checks.to_host, checks.to_fc_addr):
        try:
            return check(text)
        except checks.BadValue:
            pass
    raise checks.BadValue("not an IP address, host name or FC address")


_EXCLUDE_CHECKS = {
    "transport": checks.to_transport,
    "traddr": _check_exclude_addr,
    "trsvcid": checks.to_word,  # a port, or whatever the kernel reports for the transport
    "nqn": checks.to_subsysnqn,
    "host-iface": checks.to_iface,
    "host-nqn": checks.to_nqn,
}


def parse_exclusion(
    value: str, *, source: str, key: str = "exclude"
) -> tuple[Exclusion | None, list[str]]:
    """Parse one ``exclude=`` (or legacy ``blacklist=``) value; ``None`` if unusable."""
    where = f"{source}: [Controllers] {key}={redact_entry(value)}"
    notes: list[str] = []
    tokens, malformed = _tokenise(value, where, notes)
    if malformed:
        return None, [*notes, f"{where}: entry ignored (a partial exclusion would match more)"]
    if tokens.pop("host-traddr", None) is not None:
        notes.append(f"{where}: host-traddr is not used by exclude, removed")
    if "nqn" in tokens or "subsysnqn" in tokens:
        tokens["nqn"] = _pop_nqn(tokens, where, notes)
    items: list[tuple[str, str]] = []
    for name, text in tokens.items():
        if name not in _EXCLUDE_KEYS:
            return None, [*notes, f"{where}: {name!r} cannot be used in exclude, entry ignored"]
        try:
            items.append((_EXCLUDE_KEYS[name], _EXCLUDE_CHECKS[name](text) if text else ""))
        except checks.BadValue as e:
            return None, [*notes, f"{where}: {_show(name, text)}: {e}, entry ignored"]
    if not items and not value.replace(";", "").strip():
        # upstream's empty entry matches every controller: follow it, but say so
        return Exclusion(()), [*notes, f"{where}: empty entry, every controller is excluded"]
    if not items:
        return None, [*notes, f"{where}: nothing to match (it would exclude everything), ignored"]
    return Exclusion(tuple(items)), notes
