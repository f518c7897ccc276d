"""In-process D-Bus actor helpers: stafd's actor served from a hand-made snapshot on a private
bus, a trace switch, and the ctl tools' ``main`` run in a thread (they are blocking clients)."""

from __future__ import annotations

import functools
import pprint
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pytest
import trio
from trio_util import AsyncValue

from stas.actors.stafd_dbus import run_stafd_dbus
from stas.ctl import stafctl
from stas.messages import DcStatus, StafdSnapshot
from tests.helpers.entries import HOSTNQN as HOSTNQN  # re-exported: tests import it from here
from tests.helpers.entries import WK as WK
from tests.helpers.entries import dc_tid, log_entry
from tests.helpers.sim import SEED_SUBSYSTEMS

if TYPE_CHECKING:
    from stas.nvme.logpage import LogPageEntry

DC = dc_tid()
SEED = SEED_SUBSYSTEMS
SECRET = "DHHC-1:00:ia6zGodOr5SEG8f+M2DLUeJFMJ4UUJpo1iwxX2mzBRGrRmlq:"
HOSTKEY = "DHHC-1:00:0123456789abcdef0123456789abcdef0123456789abcdef:"


def entry(nqn: str) -> LogPageEntry:
    """An NVM subsystem entry on [::1]:8009, as the seed's port 1 lists it."""
    return log_entry(nqn, trsvcid="8009")


def seed_dc(nqns: tuple[str, ...] = SEED, **kw: Any) -> DcStatus:
    base: dict[str, Any] = dict(
        tid=DC,
        origin="configured",
        device="nvme0",
        state="connected",
        connected=True,
        genctr=1,
        log_pages=tuple(entry(n) for n in nqns),
    )
    return DcStatus(**(base | kw))


def snapshot(*dcs: DcStatus, generation: int = 1) -> AsyncValue[StafdSnapshot]:
    return AsyncValue(StafdSnapshot(dcs=dcs, generation=generation))


class Tron:
    """A trace switch without logging, as the actors see one."""

    def __init__(self) -> None:
        self.value = False

    def get(self) -> bool:
        return self.value

    def set(self, value: bool) -> None:
        self.value = value

    def level_name(self) -> str:
        return "DEBUG" if self.value else "INFO"


async def serve(
    nursery: trio.Nursery,
    bus_address: str,
    snap: AsyncValue[StafdSnapshot],
    *,
    uid: int = 0,
    info: Callable[[], Mapping[str, Any]] | None = None,
    tron: Any = None,
) -> Any:
    """Run the actor; every caller is taken to have ``uid`` (0 = root)."""
    tron = tron or Tron()

    async def fixed_uid(sender: str) -> int:
        return uid

    await nursery.start(
        lambda task_status: run_stafd_dbus(
            snapshot=snap,
            info=info or (lambda: {"hostnqn": HOSTNQN, "hostkey": HOSTKEY, "tron": tron.get()}),
            tron=tron,
            address=bus_address,
            uid_lookup=fixed_uid,
            task_status=task_status,
        )
    )
    return tron


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a worker thread: the D-Bus client and the ctl tools block."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


async def run_main(
    main: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """A ctl tool's ``main`` in-process, in a thread; (exit code, stdout, stderr)."""
    rc = await trio.to_thread.run_sync(main, list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


async def ctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """stafctl in-process."""
    return await run_main(stafctl.main, capsys, *argv)


def pformat(obj: Any) -> str:
    return pprint.pformat(obj, width=120) + "\n"
