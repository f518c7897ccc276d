"""A connect recorded before it is made: a stacd killed between the kernel's connect and the
registry write still knows the controller as its own after a restart. The registry's files
stay as libnvme writes them; another owner's controllers are never claimed this way."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from trio_util import AsyncValue

from stas.actors.connector import Connector
from stas.actors.ioc import IocSettings
from stas.coexist.registry import INTENT_FIELDS, Registry, parse_intent
from stas.kernel.api import ConnectRequest, KernelController
from stas.kernel.fake import FakeKernel
from stas.messages import StacdSnapshot, StafdAppeared, StafdSynced
from tests.coexist.conftest import put
from tests.helpers.connector import stacd_config
from tests.helpers.entries import HOSTID, HOSTNQN, dc_tid, page

DC = dc_tid()


def request(nqn: str, traddr: str = "::1") -> ConnectRequest:
    return ConnectRequest("tcp", traddr, "4420", nqn, HOSTNQN, HOSTID)


def io(device: str, nqn: str, traddr: str = "::1", cntrltype: str = "io") -> KernelController:
    return KernelController(
        device, "tcp", traddr, "4420", nqn, hostnqn=HOSTNQN, cntrltype=cntrltype, state="live"
    )


# --- the registry's side ---------------------------------------------------------------------


def test_an_intent_is_a_small_file_beside_the_registry_not_in_it(reg: Registry) -> None:
    name = reg.intend(request("vol"))
    assert name is not None and reg.intents == reg.root.parent / "stas-connecting"
    (path,) = reg.intents.iterdir()
    assert path.name == name and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(reg.intents.stat().st_mode) == 0o755
    fields = parse_intent(path.read_bytes())
    assert fields is not None and fields["subsysnqn"] == "vol" and fields["hostnqn"] == HOSTNQN
    assert not reg.root.exists()  # libnvme's registry: untouched by an intent
    assert reg.intend(request("vol")) != name  # one per connect in flight


def test_settling_claims_the_device_then_drops_the_intent(reg: Registry) -> None:
    reg.settle(reg.intend(request("vol")), "nvme3")
    assert reg.owner("nvme3") == "stas" and list(reg.intents.iterdir()) == []
    assert (reg.root / "nvme3" / "owner").read_text() == "stas\n"  # libnvme's format
    assert (reg.root / "nvme3" / "seqnum").read_text() == "4242\n"
    reg.settle(reg.intend(request("other")), None)  # the connect failed
    assert list(reg.intents.iterdir()) == [] and sorted(p.name for p in reg.root.iterdir()) == [
        "nvme3"
    ]


def test_at_start_an_unowned_controller_a_leftover_intent_describes_is_ours(reg: Registry) -> None:
    for nqn in ("vol", "booted", "disc", "gone"):
        reg.intend(request(nqn))
    put(reg, "nvme2", "nbft")  # another owner's: never claimed this way
    kernel = [
        io("nvme1", "vol"),
        io("nvme2", "booted"),
        io("nvme3", "disc", cntrltype="discovery"),  # not an I/O controller
        io("nvme4", "cli-made"),  # no intent names it (nvme-cli's)
        io("nvme5", "vol", traddr="::2"),  # another path of the subsystem: not the intent's
    ]
    assert reg.intended(kernel) == {"nvme1"}
    assert reg.owner("nvme1") == "stas" and reg.owner("nvme2") == "nbft"
    assert reg.owner("nvme4") is None and reg.owner("nvme5") is None
    assert list(reg.intents.iterdir()) == []  # every leftover dropped, "gone"'s too
    assert reg.claimed_before(c.device for c in kernel) == {"nvme1"}


def test_a_malformed_or_stray_intent_matches_nothing_and_is_dropped(reg: Registry) -> None:
    reg.intents.mkdir(parents=True)
    (reg.intents / "junk").write_bytes(b"transport=tcp\n\xff\xfe")
    (reg.intents / "big").write_bytes(b"x" * 10_000)
    (reg.intents / ".tmp123").write_text("left by a kill mid-write")
    assert reg.intended([io("nvme1", "vol")]) == frozenset()
    assert list(reg.intents.iterdir()) == []


def test_an_unwritable_intent_directory_is_logged_once_and_the_connect_goes_on(
    reg: Registry, caplog
) -> None:
    reg.root.parent.mkdir(parents=True)
    reg.intents.write_text("a file where the directory should be")
    assert reg.intend(request("a")) is None and reg.intend(request("b")) is None
    assert len([r for r in caplog.records if "cannot record a connect's intent" in r.message]) == 1
    reg.settle(None, "nvme1")
    assert reg.owner("nvme1") == "stas"
    assert reg.intended([io("nvme1", "a")]) == frozenset()  # no directory: nothing to read


@given(st.binary(max_size=600))
def test_parse_intent_never_raises(raw: bytes) -> None:
    fields = parse_intent(raw)
    assert fields is None or set(fields) == set(INTENT_FIELDS)


@given(
    st.sampled_from(["tcp", "rdma"]),
    st.sampled_from(["::1", "10.0.0.9", "fe80::1"]),
    st.from_regex(r"nqn\.2026-01\.io\.[a-z0-9]{1,20}:[a-z0-9.:-]{0,30}", fullmatch=True),
)
def test_an_intent_reads_back_as_written(tmp_path_factory, transport, traddr, nqn) -> None:
    reg = Registry(tmp_path_factory.mktemp("r") / "registry")
    req = ConnectRequest(transport, traddr, "4420", nqn, HOSTNQN, HOSTID)
    name = reg.intend(req)
    assert name is not None
    fields = parse_intent((reg.intents / name).read_bytes())
    assert fields == {k: str(getattr(req, k)) for k in INTENT_FIELDS}
    ctrl = KernelController(
        "nvme1", transport, traddr, "4420", nqn, hostnqn=HOSTNQN, cntrltype="io"
    )
    assert reg.intended([ctrl]) == {"nvme1"}


# --- a kill between the kernel's connect and the claim, then a restart -----------------------


class KilledAfterConnect(FakeKernel):
    """On the connect of ``nqn``, right after the kernel made the controller: the files a
    SIGKILL at that instant would leave (/run and the kernel) are copied to ``image``."""

    def __init__(self, persist: Path, run: Path, image: Path, nqn: str) -> None:
        super().__init__(persist=persist)
        self.run, self.image, self.nqn = run, image, nqn
        self.killed = trio.Event()

    async def connect(self, req: ConnectRequest) -> KernelController:
        made = await super().connect(req)
        if req.subsysnqn == self.nqn and not self.killed.is_set():
            if self.run.exists():
                shutil.copytree(self.run, self.image / "run")
            assert self._persist is not None
            shutil.copy(self._persist, self.image / "kernel.json")
            self.killed.set()
        return made


def stacd(kernel: FakeKernel, registry: Registry) -> tuple[Connector, AsyncValue[StacdSnapshot]]:
    published = AsyncValue(StacdSnapshot())
    connector = Connector(
        config=stacd_config(), host_nqn=HOSTNQN, hostid=HOSTID, kernel=kernel, published=published,
        settings=IocSettings(jitter=0.0), registry=registry,
    )  # fmt: skip
    return connector, published


async def killed_then_restarted(tmp_path: Path, *after: object) -> tuple[FakeKernel, str]:
    """stacd connects ``vol`` and is killed just after the kernel made it; a new stacd starts
    from what the kill left and is told ``after``. Returns its kernel and vol's device."""
    seq = tmp_path / "uevent_seqnum"
    seq.write_text("7\n")
    run, image = tmp_path / "run", tmp_path / "image"
    image.mkdir()
    kernel = KilledAfterConnect(tmp_path / "kernel.json", run, image, "vol")
    first, _ = stacd(kernel, Registry(run / "nvme" / "registry", seqnum_file=seq))
    send, receive = trio.open_memory_channel[object](100)
    async with trio.open_nursery() as n:
        await n.start(first.run, receive)
        await send.send(page(DC, "vol"))
        await kernel.killed.wait()
        n.cancel_scope.cancel()
    (device,) = kernel.controllers  # the kernel kept it; the kill left /run as copied

    after_kill = FakeKernel(persist=image / "kernel.json")
    assert set(after_kill.controllers) == {device}
    registry = Registry(image / "run" / "nvme" / "registry", seqnum_file=seq)
    second, published = stacd(after_kill, registry)
    send, receive = trio.open_memory_channel[object](100)
    async with trio.open_nursery() as n:
        await n.start(second.run, receive)
        for msg in after:
            await send.send(msg)
        await trio.sleep(5)
        assert {s.tid.subsysnqn for s in published.value.iocs if s.connected} <= {"vol"}
        n.cancel_scope.cancel()
    return after_kill, device


async def test_a_controller_made_just_before_a_kill_is_swept_after_the_restart(
    autojump_clock, tmp_path
) -> None:
    """No page lists ``vol`` any more after the restart: the controller the killed run made
    (and never recorded) is known as stacd's and disconnected once the picture is complete.
    The old stacd left it connected: unowned, so never its to remove."""
    kernel, device = await killed_then_restarted(
        tmp_path, StafdAppeared(":1.5"), page(DC), StafdSynced(())
    )
    assert kernel.disconnect_log == [device] and kernel.controllers == {}


async def test_a_controller_made_just_before_a_kill_and_still_wanted_is_adopted(
    autojump_clock, tmp_path
) -> None:
    kernel, device = await killed_then_restarted(
        tmp_path, StafdAppeared(":1.5"), page(DC, "vol"), StafdSynced(())
    )
    assert (
        kernel.disconnect_log == []
        and kernel.connect_log == []
        and set(kernel.controllers) == {device}
    )
