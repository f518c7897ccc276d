"""DH-HMAC-CHAP end to end on the real kernel (VM, 6.12 only: 6.1 has no NVMe in-band auth).

nvmet.py builds a target whose hosts carry per-host keys from an nvmet.conf; the kernel host
connects through our LibnvmeKernel, stacd's connector (secrets from stacd.conf controller lines)
and stafd's kernel backend. The target proves the host's key (a missing or wrong one is
refused), the host proves the controller's key when given dhchap-ctrl-secret (a wrong one is
refused by the host). Every log record and every process's arguments are searched for the
secrets.

Run: ``make test-kernel KERNEL=6.12`` or
``nvmet-harness/vm/runner.py --kernel 6.12 -- .venv/bin/python -m pytest -q tests/kernel``.
"""

from __future__ import annotations

import errno
import logging
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from test_nvmet_kernel import nvmet, ok
from trio_util import AsyncValue

from stas.actors.connector import Connector
from stas.actors.dc_backend import UserspaceBackend
from stas.actors.dc_kernel import KernelBackend, UeventHub
from stas.actors.ioc import IocSettings
from stas.config import load_sys_config, parse_service_config
from stas.kernel.api import ConnectRequest, KernelError
from stas.kernel.libnvme_kernel import LibnvmeKernel
from stas.messages import StacdSnapshot, Tid
from stas.nvme import auth
from stas.nvme import commands as cmd
from stas.nvme.auth_exchange import AuthenticationFailed
from stas.nvme.commands import ConnectData, Cqe, Sqe
from stas.nvme.connection import Completion, HostConnection
from stas.nvme.errors import NvmeStatusError
from stas.nvme.host_ops import HostIdentity, SessionOptions
from stas.nvme.session import DiscoverySession
from tests.helpers.entries import WK
from tests.helpers.kernel import needs_kernel
from tests.helpers.secrets import all_cmdlines, dhchap_key

pytestmark = needs_kernel((6, 12), "NVMe in-band auth")


HOST_UUID = "5e6f7a8b-0000-4000-8000-00000000a0f1"
HOST = f"nqn.2014-08.org.nvmexpress:uuid:{HOST_UUID}"  # key + ctrl key, sha384, ffdhe2048
PLAIN_UUID = "5e6f7a8b-0000-4000-8000-00000000a0f2"
PLAIN = f"nqn.2014-08.org.nvmexpress:uuid:{PLAIN_UUID}"  # host key only, kernel defaults
HOST_KEY = dhchap_key(bytes(range(48)), "02")
CTRL_KEY = dhchap_key(b"controller-secret-32-bytes-long!")
PLAIN_KEY = dhchap_key(bytes(range(100, 132)))
WRONG_KEY = dhchap_key(b"w" * 32)
SECRETS = (HOST_KEY, CTRL_KEY, PLAIN_KEY, WRONG_KEY)
NVMET = Path("/sys/kernel/config/nvmet")


def conf_text() -> str:
    host = {"nqn": HOST, "key": HOST_KEY, "ctrl_key": CTRL_KEY}
    host |= {"hash": "sha384", "dhgroup": "ffdhe2048"}
    plain = {"nqn": PLAIN, "key": PLAIN_KEY}
    return repr(
        {
            "ports": [{"id": 1, "trtype": "tcp", "traddr": "::1", "trsvcid": 8009}],
            "subsystems": [
                {"subsysnqn": "vault", "port": 1, "namespaces": [1], "allowed_hosts": [host]},
                {"subsysnqn": "safe", "port": 1, "namespaces": [1], "allowed_hosts": [host]},
                {"subsysnqn": "locker", "port": 1, "namespaces": [1], "allowed_hosts": [plain]},
                {"subsysnqn": "closet", "port": 1, "namespaces": [], "allowed_hosts": [host]},
            ],
        }
    )


@pytest.fixture
def auth_target(clean_kernel: None, tmp_path: Path) -> str:
    """The DH-HMAC-CHAP target built by nvmet.py from an nvmet.conf; what `create` printed."""
    conf = tmp_path / "nvmet.conf"
    conf.write_text(conf_text())
    return ok(nvmet("create", "-f", str(conf)))


def req(nqn: str, hostnqn: str = HOST, hostid: str = HOST_UUID, **kw: object) -> ConnectRequest:
    return ConnectRequest(
        transport="tcp",
        traddr="::1",
        trsvcid="8009",
        subsysnqn=nqn,
        hostnqn=hostnqn,
        hostid=hostid,
        **kw,  # type: ignore[arg-type]
    )


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a DH-HMAC-CHAP secret appears in {where}"
        assert secret.split(":")[2] not in text, f"a secret's base64 appears in {where}"


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    assert_no_secret(caplog.text, "the captured logs")


# --- the target -------------------------------------------------------------------------------


def test_nvmet_builds_dhchap_hosts_from_the_conf(auth_target: str) -> None:
    host = NVMET / "hosts" / HOST
    attrs = {a: (host / a).read_text().strip() for a in ("dhchap_hash", "dhchap_dhgroup")}
    assert attrs == {"dhchap_hash": "hmac(sha384)", "dhchap_dhgroup": "ffdhe2048"}
    assert (host / "dhchap_key").read_text().strip() == HOST_KEY
    assert (host / "dhchap_ctrl_key").read_text().strip() == CTRL_KEY
    assert (NVMET / "hosts" / PLAIN / "dhchap_key").read_text().strip() == PLAIN_KEY
    for nqn, allowed in (("vault", HOST), ("safe", HOST), ("locker", PLAIN), ("closet", HOST)):
        sub = NVMET / "subsystems" / nqn
        assert (sub / "attr_allow_any_host").read_text().strip() == "0"
        assert [p.name for p in (sub / "allowed_hosts").iterdir()] == [allowed]
    assert_no_secret(auth_target, "nvmet.py create's output")
    assert "dhchap_ctrl_key" in auth_target


# --- the kernel host through LibnvmeKernel -------------------------------------------------------


@pytest.mark.usefixtures("auth_target")
async def test_unidirectional_and_bidirectional_auth_connect(
    captured: pytest.LogCaptureFixture,
) -> None:
    kernel = LibnvmeKernel()
    uni = await kernel.connect(req("locker", PLAIN, PLAIN_UUID, dhchap_secret=PLAIN_KEY))
    bidi = await kernel.connect(req("vault", dhchap_secret=HOST_KEY, dhchap_ctrl_secret=CTRL_KEY))
    for ctrl in (uni, bidi):
        assert ctrl.state == "live" and ctrl.is_io_controller
    sysfs = Path("/sys/class/nvme")
    assert (sysfs / uni.device / "dhchap_secret").read_text().strip() == PLAIN_KEY
    assert (sysfs / bidi.device / "dhchap_ctrl_secret").read_text().strip() == CTRL_KEY
    assert_no_secret(all_cmdlines(), "a process's arguments")
    for ctrl in (uni, bidi):
        await kernel.disconnect(ctrl.device)


@pytest.mark.usefixtures("auth_target")
@pytest.mark.parametrize(
    ("case", "kw", "code", "hint"),
    [
        (
            "wrong host key",
            {"dhchap_secret": WRONG_KEY},
            errno.EKEYREJECTED,
            "authentication failed",
        ),
        (
            "wrong controller key",
            {"dhchap_secret": HOST_KEY, "dhchap_ctrl_secret": WRONG_KEY},
            errno.EKEYREJECTED,
            "authentication failed",
        ),
        ("no key", {}, errno.ENOKEY, "requires DH-HMAC-CHAP"),
    ],
)
async def test_a_wrong_or_missing_secret_fails_cleanly_naming_the_controller(
    captured: pytest.LogCaptureFixture, case: str, kw: dict[str, str], code: int, hint: str
) -> None:
    kernel = LibnvmeKernel()
    with pytest.raises(KernelError) as info:
        await kernel.connect(req("vault", **kw))
    message = str(info.value)
    assert message.startswith("connect vault at tcp ::1:8009: "), message
    assert_no_secret(message, "the error message")
    assert not [c for c in await kernel.list_controllers() if c.subsysnqn == "vault"]
    if case == "wrong host key" and info.value.errno == errno.EIO:
        # nvmet answers a wrong R1 with Failure1 and then kills the controller: under load
        # the host can see the socket close before it reads Failure1 (seen on 6.12).
        pytest.xfail(f"kernel race: the target closed before its Failure1 was read: {message}")
    assert info.value.errno == code, (case, message)
    assert hint in message


# --- stacd's connector: secrets from stacd.conf --------------------------------------------------


def stacd_conf(*controllers: str) -> str:
    return "[Controllers]\n" + "".join(f"controller = {c}\n" for c in controllers)


def ctrl_line(nqn: str, **secrets: str) -> str:
    line = f"transport=tcp;traddr=::1;trsvcid=8009;nqn={nqn}"
    return line + "".join(f";{k.replace('_', '-')}={v}" for k, v in secrets.items())


@pytest.mark.usefixtures("auth_target")
async def test_stacd_connects_with_secrets_from_its_conf_and_retries_a_wrong_one(
    captured: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    text = stacd_conf(
        ctrl_line("vault", dhchap_secret=HOST_KEY, dhchap_ctrl_secret=CTRL_KEY),  # bidirectional
        ctrl_line("safe"),  # unidirectional, with sys.conf's host key
        ctrl_line("closet", dhchap_secret=WRONG_KEY),  # per-controller wins: wrong, refused
    )
    config, warnings = parse_service_config(text, "stacd", source="stacd.conf")
    assert not warnings
    assert_no_secret(repr(config), "the parsed config's repr")
    sys_conf = tmp_path / "sys.conf"
    sys_conf.write_text(f"[Host]\nnqn={HOST}\nid={HOST_UUID}\nkey={HOST_KEY}\n")
    sysconf = load_sys_config(sys_conf)
    assert sysconf.hostkey == HOST_KEY and not sysconf.problems
    kernel = LibnvmeKernel()
    kernel.host_key = sysconf.hostkey  # as stacd does at start and on reload
    published = AsyncValue(StacdSnapshot())
    connector = Connector(
        config=config,
        host_nqn=sysconf.hostnqn,
        hostid=sysconf.hostid,
        kernel=kernel,
        published=published,
        settings=IocSettings(fast_retry=0.2, backoff_initial=0.2, jitter=0),
    )

    def by_nqn() -> dict[str, object]:
        return {s.tid.subsysnqn: s for s in published.value.iocs}

    send, receive = trio.open_memory_channel(100)
    async with trio.open_nursery() as nursery:
        await nursery.start(connector.run, receive, send)
        with trio.fail_after(60):  # real kernel connects; the refused one is tried again
            while not (
                all(getattr(by_nqn().get(n), "connected", False) for n in ("vault", "safe"))
                and getattr(by_nqn().get("closet"), "connect_attempts", 0) >= 2
            ):
                await published.wait_transition()
        assert_no_secret(all_cmdlines(), "a process's arguments")
        nursery.cancel_scope.cancel()
    closet = by_nqn()["closet"]
    assert not closet.connected and closet.state in ("backoff", "connecting")  # type: ignore[attr-defined]
    assert closet.last_error.startswith("connect closet at tcp ::1:8009: ")  # type: ignore[attr-defined]
    failures = [r.getMessage() for r in captured.records if "connect failed" in r.getMessage()]
    assert failures and all("closet" in m for m in failures)  # each one names the controller
    # The first refusal is EKEYREJECTED with our hint, unless nvmet closed the socket before
    # the host read its Failure1 (EIO: the kernel race the test above marks xfail, seen on
    # 6.12 under load). A quick retry may meet nvmet still tearing down the failed controller
    # (EIO again, or a slow answer): the retry is proven by connect_attempts.
    first = failures[0]
    race = "Input/output error" in first or "failed to write to nvme-fabrics device" in first
    assert "authentication failed" in first or race, first
    live = {c.subsysnqn: c for c in await kernel.list_controllers() if c.is_io_controller}
    assert set(live) == {"vault", "safe"}
    sysfs = Path("/sys/class/nvme")
    assert (sysfs / live["vault"].device / "dhchap_ctrl_secret").read_text().strip() == CTRL_KEY
    assert (sysfs / live["safe"].device / "dhchap_secret").read_text().strip() == HOST_KEY
    assert (sysfs / live["safe"].device / "dhchap_ctrl_secret").read_text().strip() == "none"


# --- stafd's kernel backend: the discovery controller's secret -----------------------------------


@pytest.mark.usefixtures("auth_target")
async def test_stafd_kernel_backend_passes_the_dc_secret(
    captured: pytest.LogCaptureFixture,
) -> None:
    """nvmet's discovery controller does not authenticate, but the host must still carry the
    configured secret (a target that does authenticate DCs would check it)."""
    kernel = LibnvmeKernel()
    identity = HostIdentity(hostnqn=HOST, hostid=uuid.UUID(HOST_UUID).bytes)
    backend = KernelBackend(kernel, identity, UeventHub())
    tid = Tid("tcp", "::1", "8009", WK, "", "", HOST)
    dc = await kernel.connect(backend.request(tid, {"dhchap-secret": HOST_KEY}))
    assert dc.is_discovery_controller and dc.state == "live"
    assert (Path("/sys/class/nvme") / dc.device / "dhchap_secret").read_text().strip() == HOST_KEY
    await kernel.disconnect(dc.device)


# --- our userspace host's DH-HMAC-CHAP (stas.nvme.auth) against nvmet ---------------------------


class RawAdminQueue:
    """A blocking NVMe/TCP admin queue on our sans-IO HostConnection (no session.py)."""

    def __init__(self) -> None:
        self.sock = socket.create_connection(("::1", 8009), timeout=30)
        self.conn = HostConnection()
        self.sock.sendall(self.conn.start())
        while not self.conn.established:
            self.conn.receive(self.sock.recv(65536))

    def command(self, sqe: Sqe, *, data: bytes = b"", read_len: int = 0) -> Completion:
        cid, wire = self.conn.send_command(sqe.encode(), data=data, read_len=read_len)
        self.sock.sendall(wire)
        while True:
            chunk = self.sock.recv(65536)
            assert chunk, "nvmet closed the connection"
            for event in self.conn.receive(chunk):
                if isinstance(event, Completion) and event.cid == cid:
                    return event

    def connect(self, subnqn: str) -> Cqe:
        data = ConnectData(uuid.UUID(HOST_UUID).bytes, 0xFFFF, subnqn, HOST).encode()
        return Cqe.decode(self.command(cmd.connect(kato_ms=30_000), data=data).cqe)

    def auth_send(self, payload: bytes) -> Cqe:
        sqe = Sqe(
            opcode=cmd.AdminOpcode.FABRICS,
            flags=cmd.PSDT_SGL,
            nsid=cmd.FabricsType.AUTH_SEND,
            cdw10=auth.auth_cdw10(),
            cdw11=len(payload),
        )
        return Cqe.decode(self.command(sqe, data=payload).cqe)

    def auth_receive(self, size: int = 1024) -> bytes:
        sqe = Sqe(
            opcode=cmd.AdminOpcode.FABRICS,
            flags=cmd.PSDT_SGL,
            nsid=cmd.FabricsType.AUTH_RECV,
            cdw10=auth.auth_cdw10(),
            cdw11=size,
        )
        done = self.command(sqe, read_len=size)
        assert Cqe.decode(done.cqe).ok
        return done.data

    def close(self) -> None:
        self.sock.close()


def userspace_exchange(q: RawAdminQueue, host_key: str, ctrl_key: str | None) -> None:
    host = auth.DhchapHost(
        hostnqn=HOST,
        subnqn="vault",
        host_secret=auth.DhchapSecret.parse(host_key),
        ctrl_secret=auth.DhchapSecret.parse(ctrl_key) if ctrl_key else None,
        tid=7,
    )
    assert q.auth_send(host.negotiate()).ok
    assert q.auth_send(host.reply_to(q.auth_receive())).ok
    if success2 := host.finish(q.auth_receive()):
        assert q.auth_send(success2).ok


@pytest.mark.usefixtures("auth_target")
def test_userspace_host_authenticates_to_nvmet_both_ways() -> None:
    """SHA-384 and ffdhe2048 as the target's host entry demands; the controller's R2 too."""
    q = RawAdminQueue()
    try:
        cqe = q.connect("vault")
        assert cqe.ok and auth.auth_required(cqe.dw0)
        # Fabrics commands are allowed before authentication: enable the controller (CC.EN,
        # IOSQES 6, IOCQES 4) so that only the missing authentication can refuse Identify.
        assert Cqe.decode(q.command(cmd.property_set(0x14, 0x460001)).cqe).ok
        before = Cqe.decode(q.command(cmd.identify_controller(), read_len=4096).cqe)
        assert before.status & 0x7FF == 0x191  # Authentication Required
        userspace_exchange(q, HOST_KEY, CTRL_KEY)
        after = q.command(cmd.identify_controller(), read_len=4096)
        assert Cqe.decode(after.cqe).ok  # the admin queue is authenticated now
        assert after.data[24:64].decode().strip(" \0")  # a model number came back
    finally:
        q.close()


@pytest.mark.usefixtures("auth_target")
@pytest.mark.parametrize(
    ("host_key", "ctrl_key", "why"),
    [
        (WRONG_KEY, None, "controller refused: authentication failed"),
        (HOST_KEY, WRONG_KEY, "controller's DH-HMAC-CHAP response is wrong"),
    ],
)
def test_userspace_host_with_a_wrong_key_fails_cleanly(
    host_key: str, ctrl_key: str | None, why: str
) -> None:
    q = RawAdminQueue()
    try:
        assert q.connect("vault").ok
        with pytest.raises(auth.AuthError, match=why) as info:
            userspace_exchange(q, host_key, ctrl_key)
        assert_no_secret(str(info.value), "the error")
    finally:
        q.close()


# --- stafd's userspace host (DiscoverySession) authenticating to nvmet ---------------------------
# nvmet's discovery controller never asks for DH-HMAC-CHAP (nvmet_setup_auth skips the discovery
# subsystem), so the userspace host is pointed at the I/O subsystems that do: the session comes
# up only if the exchange succeeded (Identify is refused with Authentication Required before).

IDENTITY = HostIdentity(hostnqn=HOST, hostid=uuid.UUID(HOST_UUID).bytes)


@pytest.mark.usefixtures("auth_target")
async def test_userspace_session_authenticates_both_ways(
    captured: pytest.LogCaptureFixture,
) -> None:
    options = SessionOptions(kato_ms=0, dhchap_secret=HOST_KEY, dhchap_ctrl_secret=CTRL_KEY)
    assert_no_secret(repr(options), "the session options' repr")
    async with DiscoverySession.open(
        "::1", 8009, subsysnqn="vault", host=IDENTITY, options=options
    ) as session:
        assert session.identify.subnqn == "vault" and session.identify.mn
        assert session.cntlid == session.identify.cntlid
        # nvmet's I/O controller has no discovery log: refused with a status, not with
        # Authentication Required (0x191), so the queue is authenticated.
        with pytest.raises(NvmeStatusError) as info:
            await session.get_log_page()
        assert info.value.status & 0x7FF != 0x191


@pytest.mark.usefixtures("auth_target")
async def test_stafd_userspace_backend_uses_the_dc_secret(
    captured: pytest.LogCaptureFixture,
) -> None:
    """The per-DC dhchap-secret (or sys.conf's key, as connection_params passes it)."""
    plain = HostIdentity(hostnqn=PLAIN, hostid=uuid.UUID(PLAIN_UUID).bytes)
    backend = UserspaceBackend(plain, SessionOptions(kato_ms=0))
    tid = Tid("tcp", "::1", "8009", "locker", "", "", PLAIN)
    async with backend.connect(tid, {"dhchap-secret": PLAIN_KEY}, persistent=False) as conn:
        assert conn.alive and conn.cntrltype == "io"


@pytest.mark.usefixtures("auth_target")
@pytest.mark.parametrize(
    ("secrets", "why"),
    [
        ((WRONG_KEY, None), "DH-HMAC-CHAP authentication failed: "),
        ((HOST_KEY, WRONG_KEY), "authentication failed: the controller's DH-HMAC-CHAP response"),
        ((None, None), "the DC requires DH-HMAC-CHAP; set dhchap-secret= for it or key= in"),
    ],
)
async def test_userspace_session_with_a_wrong_or_missing_key_fails_cleanly(
    captured: pytest.LogCaptureFixture, secrets: tuple[str | None, str | None], why: str
) -> None:
    options = SessionOptions(kato_ms=0, dhchap_secret=secrets[0], dhchap_ctrl_secret=secrets[1])
    with pytest.raises(AuthenticationFailed) as info, trio.fail_after(30):
        async with DiscoverySession.open(
            "::1", 8009, subsysnqn="vault", host=IDENTITY, options=options
        ):
            pytest.fail("the session came up")
    message = str(info.value)
    assert message.startswith("[::1]:8009: ") and why in message, message
    assert_no_secret(message, "the error message")
