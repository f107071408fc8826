"""The tuning rule and the batch-size curve's fit (samlib.study.curve) on synthetic numbers whose
answers are known: a validation curve with its minimum at a known lr, and S(B) made from known S_min
and B_crit."""

import math

import numpy as np
import pytest

from samlib.study.curve import GRID_FACTOR, chosen_lr, fit_critical_batch, next_lr, warmup_steps


def val_loss(lr: float) -> float:
    return (math.log10(lr) + 1.5) ** 2  # lowest at lr = 10^-1.5 = 0.0316


def test_the_grid_extends_until_its_best_lr_is_interior():
    tried = {lr: val_loss(lr) for lr in (0.1, 0.316)}
    while (lr := next_lr(tried)) is not None:
        tried[lr] = val_loss(lr)
        assert len(tried) < 10
    choice = chosen_lr(tried)
    assert choice["lr"] == pytest.approx(0.1 / GRID_FACTOR) and choice["interior"]
    assert sorted(tried) == pytest.approx([0.01, 0.0316, 0.1, 0.316], rel=1e-2)  # one value past the best


def test_a_diverged_neighbour_bounds_the_grid_and_all_failed_goes_lower():
    tried = {0.01: 0.5, 0.0316: 0.3, 0.1: None}  # 0.1 diverged
    assert next_lr(tried) is None and chosen_lr(tried)["bounded_by_failure"]
    assert next_lr({0.1: None, 0.316: float("nan")}) == pytest.approx(0.1 / GRID_FACTOR)
    assert next_lr({0.1: 0.2, 0.316: 0.3}) == pytest.approx(0.1 / GRID_FACTOR)  # best at the low edge
    assert next_lr({0.1: 0.3, 0.316: 0.2}) == pytest.approx(0.316 * GRID_FACTOR)  # best at the high edge


def test_the_critical_batch_fit_recovers_known_parameters():
    s_min, b_crit = 200.0, 256.0
    sizes = [32, 64, 128, 256, 512, 1024, 2048] * 3
    rng = np.random.default_rng(0)
    steps = [s_min * (1 + b_crit / b) * (1 + 0.01 * rng.standard_normal()) for b in sizes]
    fit = fit_critical_batch(sizes, steps)
    assert fit["b_crit"] == pytest.approx(b_crit, rel=0.05) and fit["s_min"] == pytest.approx(s_min, rel=0.05)
    assert fit["bounded"] and fit["lo"] < b_crit < fit["hi"]
    exact = fit_critical_batch([32, 256, 2048], [s_min * (1 + b_crit / b) for b in (32, 256, 2048)])
    assert exact["b_crit"] == pytest.approx(b_crit) and exact["s_min"] == pytest.approx(s_min)
    assert math.isnan(fit_critical_batch([32, 32, 32], [1, 2, 3])["b_crit"])  # one batch size: no curve


def test_the_warmup_is_a_stated_fraction_with_a_floor():
    assert warmup_steps(2451) == 123  # 5 % of the steps to the first milestone
    assert warmup_steps(224) == 50  # the floor
    assert warmup_steps(1000, fraction=0.1, floor=10) == 100
