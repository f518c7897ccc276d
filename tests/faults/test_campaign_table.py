"""The campaign's table: loopback and real-kernel rows merged, each saying where it ran.

The campaign itself reports and asserts nothing; what is checked here is that its table says
what happened (a lost controller, a broken run, a pipe in a log line cannot hide or break a
row) and that README.md only changes between its markers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.faults.campaign import (
    BEGIN,
    END,
    HEADER,
    IoJournal,
    Result,
    load_rows,
    readme_rows,
    render_row,
    render_table,
    update_readme,
)

KERNEL_ROW = {
    "fault": "stafd SIGKILLed and restarted while stacd runs",
    "where": "stafd kernel backend + stacd, real kernel (Debian 6.1 VM, nvmet)",
    "logged": "stafd left the bus; keeping its last known log pages",
    "log_lines": 2,
    "ls_ms": [900.0, 1500.0, 1100.0],
    "figures": "stafd down 15 s; restarted stafd served the pages in 21.0 s",
    "lost": [],
    "kept": 3,
    "most_per_subsystem": 1,
}


def cells(line: str) -> list[str]:
    """A markdown row's cells (escaped pipes stay inside their cell)."""
    parts = line.replace("\\|", "\0").strip().strip("|").split("|")
    return [p.strip().replace("\0", "\\|") for p in parts]


def test_a_kernel_row_has_every_column() -> None:
    row = cells(render_row(KERNEL_ROW))
    assert len(row) == len(cells(HEADER.splitlines()[0]))
    assert row[1].startswith("stafd kernel backend + stacd, real kernel")
    assert row[2] == "stafd left the bus; keeping its last known log pages (2 lines)"
    assert row[3] == "1100 / 1500 ms"
    noted = cells(render_row(KERNEL_ROW | {"ls_note": "D-Bus call; 1 failed"}))
    assert noted[3] == "1100 / 1500 ms (D-Bus call; 1 failed)"
    assert row[5] == "0 of 3"


def test_loss_errors_and_pipes_are_visible() -> None:
    bad = KERNEL_ROW | {
        "lost": ["klingons"],
        "most_per_subsystem": 2,
        "error": "RuntimeError: no recovery within 180 s",
        "logged": "a | b",
        "ls_ms": [],
    }
    row = cells(render_row(bad))
    assert len(row) == 6  # the pipe in the log line did not add a column
    assert row[2].startswith("campaign error: RuntimeError: no recovery within 180 s")
    assert "a \\| b" in row[2]
    assert row[3] == "no answer"
    assert row[5] == "1 of 3 (klingons); one subsystem connected twice"


def test_a_loopback_result_becomes_a_row_naming_its_backend() -> None:
    io = IoJournal(live=6, lost=[], most=1, added_at={})
    res = Result("dropped mid-log-page", logged="x: connection lost", log_lines=3, attempts=3,
                 rss=(31 * 1024, 32 * 1024), ls_ms=[100.0], witness_ms=90.0,
                 witness_connect_ms=120.0, dcs_listed=2, io=io)  # fmt: skip
    row = cells(render_row(res.as_row()))
    assert row[1] == "stafd userspace backend + stacd fake kernel, loopback simulator"
    assert "3 connects" in row[4] and "stafd RSS 31 -> 32 MB" in row[4]
    assert "connected by stacd 120 ms" in row[4] and "6 I/O controllers" in row[4]
    assert row[5] == "0 of 6"
    died = cells(render_row(Result("x", alive=False).as_row()))
    assert died[2].startswith("campaign error: stafd DIED")


def test_the_fake_kernel_journal_tells_disconnects_and_doubles(tmp_path: Path) -> None:
    def rec(action: str, nqn: str, t: float, kind: str = "io") -> dict[str, object]:
        return {"action": action, "subsysnqn": nqn, "cntrltype": kind, "t": t}

    path = tmp_path / "kernel.json"
    path.write_text(json.dumps({"controllers": [], "journal": [
        rec("add", "a", 1.0), rec("add", "b", 2.0), rec("add", "dc", 2.5, "discovery"),
        rec("remove", "b", 3.0), rec("add", "b", 4.0), rec("add", "b", 5.0),
    ]}))  # fmt: skip
    io = IoJournal.read(path)
    assert (io.live, io.lost, io.most) == (3, ["b"], 2)
    assert io.added_at == {"a": 1.0, "b": 5.0}
    assert IoJournal.read(tmp_path / "missing.json") == IoJournal(0, [], 0, {})


def test_saved_rows_are_read_defensively(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    assert load_rows(path) == []
    path.write_text("{not json")
    assert load_rows(path) == []
    path.write_text(json.dumps({"where": "vm", "rows": [KERNEL_ROW, {"no": "fault"}, 7]}))
    assert load_rows(path) == [KERNEL_ROW]
    path.write_text(json.dumps([KERNEL_ROW]))
    assert load_rows(path) == [KERNEL_ROW]


def test_readme_changes_only_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n")
    table = render_table([KERNEL_ROW])
    update_readme(readme, table)
    assert readme.read_text() == f"intro\n{BEGIN}\n{table}{END}\noutro\n"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match=r"README\.md: no faults markers"):
        update_readme(readme, table)


def test_rows_of_a_source_not_rerun_are_kept_from_the_readme(tmp_path: Path) -> None:
    """`make faults` alone must not drop the VM's rows (nor `make faults-kernel` the loopback's)."""
    loopback = Result("dropped mid-log-page", logged="a | b").as_row()
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BEGIN}\nold\n{END}\n")
    update_readme(readme, render_table([loopback, KERNEL_ROW]))
    kept = readme_rows(readme, lambda where: "real kernel" in where)
    assert kept == [render_row(KERNEL_ROW)]
    assert readme_rows(readme, lambda where: "loopback" in where) == [render_row(loopback)]
    assert render_table([], kept).splitlines()[2:] == kept
    assert readme_rows(tmp_path / "missing.md", lambda where: True) == []
