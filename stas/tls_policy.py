"""When a connection uses NVMe/TCP TLS (TP 8011), pure: configuration plus what the log page
entry demands.

A discovery log page entry's TREQ bits 1:0 say whether a secure channel is required (1),
not required (2) or not specified (0); for TCP its TSAS byte 0 (SECTYPE) names the channel:
0 none, 1 TLS 1.2 (obsolete), 2 TLS 1.3. The DLPE dicts carry them as libnvme spells them:
``treq`` ``"required"``/``"not required"``/``"not specified"`` (or the number for other
values) and, for TCP entries with a security type, ``tsas`` ``"tls"``/``"tls1.3"``/
``"reserved"`` (libnvme's ``tsas.sectype``, flattened so the dict stays ``a{ss}``).

Both daemons hold each entry typed and ask ``requires_tls`` of the typed fields, one rule:
stafd's ``LogPageEntry`` (TREQ and TSAS as numbers; ``referral_params``) and stacd's ``Dlpe``
(TREQ as a number, SECTYPE as the dict spells it, parsed once where the dict enters stacd;
``tls_fields``). A DLPE dict handed in as such is parsed into a ``Dlpe`` first.

Rules: an entry that requires a secure channel is connected with TLS or not at all (an
explicit ``tls=false`` for it, or a channel other than TLS 1.3, refuses it with the reason);
otherwise TLS is used when the controller's ``tls`` (or [Global]'s) says so. TLS exists only
for tcp: [Global] ``tls=true`` leaves rdma/fc/loop controllers alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from stas.kernel.options import InvalidOption

if TYPE_CHECKING:  # the codec (stafd) and stacd's messages are loaded by whoever holds an entry
    from stas.messages_stacd import Dlpe
    from stas.nvme.logpage import LogPageEntry

USERSPACE_REFUSAL = (
    "TLS is not supported by the userspace discovery host (Python's ssl module has no TLS-PSK): "
    "use dc-backend=kernel for this controller"
)


def requires_tls(transport: str, channel: int, sectype: str, where: str) -> bool:
    """Whether an entry (``transport``, TREQ bits 1:0 ``channel``, TSAS ``sectype`` in
    libnvme's spelling) may only be reached over TLS.

    Raises InvalidOption naming ``where`` when the required channel is not TLS 1.3."""
    if transport != "tcp" or channel != 1:
        return False
    if sectype not in ("none", "tls1.3"):  # none + required: TCP's only channel is TLS 1.3
        raise InvalidOption(
            "tsas", sectype, f"{where} requires a secure channel other than TLS 1.3, not supported"
        )
    return True


def dlpe_requires_tls(e: Dlpe) -> bool:
    """``requires_tls`` for stacd's typed entry."""
    return requires_tls(e.transport, e.treq & 0x3, e.sectype, _where(e))


def _typed(entry: Mapping[str, str]) -> Dlpe | None:
    from stas.messages_stacd import Dlpe

    return entry if type(entry) is Dlpe else Dlpe.parse(entry)


def _where(e: Dlpe) -> str:
    return f"{e.subsysnqn} at {e.traddr}:{e.trsvcid}"  # as log_entry_requires_tls names it


def log_entry_requires_tls(e: LogPageEntry) -> bool:
    """``requires_tls`` for a decoded entry (stafd's view), without the DLPE dict round trip:
    the same answer as ``dlpe_requires_tls(Dlpe.parse(e.to_dlpe()))``."""
    from stas.nvme.logpage import TCP_SECTYPES, TRTYPE_TCP

    if e.trtype != TRTYPE_TCP:
        return False  # TLS is tcp's; another transport's TSAS is no security type
    return requires_tls(
        "tcp",
        e.treq & 0x3,  # what the dict's TREQ word or number comes back to
        TCP_SECTYPES.get(e.tsas[0], "reserved"),
        f"{e.subnqn.strip()} at {e.traddr.strip()}:{e.trsvcid.strip()}",
    )


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
    over the [Global] keywords, TLS forced by ``entry`` (InvalidOption when it cannot be).
    ``entry`` is stacd's ``Dlpe`` (a mapping too); a plain DLPE dict is typed first."""
    explicit = params.get("tls")
    wanted = explicit == "true" if explicit is not None else tls
    e = None if entry is None else _typed(entry)
    if e is not None and dlpe_requires_tls(e):
        if explicit == "false":
            raise InvalidOption(
                "tls", "false", f"the log page entry of {_where(e)} requires TLS: not connected"
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


def referral_params(entry: LogPageEntry) -> dict[str, str]:
    """A referred DC's parameters from its referral entry: ``tls`` when TREQ/TSAS demand it
    (InvalidOption, naming it, when the channel is not TLS 1.3)."""
    return {"tls": "true"} if log_entry_requires_tls(entry) else {}
