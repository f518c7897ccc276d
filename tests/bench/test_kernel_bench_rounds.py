"""bench/kernel_bench.py: settings, round-robin order, per-round ratios, the linearity check."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import kernel_bench as kb


def test_settings_defaults_are_three_rounds_after_one_warm_up_every_peer() -> None:
    cfg = kb.settings({})
    assert (cfg.runs, cfg.warmup, cfg.scales, cfg.parts) == (3, 1, (3, 50, 200), "all")
    assert cfg.peers == ("floor", "cli", "upstream", "ours")


def test_settings_read_a_500_run_of_ours_alone_with_the_scales_sorted() -> None:
    cfg = kb.settings({"BENCH_PEERS": "ours", "BENCH_SCALES": "500, 50", "BENCH_RUNS": "1",
                       "BENCH_WARMUP": "0"})  # fmt: skip
    assert (cfg.peers, cfg.scales, cfg.runs, cfg.warmup) == (("ours",), (50, 500), 1, 0)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"BENCH_PEERS": "ours,nvmecli"}, "BENCH_PEERS='ours,nvmecli': unknown nvmecli"),
        ({"BENCH_PEERS": " , "}, "BENCH_PEERS=' , ': empty"),
        ({"BENCH_RUNS": "0"}, "BENCH_RUNS='0': expected a whole number >= 1"),
        ({"BENCH_RUNS": "two"}, "BENCH_RUNS='two'"),
        ({"BENCH_WARMUP": "-1"}, "BENCH_WARMUP='-1': expected a whole number >= 0"),
        ({"BENCH_SCALES": "3,x"}, "BENCH_SCALES='x'"),
        ({"BENCH_SCALES": "50,50"}, "BENCH_SCALES='50,50': a scale is listed twice"),
        ({"BENCH_PARTS": "floors"}, "BENCH_PARTS='floors'"),
    ],
)
def test_settings_name_the_bad_variable_and_value(environ, named) -> None:
    with pytest.raises(ValueError) as e:
        kb.settings(environ)
    assert named in str(e.value)


def test_host_main_refuses_bad_settings_before_installing_or_booting(monkeypatch, capsys) -> None:
    monkeypatch.setenv("BENCH_PEERS", "everyone")
    monkeypatch.setattr(kb, "install", lambda: pytest.fail("installed despite bad settings"))
    monkeypatch.setattr(kb.subprocess, "run", lambda *a, **k: pytest.fail("booted the VM"))
    assert kb.host_main([]) == 2
    assert "BENCH_PEERS='everyone': unknown everyone" in capsys.readouterr().err


@given(st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=6, unique=True))
def test_rotated_lets_each_peer_go_first_once_per_cycle(items) -> None:
    firsts = [kb.rotated(items, k)[0] for k in range(len(items))]
    assert firsts == items
    for k in range(2 * len(items)):
        turn = kb.rotated(items, k)
        assert sorted(turn) == sorted(items)
        assert turn == [items[(k + i) % len(items)] for i in range(len(items))]


def test_ratio_rows_compare_ours_with_each_peer_within_the_same_round_only() -> None:
    rounds = [
        {"serial": 10.0, "cli": 20.0, "upstream": 30.0, "ours": 15.0},
        {"serial": 5.0, "cli": 10.0, "ours": 6.0},  # upstream failed in this round
        {"serial": 8.0, "cli": 12.0, "upstream": 12.0, "ours": 12.0},
    ]
    assert kb.ratio_rows(rounds) == [
        ("ours / serial floor", "1.50x, 1.20x, 1.50x; median 1.50x"),
        ("ours / nvme connect-all", "0.75x, 0.60x, 1.00x; median 0.75x"),
        ("ours / upstream 2.4.1", "0.50x, 1.00x; median 0.75x"),
    ]


def test_ratio_rows_without_ours_or_peers_are_empty() -> None:
    assert kb.ratio_rows([{"ours": 5.0}]) == []
    assert kb.ratio_rows([{"serial": 1.0, "cli": 2.0}]) == []


def test_linearity_allows_1_25x_the_linear_ratio_at_every_scale_above_50() -> None:
    got = kb.linearity({3: 20.0, 50: 40.0, 200: 200.0, 500: 500.0})
    assert got == [(200, 5.0, 5.0, True), (500, 12.5, 12.5, True)]
    (n, ratio, limit, ok), = kb.linearity({50: 40.0, 200: 200.4})
    assert (n, limit, ok) == (200, 5.0, False) and ratio > 5.0


def test_linearity_catches_a_quadratic_cost_and_needs_the_50_figure() -> None:
    quadratic = {50: 2500.0, 200: 40000.0, 500: 250000.0}
    assert [ok for *_, ok in kb.linearity(quadratic)] == [False, False]
    assert kb.linearity({3: 1.0, 200: 50.0}) == []
