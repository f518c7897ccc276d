"""bench/kernel_bench.py's pure parts on the host: rows, import-time parsing, floor scripts."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from bench import kernel_bench as kb


def test_fmt_is_median_with_range_in_ms_below_10_s_else_in_s() -> None:
    assert kb.fmt([0.2, 0.1, 0.3]) == "200 ms (100-300)"
    assert kb.fmt([12.0, 11.0, 15.25]) == "12.0 s (11.0-15.2)"


def test_floor_row_says_how_much_parallel_gains() -> None:
    row = kb.floor_row([10.0, 12.0, 11.0], [5.5, 5.5, 6.0])
    assert row == "11.0 s (10.0-12.0) / 5,500 ms (5,500-6,000), parallel 2.00x as fast"


def test_floor_row_names_a_side_that_never_came_up() -> None:
    assert kb.floor_row([1.0], []) == "1,000 ms (1,000-1,000) / failed"


def test_timeline_row_takes_medians_and_marks_unseen_events() -> None:
    runs = [
        {"stafd log": 2.0, "stacd log": 2.2, "stafd D-Bus": 9.0, "DC live": 11.0,
         "1st IOC live": 12.0, "all live": 12.4},
        {"stafd log": 4.0, "stacd log": 2.4, "stafd D-Bus": 10.0, "DC live": 11.5,
         "1st IOC live": 12.5, "all live": 13.0},
        {"stacd log": 2.3, "stafd D-Bus": 11.0, "DC live": 12.0, "1st IOC live": 13.0,
         "all live": 13.5},
    ]  # fmt: skip
    assert kb.timeline_row(runs) == (
        "first log line 3.00/2.30 s -> D-Bus name 10.00/- s -> DC live 11.50 s -> "
        "1st IOC live 12.50 s -> all live 13.00 s"
    )


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
2026-12-03 stafd[12]: INFO stafd 2.5.0 starting (pid 12)
import time:      3000 |       3000 |       trio._core
import time:       500 |       3500 |     trio
import time:       800 |       4300 |   stas.stafd
import time:        50 |         50 | zlib
"""


def test_parse_importtime_skips_other_lines_and_reads_depth() -> None:
    got = kb.parse_importtime(IMPORTTIME)
    assert [(i.module, i.self_us, i.cumulative_us, i.depth) for i in got] == [
        ("_io", 120, 120, 1),
        ("trio._core", 3000, 3000, 3),
        ("trio", 500, 3500, 2),
        ("stas.stafd", 800, 4300, 1),
        ("zlib", 50, 50, 0),
    ]


def test_imports_row_totals_self_times_and_ranks_by_cumulative() -> None:
    row = kb.imports_row(kb.parse_importtime(IMPORTTIME), top=2)
    assert row == "0.00 s over 5 modules; top 2 (cumulative s): stas.stafd 0.00, trio 0.00"
    big = [kb.Import("a", 1_500_000, 1_500_000, 1), kb.Import("b", 250_000, 2_000_000, 0)]
    assert kb.imports_row(big) == "1.75 s over 2 modules; top 10 (cumulative s): b 2.00, a 1.50"


@given(st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 6))))
def test_parse_importtime_reads_back_what_python_writes(entries) -> None:
    text = "".join(
        f"import time: {s:>9} | {c:>10} | {'  ' * d} mod{n}\n"
        for n, (s, c, d) in enumerate(entries)
    )
    got = kb.parse_importtime(text)
    assert [(i.module, i.self_us, i.cumulative_us, i.depth) for i in got] == [
        (f"mod{n}", s, c, d) for n, (s, c, d) in enumerate(entries)
    ]


def test_floor_scripts_serial_one_by_one_parallel_all_at_once_then_wait() -> None:
    serial = kb.floor_script(4, ident=",hostnqn=h,hostid=i").splitlines()
    parallel = kb.floor_script(4, parallel=True, ident="").splitlines()
    assert len(serial) == 4 and not any(line.endswith("&") for line in serial)
    assert "nqn=klingons,hostnqn=h,hostid=i' > /dev/nvme-fabrics" in serial[1]
    assert serial[3].startswith("echo 'transport=tcp,traddr=::1,trsvcid=8009,")
    assert "nqn=nqn.2026-01.io.bench:s000,hostnqn=h" in serial[3]
    assert parallel[-1] == "wait" and len(parallel) == 5
    assert all(line.endswith("> /dev/nvme-fabrics &") for line in parallel[:-1])


def test_vm_command_passes_only_the_bench_settings_that_are_set() -> None:
    cmd = kb.vm_command("6.12", 7200, {"BENCH_RUNS": "2", "BENCH_PARTS": "floor", "HOME": "/"})
    assert cmd[1].endswith("nvmet-harness/vm/runner.py")
    assert cmd[2:6] == ["--kernel", "6.12", "--timeout", "7200"]
    assert cmd[6:10] == ["-e", "BENCH_RUNS", "-e", "BENCH_PARTS"]
    assert cmd[10] == "--" and cmd[-1].endswith("bench/kernel_bench.py")


def test_installed_layout_starts_the_launchers_without_the_venv(tmp_path) -> None:
    sbin = tmp_path / "usr" / "sbin"
    sbin.mkdir(parents=True)
    for prog in ("stafd", "stacd"):
        (sbin / prog).write_text("#!/usr/bin/python3\n")
    layout = kb.installed_layout(tmp_path / "usr")
    assert layout.argv("stacd") == [str(sbin / "stacd")]
    assert layout.argv("stafd", "-X", "importtime") == [
        "/usr/bin/python3", "-X", "importtime", str(sbin / "stafd")
    ]  # fmt: skip
    assert "PYTHONPYCACHEPREFIX" in layout.env_drop and "PYTHONPATH" in layout.env_drop
    assert layout.describe().startswith("installed: ")


def test_installed_layout_under_importtime_keeps_the_launchers_own_options(tmp_path) -> None:
    sbin = tmp_path / "usr" / "sbin"
    sbin.mkdir(parents=True)
    for prog in ("stafd", "stacd"):
        (sbin / prog).write_text("#!/usr/bin/python3 -S\nimport sys\n")
    layout = kb.installed_layout(tmp_path / "usr")
    assert layout.argv("stacd", "-X", "importtime") == [
        "/usr/bin/python3", "-S", "-X", "importtime", str(sbin / "stacd")
    ]  # fmt: skip
    assert layout.argv("stacd") == [str(sbin / "stacd")]


def test_shebang_flags() -> None:
    assert kb.shebang_flags("#!/usr/bin/python3 -S") == ("-S",)
    assert kb.shebang_flags("#! /usr/bin/python3") == ()
    assert kb.shebang_flags("import sys") == ()


def test_installed_layout_missing_says_how_to_install(tmp_path) -> None:
    try:
        kb.installed_layout(tmp_path / "usr")
    except SystemExit as e:
        assert "make bench-kernel" in str(e) and str(tmp_path) in str(e)
    else:
        raise AssertionError("no error for a missing install")


def test_live_count_counts_each_kind_and_forgets_removed_devices(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(kb, "SYS", tmp_path)

    def dev(name: str, kind: str, state: str) -> None:
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "cntrltype").write_text(kind + "\n")
        (tmp_path / name / "state").write_text(state + "\n")

    count = kb.LiveCount()
    dev("nvme0", "discovery", "live")
    dev("nvme1", "io", "connecting")
    assert count.poll() == (1, 0)
    dev("nvme1", "io", "live")
    dev("nvme2", "io", "live")
    assert count.poll() == (1, 2)
    for f in ("cntrltype", "state"):
        os.remove(tmp_path / "nvme0" / f)
    os.rmdir(tmp_path / "nvme0")
    assert count.poll() == (0, 2)


def test_connect_phase_row_is_first_to_all_live_per_controller_beside_the_floor() -> None:
    runs = [{"1st IOC live": 15.0, "all live": 41.95}, {"1st IOC live": 14.0, "all live": 38.5}]
    assert kb.connect_phase_row(runs, 50, [12.0, 13.0]) == "525 ms / 250 ms"
    assert kb.connect_phase_row(runs, 50, []) == "525 ms / -"
    assert kb.connect_phase_row([{"all live": 3.0}], 3, [1.0]) == "-"
