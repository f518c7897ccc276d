"""The DH-HMAC-CHAP exchange wired after the admin Connect (stas.nvme.auth_exchange).

The simulator has no DH-HMAC-CHAP responder, so the controller side here is the spec-built
``Controller`` of test_auth.py behind a fake ``command`` coroutine that checks the AUTH_Send /
AUTH_Receive fields the way nvmet does. The same exchange against the kernel's nvmet is in
tests/kernel/test_auth_kernel.py.
"""

from __future__ import annotations

import uuid

import attrs
import pytest

from stas.actors.dc_backend import UserspaceBackend
from stas.nvme import auth
from stas.nvme import commands as cmd
from stas.nvme.auth import DhGroup, HashId, MessageId
from stas.nvme.auth_exchange import AUTH_RECV_LEN, AuthenticationFailed
from stas.nvme.errors import ConnectionLost, DiscoveryError, NvmeStatusError
from stas.nvme.host_ops import HostIdentity, SessionOptions, connect_admin
from tests.nvme.test_auth import CTRL_KEY, HOST_KEY, HOSTNQN, OTHER, SUBNQN, Controller

WHERE = "[::1]:8009"
HOST_TEXT, CTRL_TEXT, OTHER_TEXT = (k.encode() for k in (HOST_KEY, CTRL_KEY, OTHER))
SECRETS = (HOST_TEXT, CTRL_TEXT, OTHER_TEXT)


@attrs.define
class FakeDc:
    """A DC's admin queue as ``command`` sees it: Connect, then AUTH_Send/AUTH_Receive."""

    ctrl: Controller
    require_auth: bool = True
    sent: list[str] = attrs.Factory(list)  # names of the commands, in order
    messages: list[int] = attrs.Factory(list)  # AUTH_Send message ids, in order
    pending: bytes = b""
    hang_up_after_reply: bool = False  # nvmet may close before its Failure1 is read

    async def __call__(
        self, sqe: cmd.Sqe, *, data: bytes = b"", read_len: int = 0, name: str
    ) -> tuple[cmd.Cqe, bytes]:
        self.sent.append(name)
        fctype = sqe.nsid & 0xFF
        if fctype == cmd.FabricsType.CONNECT:
            result = cmd.ConnectResult(5, authreq_atr=self.require_auth)
            return cmd.Cqe(dw0=result.encode()), b""
        assert sqe.opcode == cmd.AdminOpcode.FABRICS and sqe.flags == cmd.PSDT_SGL
        assert sqe.cdw10 == auth.auth_cdw10()
        if fctype == cmd.FabricsType.AUTH_SEND:
            assert sqe.cdw11 == len(data) and data
            self.messages.append(data[1])
            if data[1] == MessageId.NEGOTIATE:
                self.pending = self.ctrl.challenge(data)
            elif data[1] == MessageId.REPLY:
                self.pending = self.ctrl.success1(data)
            return cmd.Cqe(), b""
        assert fctype == cmd.FabricsType.AUTH_RECV
        assert sqe.cdw11 == read_len == AUTH_RECV_LEN
        if self.hang_up_after_reply and self.messages[-1] == MessageId.REPLY:
            raise ConnectionLost(f"connection to {WHERE} lost: closed by the peer")
        if not self.pending:
            raise NvmeStatusError(name, 0x2, "Invalid Field in Command")
        out, self.pending = self.pending, b""
        return cmd.Cqe(), out


def connect_data() -> cmd.ConnectData:
    return cmd.ConnectData(uuid.uuid4().bytes, 0xFFFF, SUBNQN, HOSTNQN)


async def connect(dc: FakeDc, secret: str | None, ctrl_secret: str | None = None) -> int:
    return await connect_admin(
        dc,
        connect_data(),
        kato_ms=30000,
        where=WHERE,
        dhchap_secret=secret,
        dhchap_ctrl_secret=ctrl_secret,
    )


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text and secret.split(":")[2] not in text


@pytest.mark.parametrize("g", [DhGroup.NULL, DhGroup.FFDHE2048])
async def test_bidirectional_auth_after_connect_ends_with_success2(g: DhGroup) -> None:
    dc = FakeDc(Controller(HOST_KEY, CTRL_KEY, HashId.SHA384, g))
    assert await connect(dc, HOST_TEXT, CTRL_TEXT) == 5
    assert dc.messages == [MessageId.NEGOTIATE, MessageId.REPLY, MessageId.SUCCESS2]
    assert [n.split(" ")[0] for n in dc.sent] == ["Connect"] + ["AUTH_Send", "AUTH_Receive"] * 2 + [
        "AUTH_Send"
    ]


async def test_unidirectional_auth_sends_no_success2() -> None:
    dc = FakeDc(Controller(HOST_KEY, None, HashId.SHA256, DhGroup.NULL))
    assert await connect(dc, HOST_TEXT) == 5
    assert dc.messages == [MessageId.NEGOTIATE, MessageId.REPLY]


async def test_no_auth_exchange_when_the_dc_does_not_ask() -> None:
    dc = FakeDc(Controller(HOST_KEY, None, HashId.SHA256, DhGroup.NULL), require_auth=False)
    assert await connect(dc, HOST_TEXT) == 5
    assert dc.sent == ["Connect"]


async def test_wrong_host_key_fails_naming_the_dc_without_a_failure2() -> None:
    dc = FakeDc(Controller(HOST_KEY, None, HashId.SHA256, DhGroup.NULL))
    with pytest.raises(AuthenticationFailed) as info:
        await connect(dc, OTHER_TEXT)
    message = str(info.value)
    assert message.startswith(f"{WHERE}: DH-HMAC-CHAP authentication failed: controller refused")
    assert_no_secret(message)
    assert dc.messages == [MessageId.NEGOTIATE, MessageId.REPLY]  # Failure1 ended it


async def test_wrong_controller_key_sends_failure2_and_fails() -> None:
    dc = FakeDc(Controller(HOST_KEY, CTRL_KEY, HashId.SHA256, DhGroup.NULL))
    with pytest.raises(AuthenticationFailed, match="controller's DH-HMAC-CHAP response is wrong"):
        await connect(dc, HOST_TEXT, OTHER_TEXT)
    assert dc.messages == [MessageId.NEGOTIATE, MessageId.REPLY, MessageId.FAILURE2]


async def test_required_auth_without_a_secret_says_how_to_set_one() -> None:
    dc = FakeDc(Controller(HOST_KEY, None, HashId.SHA256, DhGroup.NULL))
    with pytest.raises(AuthenticationFailed) as info:
        await connect(dc, None)
    assert str(info.value) == (
        f"{WHERE}: the DC requires DH-HMAC-CHAP; set dhchap-secret= for it or key= in sys.conf"
    )
    assert dc.sent == ["Connect"]
    assert isinstance(info.value, DiscoveryError)  # stafd reports it like any failed connect


async def test_a_malformed_secret_is_named_but_not_echoed() -> None:
    dc = FakeDc(Controller(HOST_KEY, None, HashId.SHA256, DhGroup.NULL))
    bad = "DHHC-1:00:c2VjcmV0LXNlY3JldC1zZWNyZXQ=:"
    with pytest.raises(AuthenticationFailed, match="dhchap-secret") as info:
        await connect(dc, bad)
    assert "c2VjcmV0" not in str(info.value)
    assert dc.sent == ["Connect"]


def test_session_options_hide_the_secrets() -> None:
    opts = SessionOptions(dhchap_secret=HOST_TEXT, dhchap_ctrl_secret=CTRL_TEXT)
    assert_no_secret(repr(opts))


def test_userspace_backend_passes_the_dc_secrets() -> None:
    host = HostIdentity(hostnqn=HOSTNQN, hostid=uuid.uuid4().bytes)
    backend = UserspaceBackend(host)
    params = {"dhchap-secret": HOST_TEXT, "dhchap-ctrl-secret": CTRL_TEXT}
    opts = backend.options_for(params, persistent=True, where="dc")
    assert (opts.dhchap_secret, opts.dhchap_ctrl_secret) == (HOST_TEXT, CTRL_TEXT)
    none = backend.options_for({}, persistent=True, where="dc")
    assert (none.dhchap_secret, none.dhchap_ctrl_secret) == (None, None)


async def test_a_dc_hanging_up_mid_exchange_is_an_authentication_failure() -> None:
    dc = FakeDc(Controller(HOST_KEY, None, HashId.SHA256, DhGroup.NULL), hang_up_after_reply=True)
    with pytest.raises(AuthenticationFailed) as info:
        await connect(dc, OTHER_TEXT)
    assert str(info.value) == (
        f"{WHERE}: DH-HMAC-CHAP authentication failed: "
        f"connection to {WHERE} lost: closed by the peer"
    )
