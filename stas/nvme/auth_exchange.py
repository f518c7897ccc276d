"""The DH-HMAC-CHAP exchange on an admin queue: ``stas.nvme.auth`` driven over a ``command``.

``auth.py`` knows the messages and the crypto but does no I/O; this module sends them as
AUTH_Send / AUTH_Receive Fabrics commands in the order NVMe Base 2.0 §8.13.5 gives, and turns
every way it can go wrong into one ``AuthenticationFailed`` that names the DC and never
carries a secret.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from stas.nvme import auth
from stas.nvme import commands as cmd
from stas.nvme.errors import DiscoveryError, NvmeStatusError, ProtocolError

Command = Callable[..., Awaitable[tuple[cmd.Cqe, bytes]]]

AUTH_RECV_LEN = 4096  # allocation length of AUTH_Receive: any DH-HMAC-CHAP message fits
AUTH_TID = 1  # one transaction per admin queue, so any fixed id will do
NO_SECRET_HINT = "set dhchap-secret= for it or key= in sys.conf"


class AuthenticationFailed(DiscoveryError):
    """The DC required DH-HMAC-CHAP and the exchange did not succeed (or could not start)."""


def auth_send_sqe(length: int) -> cmd.Sqe:
    return cmd.Sqe(
        opcode=cmd.AdminOpcode.FABRICS,
        flags=cmd.PSDT_SGL,
        nsid=cmd.FabricsType.AUTH_SEND,
        cdw10=auth.auth_cdw10(),
        cdw11=length,
    )


def auth_receive_sqe(length: int = AUTH_RECV_LEN) -> cmd.Sqe:
    return cmd.Sqe(
        opcode=cmd.AdminOpcode.FABRICS,
        flags=cmd.PSDT_SGL,
        nsid=cmd.FabricsType.AUTH_RECV,
        cdw10=auth.auth_cdw10(),
        cdw11=length,
    )


def _is_failure1(data: bytes) -> bool:
    """Whether the controller already ended the transaction (no Failure2 owed then)."""
    try:
        return isinstance(auth.decode_message(data), auth.Failure)
    except ProtocolError:
        return False


async def authenticate(
    command: Command,
    *,
    hostnqn: str,
    subnqn: str,
    secret: str | None,
    ctrl_secret: str | None,
    where: str,
) -> None:
    """Run one DH-HMAC-CHAP transaction; raise ``AuthenticationFailed`` if it fails."""
    if not secret:
        raise AuthenticationFailed(f"{where}: the DC requires DH-HMAC-CHAP; {NO_SECRET_HINT}")
    try:
        host = auth.DhchapHost(
            hostnqn=hostnqn,
            subnqn=subnqn,
            host_secret=auth.DhchapSecret.parse(secret, "dhchap-secret"),
            ctrl_secret=(
                auth.DhchapSecret.parse(ctrl_secret, "dhchap-ctrl-secret") if ctrl_secret else None
            ),
            tid=AUTH_TID,
        )
    except (auth.AuthError, ProtocolError, ValueError) as exc:
        raise AuthenticationFailed(f"{where}: DH-HMAC-CHAP: {exc}") from None

    async def send(payload: bytes, name: str) -> None:
        await command(auth_send_sqe(len(payload)), data=payload, name=f"AUTH_Send ({name})")

    async def receive(name: str) -> bytes:
        sqe = auth_receive_sqe()
        _, data = await command(sqe, read_len=AUTH_RECV_LEN, name=f"AUTH_Receive ({name})")
        return data

    data = b""
    try:
        await send(host.negotiate(), "Negotiate")
        data = await receive("Challenge")
        await send(host.reply_to(data), "Reply")
        data = await receive("Success1")
        success2 = host.finish(data)
        if success2 is not None:
            await send(success2, "Success2")
    except auth.AuthError as err:
        if not _is_failure1(data):  # the controller still waits: tell it we gave up
            with contextlib.suppress(DiscoveryError, NvmeStatusError, ProtocolError):
                await send(host.failure2(err), "Failure2")
        raise AuthenticationFailed(f"{where}: DH-HMAC-CHAP authentication failed: {err}") from None
    except (NvmeStatusError, DiscoveryError) as exc:
        # nvmet drops the connection right after a Failure1, sometimes before we read it.
        raise AuthenticationFailed(f"{where}: DH-HMAC-CHAP authentication failed: {exc}") from None
