"""bench/procstat.py: the one /proc/PID/status reader the benchmarks share."""

from __future__ import annotations

import os

from bench.procstat import kb_of, parse_status, status, status_kb

SAMPLE = "\n".join(
    ["Name:\tstacd", "State:\tS (sleeping)", "VmHWM:\t   81236 kB", "VmRSS:\t   40960 kB"]
)


def test_fields_are_read_by_name_with_their_values_stripped() -> None:
    fields = parse_status(SAMPLE)
    assert fields["Name"] == "stacd" and fields["State"] == "S (sleeping)"
    assert kb_of(fields, "VmRSS") == 40960 and kb_of(fields, "VmHWM") == 81236


def test_a_field_the_kernel_does_not_show_reads_0() -> None:
    """A zombie's status has no Vm* lines."""
    assert kb_of(parse_status("Name:\tstacd\nState:\tZ (zombie)\n"), "VmRSS") == 0


def test_this_process_reads_as_itself() -> None:
    assert status(os.getpid())["Pid"] == str(os.getpid())
    assert 0 < status_kb(os.getpid(), "VmRSS") <= status_kb("self", "VmHWM")
