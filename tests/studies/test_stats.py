"""The report's statistics on made-up results whose answers are known by hand."""

from __future__ import annotations

import math

import pytest

from nestor_ds.studies import stats

# arm -> seed -> data set -> L2RE
RESULTS = {
    "base": {
        0: {"a": 0.10, "b": 0.50, "c": 0.30},
        1: {"a": 0.12, "b": 0.54, "c": 0.30},
        2: {"a": 0.14, "b": 0.52, "c": 0.30},
    },
    "better": {
        0: {"a": 0.08, "b": 0.40, "c": 0.31},
        1: {"a": 0.09, "b": 0.44, "c": 0.31},
        2: {"a": 0.13, "b": 0.42, "c": 0.31},
    },
    "worse": {0: {"a": 0.20, "b": 0.60}, 1: {"a": 0.22, "b": 0.64}},
}


def test_mean_and_sample_std_over_seeds() -> None:
    t = stats.table(RESULTS)
    assert t["a"]["base"].mean == pytest.approx(0.12) and t["a"]["base"].std == pytest.approx(0.02)
    assert t["b"]["worse"].n == 2 and t["b"]["worse"].std == pytest.approx(math.sqrt(0.0008))
    assert "worse" not in t["c"]  # an arm without that data set is absent, not zero
    assert stats.summarize([0.5]).std == 0.0


def test_paired_difference_and_its_t_interval() -> None:
    arm = {s: v["a"] for s, v in RESULTS["better"].items()}
    base = {s: v["a"] for s, v in RESULTS["base"].items()}
    d = stats.paired_difference(arm, base)
    # differences -0.02, -0.03, -0.01: mean -0.02, sd 0.01, t(0.975, 2) = 4.302653
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert d.n == 3 and d.mean == pytest.approx(-0.02)
    assert d.low == pytest.approx(-0.02 - half) and d.high == pytest.approx(-0.02 + half)
    assert not d.decided  # three seeds this noisy cannot exclude 0
    b = stats.paired_difference(
        {s: v["b"] for s, v in RESULTS["better"].items()}, {s: v["b"] for s, v in RESULTS["base"].items()}
    )
    assert b.mean == pytest.approx(-0.10) and b.high < 0 and b.decided  # the same -0.10 on every seed
    one = stats.paired_difference({0: 1.0}, {0: 0.5, 1: 0.7})
    assert one.n == 1 and one.low is None and not one.decided
    assert stats.paired_difference({5: 1.0}, {0: 1.0}) is None  # no seed in common


def test_wins_best_of_all_and_against_the_baseline() -> None:
    assert stats.best_arms(RESULTS) == {"a": "better", "b": "better", "c": "base"}
    assert stats.wins(RESULTS) == {"base": 1, "better": 2, "worse": 0}
    assert stats.wins_over(RESULTS, "base") == {"better": (2, 3), "worse": (0, 2)}


def test_a_diverged_arm_never_wins() -> None:
    nan = float("nan")
    results = {"ok": {0: {"a": 0.5, "b": nan}}, "blown": {0: {"a": nan, "b": nan}}}
    assert stats.best_arms(results) == {"a": "ok"}  # b: every arm diverged, no best
    assert stats.wins(results) == {"ok": 1, "blown": 0}
