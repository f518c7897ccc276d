"""Fault injection knobs for the simulated discovery controller.

Hosts must survive misbehaving controllers; these switches make each bad behaviour
reproducible from tests and from the CLI (``--fault drop-after=5 --fault delay=0.2``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs

_TRUE = {"1", "true", "yes", "on", ""}
_FALSE = {"0", "false", "no", "off"}


class FaultError(ValueError):
    """A ``--fault`` value could not be understood; the message names it."""


@attrs.frozen
class Faults:
    """What the simulator should do wrong (all off by default).

    - refuse: close every new TCP connection immediately (looks like a dead DC).
    - drop_after_commands: close the connection after answering N admin commands.
    - delay_s: sleep this long before answering each command (slow DC).
    - genctr_bump_on_read: bump GENCTR during the next N log page reads at a non-zero
      offset, so a host that re-reads the header sees it move and must retry.
    - corrupt_log_page: answer LID 70h with a header whose RECFMT is 7 and NUMREC far
      larger than the data actually returned.
    - aen_storm: on the next change, send N AENs as fast as the AER budget allows.
    - oversize_c2h: answer every discovery log page read with more data than the host
      asked for (the connection comes up, then breaks on the first Get Log Page).
    - dim_reject: refuse the next N DIM register/update commands with Invalid Field (DNR),
      as a CDC that does not want this host's registration does.
    """

    refuse: bool = False
    drop_after_commands: int | None = attrs.field(default=None)
    delay_s: float = attrs.field(default=0.0)
    genctr_bump_on_read: int = attrs.field(default=0)
    corrupt_log_page: bool = False
    aen_storm: int = attrs.field(default=0)
    oversize_c2h: bool = False
    dim_reject: int = attrs.field(default=0)

    @drop_after_commands.validator
    def _check_drop(self, _attr: attrs.Attribute, value: int | None) -> None:
        if value is not None and value < 0:
            raise FaultError(f"drop-after must be >= 0, not {value}")

    @delay_s.validator
    def _check_delay(self, _attr: attrs.Attribute, value: float) -> None:
        if not (math.isfinite(value) and 0 <= value <= 3600):
            raise FaultError(f"delay must be between 0 and 3600 seconds, not {value}")

    @genctr_bump_on_read.validator
    def _check_bumps(self, _attr: attrs.Attribute, value: int) -> None:
        if value < 0:
            raise FaultError(f"genctr-bump must be >= 0, not {value}")

    @aen_storm.validator
    def _check_storm(self, _attr: attrs.Attribute, value: int) -> None:
        if value < 0:
            raise FaultError(f"aen-storm must be >= 0, not {value}")

    @dim_reject.validator
    def _check_dim_reject(self, _attr: attrs.Attribute, value: int) -> None:
        if value < 0:
            raise FaultError(f"dim-reject must be >= 0, not {value}")


def _int(key: str, value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise FaultError(f"--fault {key}={value!r}: not an integer") from None


def _float(key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise FaultError(f"--fault {key}={value!r}: not a number") from None


def _bool(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise FaultError(f"--fault {key}={value!r}: expected true/false")


# CLI key -> (Faults field, converter)
_KEYS = {
    "refuse": ("refuse", _bool),
    "drop-after": ("drop_after_commands", _int),
    "delay": ("delay_s", _float),
    "genctr-bump": ("genctr_bump_on_read", _int),
    "corrupt-log-page": ("corrupt_log_page", _bool),
    "corrupt": ("corrupt_log_page", _bool),
    "aen-storm": ("aen_storm", _int),
    "oversize-c2h": ("oversize_c2h", _bool),
    "dim-reject": ("dim_reject", _int),
}


def parse_faults(specs: Iterable[str]) -> Faults:
    """Turn ``["drop-after=5", "delay=0.2", "refuse"]`` into a Faults value.

    A key without ``=`` is a boolean switch set to true. Unknown keys raise FaultError.
    """
    values: dict[str, object] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        key = key.strip().lower().replace("_", "-")
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise FaultError(f"unknown fault {key!r} (known: {known})")
        field, convert = _KEYS[key]
        if not sep and convert is not _bool:
            raise FaultError(f"--fault {key} needs a value ({key}=...)")
        values[field] = convert(key, value.strip())
    return Faults(**values)  # type: ignore[arg-type]


class FaultBudget:
    """The used-up side of Faults: one-shot faults count down as they fire.

    Owned by one simulator and shared by its sessions, so "bump GENCTR during the next N
    reads" means N reads in total, whichever hosts make them.
    """

    def __init__(self, faults: Faults | None = None) -> None:
        self.set(faults if faults is not None else Faults())

    def set(self, faults: Faults) -> None:
        self.faults = faults
        self.genctr_bumps_left = faults.genctr_bump_on_read
        self.aen_storm_left = faults.aen_storm
        self.dim_rejects_left = faults.dim_reject

    def take_genctr_bump(self) -> bool:
        if self.genctr_bumps_left <= 0:
            return False
        self.genctr_bumps_left -= 1
        return True

    def take_dim_reject(self) -> bool:
        if self.dim_rejects_left <= 0:
            return False
        self.dim_rejects_left -= 1
        return True

    def take_aen_storm(self) -> int:
        count, self.aen_storm_left = self.aen_storm_left, 0
        return count
