"""NVMe/TCP TLS (TP 8011) end to end on the real kernel (VM, 6.12 only: 6.1 has no NVMe TLS).

nvmet.py builds a TLS-only port (addr_tsas tls1.3, TREQ required) and puts each allowed
host's PSK into the kernel's .nvme keyring (derived as ``nvme check-tls-key --insert``
does); tlshd (ktls-utils, Debian 13's binary with its own libraries: nvmet-harness/vm/tlshd.py)
does the handshakes of both sides. The kernel host then connects through LibnvmeKernel with
``tls`` (the kernel finds the PSK by host and subsystem NQN) or with our own ``tls_key``
(a configured PSK derived and inserted by stas.kernel.tls), and through stacd's connector
with ``tls=true`` from stacd.conf and with TLS forced by a log page entry's TSAS/TREQ. A
connect without TLS to the TLS-only port is refused. The configured PSK never appears in
logs or process arguments.

Run: ``nvmet-harness/vm/runner.py --kernel 6.12 --tlshd -- .venv/bin/python -m pytest -q
tests/kernel/test_tls_kernel.py`` (without ``--tlshd`` the tests start tlshd themselves).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from test_nvmet_kernel import nvmet, ok
from trio_util import AsyncValue

from stas.actors.connector import Connector
from stas.actors.dc_kernel import KernelBackend, UeventHub
from stas.actors.ioc import IocSettings
from stas.config import parse_service_config
from stas.kernel.api import ConnectRequest, KernelError
from stas.kernel.keyring import parse_proc_keys
from stas.kernel.libnvme_kernel import LibnvmeKernel
from stas.messages import DcLogPages, StacdSnapshot, Tid
from stas.nvme.host_ops import HostIdentity
from stas.nvme.tls_psk import ConfiguredPsk, format_interchange
from tests.helpers.entries import WK
from tests.helpers.kernel import needs_kernel
from tests.helpers.secrets import all_cmdlines

VM_DIR = Path(__file__).resolve().parents[2] / "nvmet-harness" / "vm"
sys.path.insert(0, str(VM_DIR))
import tlshd  # noqa: E402

pytestmark = needs_kernel((6, 12), "NVMe/TCP TLS")

HOST_UUID = "7a1c0000-0000-4000-8000-0000000071a1"
HOST = f"nqn.2014-08.org.nvmexpress:uuid:{HOST_UUID}"  # its PSK put in by nvmet.py
OWN_UUID = "7a1c0000-0000-4000-8000-0000000071a2"
OWN = f"nqn.2014-08.org.nvmexpress:uuid:{OWN_UUID}"  # its PSK put in by our connect
PSK = format_interchange(ConfiguredPsk(bytes(range(32)), 1))
OWN_PSK = format_interchange(ConfiguredPsk(bytes(range(100, 148)), 2))
SECRETS = (PSK, OWN_PSK)
SUBSYS = "nqn.2024-01.io.stas:sealed"
SUBSYS2 = "nqn.2024-01.io.stas:vault"  # no PSK from nvmet.py: stacd.conf's tls-key puts it in
ADDR = ("127.0.0.1", "4420")
SYSFS = Path("/sys/class/nvme")


def conf_text() -> str:
    return repr(
        {
            "ports": [
                {"id": 2, "trtype": "tcp", "traddr": ADDR[0], "trsvcid": int(ADDR[1]),
                 "tsas": "tls1.3"},
            ],
            "subsystems": [
                {"subsysnqn": SUBSYS, "port": 2, "namespaces": [1],
                 "allowed_hosts": [{"nqn": HOST, "psk": PSK}, {"nqn": OWN}]},
                {"subsysnqn": SUBSYS2, "port": 2, "namespaces": [2],
                 "allowed_hosts": [{"nqn": HOST}]},
            ],
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def tlshd_running() -> Iterator[None]:
    """tlshd as the runner started it (--tlshd), or started here for this module."""
    if os.environ.get("STAS_VM_TLSHD") == "1":
        yield
        return
    root = tlshd.root_dir()
    if reason := tlshd.missing_reason(root):
        pytest.skip(reason)
    conf = Path("/run/stas-tlshd.conf")
    conf.write_text(tlshd.config_text())
    with open("/run/stas-tlshd.log", "wb") as log:
        proc = subprocess.Popen(tlshd.tlshd_argv(root, conf), stdout=log, stderr=log)
    time.sleep(1)  # it links .nvme into its session keyring and joins the netlink family
    assert proc.poll() is None, Path("/run/stas-tlshd.log").read_text()
    yield
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


@pytest.fixture
def tls_target(clean_kernel: None, tlshd_running: None, tmp_path: Path) -> str:
    conf = tmp_path / "nvmet.conf"
    conf.write_text(conf_text())
    return ok(nvmet("create", "-f", str(conf)))


def req(hostnqn: str = HOST, hostid: str = HOST_UUID, **kw: object) -> ConnectRequest:
    return ConnectRequest(
        transport="tcp",
        traddr=ADDR[0],
        trsvcid=ADDR[1],
        subsysnqn=SUBSYS,
        hostnqn=hostnqn,
        hostid=hostid,
        **kw,  # type: ignore[arg-type]
    )


def psk_keys() -> dict[str, int]:
    text = Path("/proc/keys").read_text()
    return {k.description: k.serial for k in parse_proc_keys(text) if k.type == "psk"}


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a TLS PSK appears in {where}"
        assert secret.split(":")[2] not in text, f"a PSK's base64 appears in {where}"


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    assert_no_secret(caplog.text, "the captured logs")


def test_nvmet_builds_a_tls_only_port_and_puts_the_psk_in_the_keyring(tls_target: str) -> None:
    port = Path("/sys/kernel/config/nvmet/ports/2")
    assert (port / "addr_tsas").read_text().strip() == "tls1.3"
    assert (port / "addr_treq").read_text().strip().startswith("required")
    ids = [d for d in psk_keys() if d.startswith(f"NVMe1R01 {HOST} {SUBSYS} ")]
    assert len(ids) == 1, psk_keys()
    assert_no_secret(tls_target, "nvmet.py create's output")


@pytest.mark.usefixtures("tls_target")
async def test_io_controller_comes_up_over_tls_with_the_kernels_psk_lookup(
    captured: pytest.LogCaptureFixture,
) -> None:
    kernel = LibnvmeKernel()
    ctrl = await kernel.connect(req(tls=True))
    assert ctrl.state == "live" and ctrl.is_io_controller
    serial = next(s for d, s in psk_keys().items() if d.startswith(f"NVMe1R01 {HOST} "))
    assert int((SYSFS / ctrl.device / "tls_key").read_text().strip(), 16) == serial
    await kernel.disconnect(ctrl.device)


@pytest.mark.usefixtures("tls_target")
async def test_a_configured_psk_is_derived_and_inserted_by_the_connect(
    captured: pytest.LogCaptureFixture,
) -> None:
    assert not [d for d in psk_keys() if OWN in d]
    kernel = LibnvmeKernel()
    ctrl = await kernel.connect(req(OWN, OWN_UUID, tls=True, tls_key=OWN_PSK, keyring=".nvme"))
    assert ctrl.state == "live" and ctrl.is_io_controller
    ours = {d: s for d, s in psk_keys().items() if d.startswith(f"NVMe1R02 {OWN} {SUBSYS} ")}
    assert len(ours) == 1, psk_keys()
    assert int((SYSFS / ctrl.device / "tls_key").read_text().strip(), 16) == ours.popitem()[1]
    assert_no_secret(all_cmdlines(), "a process's arguments")
    await kernel.disconnect(ctrl.device)


@pytest.mark.usefixtures("tls_target")
async def test_a_connect_without_tls_to_the_tls_only_port_is_refused(
    captured: pytest.LogCaptureFixture,
) -> None:
    kernel = LibnvmeKernel()
    with pytest.raises(KernelError) as info:
        await kernel.connect(req())
    assert str(info.value).startswith(f"connect {SUBSYS} at tcp 127.0.0.1:4420: ")
    assert not [c for c in await kernel.list_controllers() if c.subsysnqn == SUBSYS]


# --- stacd's connector and stafd's kernel backend ----------------------------------------------


@pytest.mark.usefixtures("tls_target")
async def test_stacd_connects_over_tls_from_its_conf_and_when_a_log_page_demands_it(
    captured: pytest.LogCaptureFixture,
) -> None:
    """stacd.conf: ``tls=true;tls-key=...`` for one subsystem (its PSK put in by the
    connect); a log page entry (TREQ required, TSAS tls1.3) for the other, with no TLS in the
    conf for it (its PSK from nvmet.py)."""
    text = (
        "[Controllers]\ncontroller = transport=tcp;traddr=127.0.0.1;trsvcid=4420;"
        f"nqn={SUBSYS2};tls=true;tls-key={OWN_PSK}\n"
    )
    config, warnings = parse_service_config(text, "stacd", source="stacd.conf")
    assert not warnings
    kernel = LibnvmeKernel()
    published = AsyncValue(StacdSnapshot())
    connector = Connector(
        config=config, host_nqn=HOST, hostid=HOST_UUID, kernel=kernel, published=published,
        settings=IocSettings(fast_retry=0.2, backoff_initial=0.2, jitter=0),
    )  # fmt: skip
    dc = Tid("tcp", "::1", "8009", WK, "", "", HOST)
    entry = {
        "trtype": "tcp", "adrfam": "ipv4", "traddr": ADDR[0], "trsvcid": ADDR[1],
        "subnqn": SUBSYS, "subtype": "nvme", "treq": "required", "portid": "2",
        "cntlid": "65535", "asqsz": "128", "eflags": "0", "tsas": "tls1.3",
    }  # fmt: skip
    send, receive = trio.open_memory_channel[object](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(connector.run, receive)
        await send.send(DcLogPages(dc, (entry,)))
        with trio.fail_after(90):
            while sum(s.connected for s in published.value.iocs) < 2:
                await published.wait_transition()
        assert_no_secret(all_cmdlines(), "a process's arguments")
        nursery.cancel_scope.cancel()
    live = [c for c in await kernel.list_controllers() if c.is_io_controller]
    assert {c.subsysnqn for c in live} == {SUBSYS, SUBSYS2}
    for c in live:
        assert int((SYSFS / c.device / "tls_key").read_text().strip(), 16) > 0
        await kernel.disconnect(c.device)


@pytest.mark.usefixtures("tls_target")
async def test_stafd_kernel_backend_reaches_a_dc_over_tls(
    captured: pytest.LogCaptureFixture,
) -> None:
    """The discovery controller on the TLS-only port: stafd.conf's tls/tls-key for it."""
    kernel = LibnvmeKernel()
    identity = HostIdentity(hostnqn=HOST, hostid=uuid.UUID(HOST_UUID).bytes)
    backend = KernelBackend(kernel, identity, UeventHub())
    tid = Tid("tcp", ADDR[0], ADDR[1], WK, "", "", HOST)
    dc = await kernel.connect(backend.request(tid, {"tls": "true", "tls-key": PSK}))
    assert dc.is_discovery_controller and dc.state == "live"
    assert int((SYSFS / dc.device / "tls_key").read_text().strip(), 16) > 0
    await kernel.disconnect(dc.device)


@pytest.mark.usefixtures("tls_target")
async def test_tls_without_a_psk_fails_naming_the_controller_and_the_fix(
    captured: pytest.LogCaptureFixture,
) -> None:
    """No PSK in the keyring for this host and subsystem: the kernel refuses before
    connecting (ENOKEY) and the message says what to set."""
    nopsk = "nqn.2014-08.org.nvmexpress:uuid:7a1c0000-0000-4000-8000-0000000071a3"
    kernel = LibnvmeKernel()
    with pytest.raises(KernelError) as info:
        await kernel.connect(req(nopsk, "7a1c0000-0000-4000-8000-0000000071a3", tls=True))
    message = str(info.value)
    assert message.startswith(f"connect {SUBSYS} at tcp 127.0.0.1:4420: "), message
    assert info.value.errno == errno.ENOKEY, message
    assert "set tls-key" in message
