"""The findings' statistics against values worked out by hand here."""

import math

import numpy as np
import pytest

from samlib.study.stats import gap_closure, loglog_slope, mean_ci, paired_difference

T_975_2 = 4.302652729911275  # Student t quantile, 2 degrees of freedom (tables)
T_975_3 = 3.182446305284263  # 3 degrees of freedom


def test_mean_ci_is_mean_plus_minus_t_s_over_root_n():
    ci = mean_ci([1.0, 2.0, 6.0])  # mean 3, s = sqrt(((−2)² + (−1)² + 3²)/2) = sqrt(7)
    assert ci["mean"] == pytest.approx(3.0)
    assert ci["hi"] - ci["mean"] == pytest.approx(T_975_2 * math.sqrt(7) / math.sqrt(3))
    assert mean_ci([5.0])["n"] == 1 and math.isnan(mean_ci([5.0])["lo"])
    assert mean_ci([float("nan"), 1.0, 3.0])["n"] == 2  # non-finite values never enter


def test_paired_difference_uses_per_seed_differences_over_shared_seeds():
    a = {0: 1.0, 1: 2.0, 2: 3.0, 3: 10.0, 9: 1.0}
    b = {0: 0.5, 1: 1.0, 2: 2.0, 3: 9.0}  # differences 0.5, 1, 1, 1 (seed 9 is unpaired)
    d = paired_difference(a, b)
    assert d["seeds"] == [0, 1, 2, 3] and d["mean"] == pytest.approx(0.875)
    s = math.sqrt(((0.5 - 0.875) ** 2 + 3 * 0.125**2) / 3)  # = 0.25
    assert d["lo"] == pytest.approx(0.875 - T_975_3 * s / 2)
    assert d["significant"]  # 0.875 ± 0.398 excludes 0
    # an unpaired (Welch) interval would be far wider: the pairing is what makes it significant
    assert not paired_difference({0: 1.0, 1: 5.0}, {0: 2.0, 1: 3.0})["significant"]


def test_gap_closure_estimate_and_bootstrap_interval():
    base_small = {0: 0.10, 1: 0.12, 2: 0.11}
    base_large = {0: 0.20, 1: 0.22, 2: 0.21}  # gap 0.10 at every seed
    sam_large = {0: 0.15, 1: 0.17, 2: 0.16}  # SAM recovers 0.05 of it at every seed
    g = gap_closure(base_large, sam_large, base_small)
    assert g["estimate"] == pytest.approx(0.5) and g["n_seeds"] == 3
    # every bootstrap resample has the same per-seed shifts, so the ratio is 0.5 in all of them
    assert g["ci_low"] == pytest.approx(0.5) and g["ci_high"] == pytest.approx(0.5)
    assert g["significant_gap"] and g["gap"]["mean"] == pytest.approx(0.10)
    assert g["sam_gain"]["mean"] == pytest.approx(0.05)


def test_gap_closure_by_hand_with_noise_and_a_gap_that_is_noise():
    bs, bl, sl = {0: 1.0, 1: 2.0}, {0: 2.0, 1: 4.0}, {0: 1.0, 1: 4.0}
    g = gap_closure(bl, sl, bs, n_boot=2000)
    assert g["estimate"] == pytest.approx((3.0 - 2.5) / (3.0 - 1.5))
    # resamples of two seeds: {0,0} -> (2-1)/(2-1) = 1, {1,1} -> 0/2 = 0, mixed -> 1/3: the CI spans 0..1
    assert g["ci_low"] == pytest.approx(0.0) and g["ci_high"] == pytest.approx(1.0)
    assert not g["significant_gap"]  # differences 1 and 2 with n = 2: t-interval 1.5 ± 6.35 includes 0
    flat = gap_closure({0: 1.0, 1: 1.2}, {0: 1.0, 1: 1.1}, {0: 1.2, 1: 1.0})
    assert not flat["significant_gap"]


def test_loglog_slope_recovers_a_power_law_and_its_interval():
    b = np.array([32, 128, 512, 32, 128, 512], dtype=float)
    lr = 0.01 * (b / 32) ** 0.5 * np.array([1.0, 1.0, 1.0, 1.2, 1.2, 1.2])  # sqrt rule, two seed offsets
    fit = loglog_slope(b, lr)
    assert fit["slope"] == pytest.approx(0.5) and fit["n"] == 6
    # by hand: the residuals are ±ln(1.2)/2 about the line, so stderr = sqrt(Σr²/(n−2) / Σ(x−x̄)²)
    lx = np.log(b)
    resid = np.full(6, math.log(1.2) / 2)
    se = math.sqrt((resid**2).sum() / 4 / ((lx - lx.mean()) ** 2).sum())
    assert fit["stderr"] == pytest.approx(se)
    assert fit["hi"] - fit["slope"] == pytest.approx(2.7764451051977987 * se)  # t(0.975, 4)
    assert math.isnan(loglog_slope([32, 32], [0.1, 0.2])["slope"])  # one batch size: no slope
