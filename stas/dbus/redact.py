"""Hide DH-CHAP and TLS secrets from unprivileged D-Bus callers.

Upstream hands the host key and per-controller secrets to any local user (reference §3.5,
weakness 1). We keep the data readable but replace secret values for non-root callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

REDACTED = "<redacted>"
SECRET_KEYS = frozenset({"dhchap-secret", "dhchap-ctrl-secret", "hostkey"})
SECRET_PREFIXES = ("DHHC-1:", "NVMeTLSkey-1:")


def _looks_secret(key: str, value: Any) -> bool:
    if key.lower() in SECRET_KEYS:
        return value not in ("", None)  # "not configured" is no secret
    if not isinstance(value, str):
        return False
    lowered = key.lower()
    if ("secret" in lowered or "key" in lowered) and value.startswith(SECRET_PREFIXES):
        return True
    # A secret embedded in a stringified structure (e.g. "connect operation") still leaks.
    return any(marker in value for marker in SECRET_PREFIXES)


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: REDACTED if _looks_secret(str(k), v) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v) for v in value)
    return value


def redact_secrets(d: Mapping[str, Any], *, caller_is_root: bool) -> dict[str, Any]:
    """A copy of ``d`` with secret values replaced by ``<redacted>`` unless root is asking.

    Secret means: the keys dhchap-secret, dhchap-ctrl-secret and hostkey (any non-empty
    value), any key containing "secret" or "key" whose value starts with DHHC-1: or
    NVMeTLSkey-1:, and any string value embedding such a key. Nested dicts and lists are
    walked, so a parsed process_info or log-page listing can be passed as is.
    """
    if caller_is_root:
        return dict(d)
    return cast("dict[str, Any]", _redact(d))  # a Mapping comes back as a dict
