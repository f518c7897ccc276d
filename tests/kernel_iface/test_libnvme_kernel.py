"""LibnvmeKernel without a kernel: what libnvme is given, error mapping, sysfs, threads.

The real-kernel checks live in tests/kernel (VM only).
"""

from __future__ import annotations

import errno
import importlib.util
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from stas.kernel import libnvme_kernel
from stas.kernel.api import KernelError
from stas.kernel.libnvme_kernel import LibnvmeKernel, libnvme_config, libnvme_errno
from tests.helpers.kernel import req

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
HOSTID = "0c9e3a3e-5b0f-4c4e-9d0e-2e1c6a1b7f10"
SECRET = "DHHC-1:00:ia6zGodOr5SEG8f+M2DLUeJFMJ4UUJpo1iwxX2mzBRGrRmlq:"
SECRET2 = "DHHC-1:01:" + "QUFB" * 12 + ":"


class FakeNvme:
    """The few libnvme binding calls LibnvmeKernel makes, recorded in order."""

    def __init__(self, fail: BaseException | None = None, name: str = "nvme7") -> None:
        self.fail = fail
        self.calls: list[tuple[str, Any]] = []
        self.freed: list[str] = []
        self.gate: threading.Event | None = None
        self.active = 0
        self.peak = 0
        self.cond = threading.Condition()
        outer = self

        class Freed:
            kind = ""

            def __del__(self) -> None:
                outer.freed.append(self.kind)

        class Root(Freed):
            kind = "root"

        class Host(Freed):
            kind = "host"

            def __init__(self, root: Root, **kw: Any) -> None:
                outer.calls.append(("host", kw))

        class Ctrl(Freed):
            kind = "ctrl"

            def __init__(self, root: Root, **kw: Any) -> None:
                outer.calls.append(("ctrl", kw))
                self.name = name

            def __setattr__(self, key: str, value: Any) -> None:
                if key != "name":
                    outer.calls.append(("set", (key, value)))
                object.__setattr__(self, key, value)

            def connect(self, host: Host, cfg: dict[str, Any]) -> None:
                outer.calls.append(("connect", cfg))
                with outer.cond:
                    outer.active += 1
                    outer.peak = max(outer.peak, outer.active)
                    outer.cond.notify_all()
                try:
                    if outer.gate is not None:
                        assert outer.gate.wait(10)
                    if outer.fail is not None:
                        raise outer.fail
                finally:
                    with outer.cond:
                        outer.active -= 1

        self.root = Root
        self.host = Host
        self.ctrl = Ctrl


def kernel(tmp_path: Path, nvme: FakeNvme, **kw: Any) -> LibnvmeKernel:
    """The libnvme path (opt-in since issue 8) with the recording bindings."""
    kw.setdefault("use_libnvme", True)
    return LibnvmeKernel(nvme=nvme, sysfs=tmp_path, capabilities=frozenset({"x"}), **kw)


def sysfs_ctrl(root: Path, name: str, **attrs: str) -> Path:
    d = root / name
    d.mkdir()
    for k, v in attrs.items():
        (d / k).write_text(v + "\n")
    return d


# --- the config dict ---------------------------------------------------------------------------


def test_config_dict_names_and_values() -> None:
    cfg = libnvme_config(
        req(kato=30, ctrl_loss_tmo=-1, data_digest=True, nr_io_queues=4, nr_write_queues=2,
            nr_poll_queues=1, reconnect_delay=3, tos=8, duplicate_connect=True)
    )  # fmt: skip
    assert cfg == {
        "hdr_digest": False,
        "data_digest": True,
        "disable_sqflow": False,
        "duplicate_connect": True,
        "keep_alive_tmo": 30,
        "nr_io_queues": 4,
        "nr_write_queues": 2,
        "nr_poll_queues": 1,
        "reconnect_delay": 3,
        "ctrl_loss_tmo": -1,
        "tos": 8,
    }
    assert libnvme_config(req()) == {
        "hdr_digest": False,
        "data_digest": False,
        "disable_sqflow": False,
        "duplicate_connect": False,
    }


@pytest.mark.skipif(importlib.util.find_spec("libnvme") is None, reason="libnvme not installed")
def test_config_keys_are_the_ones_the_installed_bindings_read() -> None:
    """The SWIG typemap compares dict keys with C strings: they must be in _nvme's binary."""
    spec = importlib.util.find_spec("libnvme")
    assert spec is not None and spec.submodule_search_locations
    so = next(Path(next(iter(spec.submodule_search_locations))).glob("_nvme*.so")).read_bytes()
    full = libnvme_config(req(kato=1, nr_io_queues=1, nr_write_queues=1, nr_poll_queues=1,
                              reconnect_delay=1, ctrl_loss_tmo=1, tos=1))  # fmt: skip
    for key in full:
        assert b"\0" + key.encode() + b"\0" in so, key
    for key in libnvme_kernel.DIRECT_ONLY:  # why these go straight to /dev/nvme-fabrics
        assert b"\0" + key.encode() + b"\0" not in so, key


# --- connect through libnvme -------------------------------------------------------------------


async def test_connect_hands_libnvme_everything(tmp_path: Path) -> None:
    address = "traddr=::1,trsvcid=4420,host_iface=eth0,src_addr=::1"
    sysfs_ctrl(
        tmp_path, "nvme7", transport="tcp", subsysnqn="klingons", address=address, state="live"
    )
    fake = FakeNvme()
    k = kernel(tmp_path, fake)
    r = req(hostid=HOSTID, host_iface="eth0", host_traddr="::1", kato=5, discovery=True,
            dhchap_secret=SECRET, dhchap_ctrl_secret=SECRET2)  # fmt: skip
    ctrl = await k.connect(r)
    assert (ctrl.device, ctrl.host_iface, ctrl.src_addr, ctrl.state) == (
        "nvme7",
        "eth0",
        "::1",
        "live",
    )
    assert fake.calls == [
        ("host", {"hostnqn": HOSTNQN, "hostid": HOSTID}),
        ("ctrl", {"subsysnqn": "klingons", "transport": "tcp", "traddr": "::1",
                  "host_traddr": "::1", "host_iface": "eth0", "trsvcid": "4420"}),
        ("set", ("discovery_ctrl", True)),
        ("set", ("dhchap_host_key", SECRET)),
        ("set", ("dhchap_key", SECRET2)),
        ("connect", libnvme_config(r)),
    ]  # fmt: skip
    assert fake.freed == ["ctrl", "host", "root"]  # children before their root


async def test_unset_optionals_are_none_and_vanished_ctrl_is_described(tmp_path: Path) -> None:
    fake = FakeNvme(name="nvme3")
    ctrl = await kernel(tmp_path, fake).connect(req(transport="loop", traddr="", trsvcid=""))
    assert fake.calls[0] == ("host", {"hostnqn": HOSTNQN, "hostid": None})
    assert fake.calls[1][1]["traddr"] is None and fake.calls[1][1]["trsvcid"] is None
    assert (ctrl.device, ctrl.transport, ctrl.subsysnqn) == ("nvme3", "loop", "klingons")


@pytest.mark.parametrize(
    "exc,code",
    [
        (RuntimeError("already connected"), errno.EALREADY),
        (AttributeError("Existing controller connection"), errno.EALREADY),
        (RuntimeError("invalid arguments/configuration"), errno.EINVAL),
        (RuntimeError("hostnqn already in use"), errno.EADDRINUSE),
        (RuntimeError("connection refused"), errno.ECONNREFUSED),
        (RuntimeError("cannot assign requested address"), errno.EADDRNOTAVAIL),
        (RuntimeError("failed to write to nvme-fabrics device"), errno.EIO),
        (RuntimeError("Connection timed out"), errno.ETIMEDOUT),  # strerror() below 1000
        (RuntimeError("Connect failed"), None),
    ],
)
async def test_errors_map_to_kernel_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException, code: int | None
) -> None:
    leaked: list[Any] = []
    monkeypatch.setattr(libnvme_kernel, "_FAILED_CONNECTS", leaked)
    fake = FakeNvme(fail=exc)
    with pytest.raises(KernelError) as info:
        await kernel(tmp_path, fake).connect(req(traddr="10.0.0.1"))
    assert info.value.errno == code
    assert str(info.value) == f"connect klingons at tcp 10.0.0.1:4420: {exc}"
    assert len(leaked) == 1 and fake.freed == []  # a failed ctrl is never freed (heap safety)
    assert libnvme_errno(exc) == code


async def test_connects_run_in_bounded_parallel_threads(tmp_path: Path) -> None:
    fake = FakeNvme()
    fake.gate = threading.Event()
    k = kernel(tmp_path, fake, max_threads=2)

    def two_active() -> None:
        with fake.cond:
            assert fake.cond.wait_for(lambda: fake.active == 2, timeout=10)

    async with trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(k.connect, req(subsysnqn=f"s{i}"))
        await trio.to_thread.run_sync(two_active)
        assert fake.active == 2
        fake.gate.set()
    assert fake.peak == 2 and len([c for c in fake.calls if c[0] == "connect"]) == 6


# --- the direct /dev/nvme-fabrics path -----------------------------------------------------------


async def test_options_the_bindings_drop_go_straight_to_the_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[tuple[str, str]] = []

    def add_ctrl(options: str, path: str) -> tuple[int, int]:
        written.append((options, path))
        return 12, 1

    monkeypatch.setattr(libnvme_kernel, "add_ctrl", add_ctrl)
    fake = FakeNvme()
    k = kernel(tmp_path, fake, fabrics="/dev/fake-fabrics")
    r = req(queue_size=64, fast_io_fail_tmo=10, dhchap_secret=SECRET)
    ctrl = await k.connect(r)
    assert ctrl.device == "nvme12" and fake.calls == []
    assert written == [(r.option_string(redact=False), "/dev/fake-fabrics")]
    assert "queue_size=64" in written[0][0] and SECRET in written[0][0]


async def test_direct_path_errors_keep_the_kernel_errno(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def add_ctrl(options: str, path: str) -> tuple[int, int]:
        raise OSError(errno.EALREADY, "Operation already in progress")

    monkeypatch.setattr(libnvme_kernel, "add_ctrl", add_ctrl)
    with pytest.raises(KernelError) as info:
        await kernel(tmp_path, FakeNvme()).connect(req(queue_size=32))
    assert info.value.errno == errno.EALREADY
    assert "Operation already in progress" in str(info.value)


# --- sysfs side ----------------------------------------------------------------------------------


async def test_disconnect_writes_delete_controller(tmp_path: Path) -> None:
    d = sysfs_ctrl(tmp_path, "nvme4", transport="tcp")
    (d / "delete_controller").write_text("")
    await kernel(tmp_path, FakeNvme()).disconnect("nvme4")
    assert (d / "delete_controller").read_text() == "1"


async def test_disconnect_errors(tmp_path: Path) -> None:
    k = kernel(tmp_path, FakeNvme())
    with pytest.raises(KernelError, match="disconnect nvme3: no such controller") as info:
        await k.disconnect("nvme3")
    assert info.value.errno == errno.ENODEV
    with pytest.raises(KernelError, match="not an nvme controller name") as info:
        await k.disconnect("../../kernel/x")
    assert info.value.errno == errno.EINVAL
    (sysfs_ctrl(tmp_path, "nvme5") / "delete_controller").mkdir()
    with pytest.raises(KernelError, match="disconnect nvme5") as info:
        await k.disconnect("nvme5")
    assert info.value.errno == errno.EISDIR


async def test_list_and_lookup_read_sysfs(tmp_path: Path) -> None:
    sysfs_ctrl(tmp_path, "nvme1", transport="tcp", subsysnqn="a")
    sysfs_ctrl(tmp_path, "nvme0", transport="tcp", subsysnqn="b")
    k = kernel(tmp_path, FakeNvme())
    assert [(c.device, c.subsysnqn) for c in await k.list_controllers()] == [
        ("nvme0", "b"),
        ("nvme1", "a"),
    ]
    assert (await k.controller("nvme1")).subsysnqn == "a"  # type: ignore[union-attr]
    assert await k.controller("nvme9") is None
    assert await k.controller("nvme1/../nvme0") is None


def test_capabilities_come_from_the_fabrics_device(tmp_path: Path) -> None:
    dev = tmp_path / "nvme-fabrics"
    dev.write_text("instance=%d,host_iface=%s,discovery\n")
    k = LibnvmeKernel(nvme=FakeNvme(), sysfs=tmp_path, fabrics=str(dev))
    assert k.capabilities() == {"instance", "host_iface", "discovery"}
    assert kernel(tmp_path, FakeNvme()).capabilities() == {"x"}


# --- the default path: one /dev/nvme-fabrics write, one device read (issue 8) -------------------

ATTRS = ("transport", "address", "subsysnqn", "hostnqn", "hostid", "cntrltype", "dctype",
         "state", "model", "serial")  # fmt: skip


class SysfsKernel:
    """A /sys/class/nvme tree in a directory, and a fabrics device that adds to it.

    ``opens`` counts every attribute file stas opens (through the injected opener), so a test
    can tell a per-device read from a scan of every controller.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.opens = 0
        self.written: list[str] = []
        self.next = 0

    def opener(self, path: Path) -> Any:
        self.opens += 1
        return open(path, "rb")

    def add(self, nqn: str) -> int:
        n, self.next = self.next, self.next + 1
        address = "traddr=::1,trsvcid=4420,src_addr=::1\n"
        values = dict(transport="tcp", address=address, subsysnqn=nqn, hostnqn=HOSTNQN,
                      cntrltype="io", state="live")  # fmt: skip
        sysfs_ctrl(self.root, f"nvme{n}", **{k: values.get(k, "") for k in ATTRS})
        (self.root / f"nvme{n}" / f"nvme{n}n1").mkdir()
        return n

    def add_ctrl(self, options: str, path: str) -> tuple[int, int]:
        self.written.append(options)
        nqn = next(p[4:] for p in options.split(",") if p.startswith("nqn="))
        return self.add(nqn), 1


async def test_connect_writes_the_fabrics_device_and_never_touches_libnvme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sk = SysfsKernel(tmp_path)
    monkeypatch.setattr(libnvme_kernel, "add_ctrl", sk.add_ctrl)
    fake = FakeNvme()
    k = LibnvmeKernel(nvme=fake, sysfs=tmp_path, fabrics="/dev/x", capabilities=frozenset())
    r = req(hostid=HOSTID, kato=5, dhchap_secret=SECRET)
    ctrl = await k.connect(r)
    assert (ctrl.device, ctrl.subsysnqn, ctrl.state, ctrl.is_io_controller) == (
        "nvme0", "klingons", "live", True,
    )  # fmt: skip
    assert sk.written == [r.option_string(redact=False)]  # the validated string, secret included
    assert fake.calls == [] and fake.freed == []  # no libnvme root: no nvme_scan()


def test_the_default_kernel_does_not_load_libnvme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse() -> Any:
        raise AssertionError("libnvme loaded")

    monkeypatch.setattr(libnvme_kernel, "load_libnvme", refuse)
    LibnvmeKernel(sysfs=tmp_path, capabilities=frozenset())  # no bindings needed, none imported
    with pytest.raises(AssertionError, match="libnvme loaded"):
        LibnvmeKernel(sysfs=tmp_path, capabilities=frozenset(), use_libnvme=True)


async def opens_per_connect(root: Path, monkeypatch: pytest.MonkeyPatch, existing: int) -> float:
    """Attribute opens per connect with ``existing`` controllers already in sysfs."""
    sk = SysfsKernel(root)
    for i in range(existing):
        sk.add(f"old{i}")
    monkeypatch.setattr(libnvme_kernel, "add_ctrl", sk.add_ctrl)
    k = LibnvmeKernel(sysfs=root, capabilities=frozenset(), opener=sk.opener)
    assert len(await k.list_controllers()) == existing  # the one full scan (start, resync)
    sk.opens = 0
    for i in range(20):
        assert (await k.connect(req(subsysnqn=f"new{i}"))).subsysnqn == f"new{i}"
    return sk.opens / 20


async def test_a_connect_reads_the_same_few_files_at_10_and_100_controllers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linear cold start: per-connect cost must not grow with the controllers already there."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    at_10 = await opens_per_connect(tmp_path / "a", monkeypatch, 10)
    at_100 = await opens_per_connect(tmp_path / "b", monkeypatch, 100)
    assert at_10 == at_100 == len(ATTRS)  # the new device's own attributes, once each
