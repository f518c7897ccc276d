"""One I/O controller: adopt the kernel's existing connection or connect, and keep trying.

Retries: a fast first retry, then exponential backoff with jitter. With NCC set by a CDC and
``connect-attempts-on-ncc=N``, it stops after N failures until a log page clears NCC (the
connector restarts the actor with the new wanted state). Cancellation never disconnects: only
the connector decides disconnects, so stopping or restarting stacd drops nothing.
"""

from __future__ import annotations

import errno
import logging
import random

import attrs
import trio

from stas.kernel.api import ConnectRequest, Kernel, KernelController, KernelError
from stas.messages import IocStatus, IocUpdate, IocWanted
from stas.plan import find_kernel

log = logging.getLogger("stas.ioc")


@attrs.frozen
class IocSettings:
    fast_retry: float = 3.0
    backoff_initial: float = 5.0
    backoff_max: float = 60.0
    jitter: float = 0.1
    connect_attempts_on_ncc: int = 0

    def retry_delay(self, failures: int, rng: random.Random) -> float:
        """Delay after failure number ``failures`` (1-based)."""
        if failures <= 1:
            return self.fast_retry
        base = min(self.backoff_initial * 2 ** (failures - 2), self.backoff_max)
        return max(0.0, base * (1 + self.jitter * rng.uniform(-1, 1)))


async def run_ioc_actor(
    wanted: IocWanted,
    updates: trio.MemorySendChannel[IocUpdate],
    *,
    kernel: Kernel,
    request: ConnectRequest,
    settings: IocSettings = IocSettings(),
    adopt: KernelController | None = None,
    initial_delay: float = 0.0,
    rng: random.Random | None = None,
) -> None:
    """Run until cancelled; publishes an IocStatus on every visible change."""
    rng = rng or random.Random()
    status = IocStatus(tid=wanted.tid, origin=wanted.origin, params=wanted.params, ncc=wanted.ncc)

    async def publish(**changes: object) -> None:
        nonlocal status
        new = attrs.evolve(status, **changes)  # type: ignore[arg-type]
        if new != status:
            status = new
            await updates.send(IocUpdate(status))

    if adopt is not None:
        log.info("%s: adopting existing %s", wanted.tid, adopt.device)
        await publish(device=adopt.device, state="connected", connected=True, adopted=True)
        await trio.sleep_forever()
    await publish(state="idle")
    if initial_delay:
        await publish(state="backoff")
        await trio.sleep(initial_delay)
    failures = 0
    last_error = ""
    limit = settings.connect_attempts_on_ncc if wanted.ncc else 0
    while True:
        await publish(state="connecting", connect_attempts=failures + 1)
        try:
            ctrl = await kernel.connect(request)
        except KernelError as exc:
            if exc.errno == errno.EALREADY:
                found = find_kernel(wanted.tid, await kernel.list_controllers())
                if found is not None:
                    log.info("%s: already connected as %s; adopting", wanted.tid, found.device)
                    await publish(
                        device=found.device,
                        state="connected",
                        connected=True,
                        adopted=True,
                        last_error="",
                    )
                    await trio.sleep_forever()
            failures += 1
            if str(exc) != last_error:
                log.warning("%s: connect failed: %s", wanted.tid, exc)
                last_error = str(exc)
            if limit and failures >= limit:
                log.info(
                    "%s: NCC set and %d attempts failed; waiting for the CDC", wanted.tid, failures
                )
                await publish(state="gave-up", last_error=last_error)
                await trio.sleep_forever()
            delay = settings.retry_delay(failures, rng)
            await publish(state="backoff", last_error=last_error)
            await trio.sleep(delay)
            continue
        log.info("%s: connected as %s", wanted.tid, ctrl.device)
        await publish(
            device=ctrl.device, state="connected", connected=True, last_error="", connect_attempts=0
        )
        await trio.sleep_forever()
