"""One benchmark row: name, median (min-max, n), target, PASS/MISS.

Benchmarks are not tests: a MISS is printed, never raised, and the run goes on.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import attrs


@attrs.define
class Row:
    name: str
    samples: Sequence[float] = ()
    unit: str = "ms"
    scale: float = 1000.0  # samples are seconds unless said otherwise
    target: str = "-"
    passed: bool | None = None  # None: no target
    note: str = ""
    text: str | None = None  # a figure that is not a sample list (e.g. "12 MB")

    def figure(self) -> str:
        if self.text is not None:
            return self.text
        if not self.samples:
            return "no samples"
        s = [x * self.scale for x in self.samples]
        med = statistics.median(s)
        return f"{med:.1f} {self.unit} ({min(s):.1f}-{max(s):.1f}, n={len(s)})"

    def verdict(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "MISS")

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "figure": self.figure(),
            "target": self.target,
            "verdict": self.verdict(),
            "note": self.note,
        }


def failed(name: str, exc: BaseException, target: str = "-") -> Row:
    """A benchmark that could not run: shown as a MISS with the reason."""
    return Row(name, text=f"did not run: {exc}", target=target, passed=False)


def table(rows: Sequence[Row]) -> str:
    cells = [("benchmark", "median (min-max, n)", "target", "result")]
    cells += [(r.name, r.figure(), r.target, r.verdict()) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(4)).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["", "notes:", *notes] if notes else []))
