"""Intervals against hand-computed and published cases; verdicts flip where their interval crosses."""
from __future__ import annotations

import pytest
import torch

from purify_lib import attacks, evaluate, results, stats
from purify_lib.profiles import get_profile
from purify_lib.results import Results


def test_wilson_matches_hand_computed_intervals():
    # 5 of 10: centre 0.5, half-width 1.96/(1 + 1.96²/10)·sqrt(0.025 + 1.96²/400) = 0.26341
    assert stats.wilson(0.5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    # 0 of 10: the upper end is z²/(n + z²) = 3.8415/13.8415
    assert stats.wilson(0.0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    low, high = stats.wilson(1.0, 1000)
    assert high == 1.0 and low == pytest.approx(0.99617, abs=1e-5)


def test_wilson_narrows_with_n_and_rejects_bad_input():
    wide, narrow = stats.wilson(0.9, 100), stats.wilson(0.9, 10_000)
    assert narrow[1] - narrow[0] < (wide[1] - wide[0]) / 5
    for value, n in ((1.2, 10), (-0.1, 10), (0.5, 0)):
        with pytest.raises(ValueError):
            stats.wilson(value, n)


def test_newcombe_difference_matches_his_example():
    # Newcombe (1998), example (a): 56/70 − 48/80 = 0.2000, method 10 interval 0.0524 to 0.3339
    d, low, high = stats.difference(48 / 80, 80, 56 / 70, 70)
    assert (d, low, high) == pytest.approx((0.2, 0.0524, 0.3339), abs=1e-4)


def test_paired_bootstrap_interval_covers_a_known_shift():
    a = torch.randn(400, generator=torch.Generator().manual_seed(0))
    d = stats.paired_bootstrap(a, a + 0.5)
    assert d["low"] == pytest.approx(0.5) and d["high"] == pytest.approx(0.5)
    noise = torch.randn(400, generator=torch.Generator().manual_seed(1))
    d = stats.paired_bootstrap(a, a + 0.2 + noise)
    assert d["low"] < d["mean"] < d["high"] and d["high"] - d["low"] < 0.3


def test_verdict_flips_where_the_interval_crosses_the_threshold():
    assert stats.verdict(0.81, 0.86, 0.80) == stats.HOLDS
    assert stats.verdict(0.70, 0.79, 0.80) == stats.FAILS
    assert stats.verdict(0.78, 0.83, 0.80) == stats.INCONCLUSIVE
    for value, expected in ((0.85, stats.HOLDS), (0.80, stats.INCONCLUSIVE), (0.75, stats.FAILS)):
        assert stats.verdict(*stats.wilson(value, 1000), 0.80) == expected
    with pytest.raises(ValueError):
        stats.verdict(0.9, 0.8, 0.5)


def test_results_carry_intervals_for_proportions_only():
    run = Results("00_test", get_profile("smoke"))
    common = dict(table="t", dataset="mnist", classifier="c", defense="d", attack="a", threat="none", eps=0.0)
    run.add(**common, metric="accuracy", value=0.5, n=10)
    run.add(**common, metric="psnr", value=21.0, n=10)
    frame = run.frame
    assert frame.loc[0, ["low", "high"]].tolist() == pytest.approx([0.23659, 0.76341], abs=1e-5)
    assert frame.loc[1, ["low", "high"]].isna().all()


def test_calibration_flags_a_deliberately_weakened_attack(mnist_model, mnist_data):
    x, y = mnist_data["x_test"][:100], mnist_data["y_test"][:100]
    run = Results("00_test", get_profile("smoke"))
    strong = (attacks.pgd, dict(eps=0.3, alpha=0.05, steps=40))
    weak = (attacks.pgd, dict(eps=0.3, alpha=0.001, steps=2))  # two steps of 0.001 after a random start
    failed = evaluate.calibration_rows(run, dataset="mnist", classifier_name="small_cnn", model=mnist_model,
                                       x=x, y=y, attacks={"pgd": strong, "pgd_weak": weak})
    assert failed == ["pgd_weak"]
    success = run.frame.set_index("attack")["value"]
    assert success["pgd"] >= 0.99 and success["pgd_weak"] <= 0.3  # measured: 1.0 and 0.01
    common = dict(dataset="mnist", classifier="small_cnn", threat="whitebox", eps=0.3, metric="accuracy",
                  n=100)
    for attack in ("pgd", "pgd_weak"):
        run.add(table="t", defense="d", attack=attack, value=0.5, **common)
    frame, note = results.compare(run, "t")
    assert frame["attack"].tolist() == ["pgd", "pgd_weak (uncalibrated)"] and "uncalibrated" in note


def test_calibration_status_separates_a_small_budget_from_a_weak_attack():
    # the board's L2 2.0 at quick: PGD 0.670 and APGD-CE 0.691 of 97 correct images agree: the budget
    assert evaluate.calibration_status(0.670, 97, 0.691, 97) == evaluate.BUDGET_LIMITED
    assert evaluate.calibration_status(0.670, 97, 0.900, 97) == evaluate.WEAK  # APGD-CE far ahead
    assert evaluate.calibration_status(0.670, 97) == evaluate.WEAK  # nothing to compare with
    assert evaluate.calibration_status(0.990, 97, 0.5, 97) == evaluate.CALIBRATED_STATUS


def test_claim_rules_flip_when_their_numbers_cross_the_threshold():
    # "AE-GAN+rs keeps at least 0.80" on 1,000 images; on 40 the same value is inconclusive
    assert stats.at_least(0.85, 1000, 0.80) == stats.HOLDS
    assert stats.at_least(0.75, 1000, 0.80) == stats.FAILS
    assert stats.at_least(0.85, 40, 0.80) == stats.INCONCLUSIVE
    assert stats.at_most(0.10, 1000, 0.20) == stats.HOLDS and stats.at_most(0.30, 1000, 0.20) == stats.FAILS
    # "GanDef within 5 points of Pure PGD" on 1,000 images each
    assert stats.within(0.90, 1000, 0.90, 1000, 0.05) == stats.HOLDS
    assert stats.within(0.90, 1000, 0.70, 1000, 0.05) == stats.FAILS
    assert stats.within(0.90, 1000, 0.86, 1000, 0.05) == stats.INCONCLUSIVE
    # "both at least 60 points above vanilla"
    assert stats.ahead_by(0.0, 1000, 0.90, 1000, 0.60) == stats.HOLDS
    assert stats.ahead_by(0.0, 1000, 0.50, 1000, 0.60) == stats.FAILS
    assert stats.combine(stats.HOLDS, stats.HOLDS) == stats.HOLDS
    assert stats.combine(stats.HOLDS, stats.INCONCLUSIVE) == stats.INCONCLUSIVE
    assert stats.combine(stats.INCONCLUSIVE, stats.FAILS) == stats.FAILS
    with pytest.raises(ValueError):
        stats.combine("maybe")
