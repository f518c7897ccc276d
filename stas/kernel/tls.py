"""Before a TLS connect: names and configured PSKs become the key serials the kernel takes.

``keyring=.nvme`` is looked up in /proc/keys; ``tls-key=NVMeTLSkey-1:...`` is derived for the
request's host and subsystem (stas.nvme.tls_psk, identity version 1, as ``nvme check-tls-key
--insert`` does) and put into that keyring, its serial replacing the key in the request. A
request without a key keeps ``tls`` alone: the kernel then looks the PSK up itself in the
keyring by host and subsystem NQN (which is what nvmet-harness and nvme-cli insert).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from stas.kernel import keyring as kr
from stas.kernel import options as opt
from stas.kernel.api import ConnectRequest
from stas.nvme.tls_psk import TlsKeyError, TlsPsk, derive_tls_psk, parse_interchange

Insert = Callable[[int, TlsPsk], int]


def resolve_tls(
    req: ConnectRequest,
    *,
    read_proc: Callable[[], str] | None = None,
    insert: Insert = kr.insert_psk,
) -> ConnectRequest:
    """``req`` with its keyring and TLS key as serials (KeyringError, naming the keyring or
    the identity, when that fails; never the key)."""
    if not req.tls or (req.tls_key is None and req.keyring is None):
        return req
    keyring: int | None = None
    if req.keyring is not None:
        keyring = kr.resolve_keyring(kr.parse_keyring_spec(req.keyring), read_proc)
    tls_key = req.tls_key
    if tls_key is not None and not opt.is_key_serial(tls_key):
        try:
            psk = derive_tls_psk(parse_interchange(tls_key), req.hostnqn, req.subsysnqn)
        except TlsKeyError as e:  # validated already; kept for a clear message all the same
            raise kr.KeyringError(0, f"tls_key: {e}") from None
        target = (
            keyring if keyring is not None else kr.resolve_keyring(kr.DEFAULT_KEYRING, read_proc)
        )
        tls_key = str(insert(target, psk))
    return attrs.evolve(
        req,
        tls_key=tls_key,
        keyring=None if keyring is None else str(keyring),
    )
