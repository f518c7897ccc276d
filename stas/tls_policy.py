"""When a connection uses NVMe/TCP TLS (TP 8011), pure: configuration plus what the log page
entry demands.

A discovery log page entry's TREQ bits 1:0 say whether a secure channel is required (1),
not required (2) or not specified (0); for TCP its TSAS byte 0 (SECTYPE) names the channel:
0 none, 1 TLS 1.2 (obsolete), 2 TLS 1.3. The DLPE dicts carry them as libnvme spells them:
``treq`` ``"required"``/``"not required"``/``"not specified"`` (or the number for other
values) and, for TCP entries with a security type, ``tsas`` ``"tls"``/``"tls1.3"``/
``"reserved"`` (libnvme's ``tsas.sectype``, flattened so the dict stays ``a{ss}``).

Rules: an entry that requires a secure channel is connected with TLS or not at all (an
explicit ``tls=false`` for it, or a channel other than TLS 1.3, refuses it with the reason);
otherwise TLS is used when the controller's ``tls`` (or [Global]'s) says so. TLS exists only
for tcp: [Global] ``tls=true`` leaves rdma/fc/loop controllers alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from stas.kernel.options import InvalidOption

_TREQ_WORDS = {"not specified": 0, "required": 1, "not required": 2, "disable sqflow": 0}
USERSPACE_REFUSAL = (
    "TLS is not supported by the userspace discovery host (Python's ssl module has no TLS-PSK): "
    "use dc-backend=kernel for this controller"
)


def secure_channel(treq: str) -> int:
    """TREQ bits 1:0 from a DLPE dict's ``treq`` text (libnvme's words or a number)."""
    if treq in _TREQ_WORDS:
        return _TREQ_WORDS[treq]
    try:
        return int(treq, 0) & 0x3
    except ValueError:
        return 0


def entry_requires_tls(entry: Mapping[str, str]) -> bool:
    """Whether a DLPE dict says its subsystem may only be reached over TLS.

    Raises InvalidOption naming the subsystem when the required channel is not TLS 1.3."""
    if entry.get("trtype") != "tcp" or secure_channel(entry.get("treq", "")) != 1:
        return False
    sectype = entry.get("tsas", "none")
    if sectype not in ("none", "tls1.3"):  # none + required: TCP's only channel is TLS 1.3
        raise InvalidOption(
            "tsas",
            sectype,
            f"{_where(entry)} requires a secure channel other than TLS 1.3, not supported",
        )
    return True


def _where(entry: Mapping[str, str]) -> str:
    return f"{entry.get('subnqn', '?')} at {entry.get('traddr', '?')}:{entry.get('trsvcid', '?')}"


def tls_fields(
    params: Mapping[str, str],
    transport: str,
    entry: Mapping[str, str] | None = None,
    *,
    tls: bool = False,
    tls_key: str | None = None,
    keyring: str | None = None,
) -> dict[str, object]:
    """ConnectRequest's ``tls``, ``tls_key`` and ``keyring``: the controller's ``params``
    over the [Global] keywords, TLS forced by ``entry`` (InvalidOption when it cannot be)."""
    explicit = params.get("tls")
    wanted = explicit == "true" if explicit is not None else tls
    if entry is not None and entry_requires_tls(entry):
        if explicit == "false":
            raise InvalidOption(
                "tls", "false", f"the log page entry of {_where(entry)} requires TLS: not connected"
            )
        wanted = True
    if not wanted or transport != "tcp":
        return {"tls": False, "tls_key": None, "keyring": None}
    return {
        "tls": True,
        "tls_key": params.get("tls-key") or tls_key,
        "keyring": params.get("keyring") or keyring,
    }


def userspace_refusal(params: Mapping[str, str]) -> str | None:
    """Why the userspace discovery host cannot reach a DC with these parameters, or None."""
    return USERSPACE_REFUSAL if params.get("tls") == "true" else None


def referral_params(entry: Mapping[str, str]) -> dict[str, str]:
    """A referred DC's parameters from its referral entry: ``tls`` when TREQ/TSAS demand it
    (InvalidOption, naming it, when the channel is not TLS 1.3)."""
    return {"tls": "true"} if entry_requires_tls(entry) else {}
