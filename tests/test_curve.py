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


def test_with_steps_the_choice_is_the_fastest_lr_within_the_tolerance():
    losses = {0.01: 0.160, 0.0316: 0.158, 0.1: 0.161, 0.316: 0.30}
    steps = {0.01: 700, 0.0316: 300, 0.1: 100, 0.316: 50}
    choice = chosen_lr(losses, steps, tolerance=0.005)  # 0.01 and 0.1 are within 0.005 of 0.158; 0.1 is fastest
    assert choice["lr"] == 0.1 and choice["best_lr"] == 0.0316 and choice["interior"]
    assert chosen_lr(losses, steps, tolerance=0.001)["lr"] == 0.0316  # only the best is within 0.001
    assert chosen_lr(losses)["lr"] == 0.0316  # without steps: the lowest loss
    del losses[0.316], steps[0.316]  # the fastest at the grid's top edge: one step past it
    assert next_lr(losses, steps=steps, tolerance=0.005) == pytest.approx(0.1 * GRID_FACTOR)
    assert chosen_lr({0.1: 0.2, 0.316: 0.2}, {0.1: 50, 0.316: 50})["lr"] == 0.316  # a tie: the larger lr


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


def test_the_curve_table_reads_steps_per_method_and_batch_size_from_snapshots():
    import pandas as pd

    from samlib.study.curve import curve_table

    s_min, b_crit = 100.0, 128.0
    rows = []
    for bs in (32, 128, 512):
        for seed in range(3):
            for sam in ("none", "sam"):
                steps = s_min * (1 + b_crit / bs) * (1.2 if sam == "sam" else 1.0) + seed
                rows.append({"notebook": "curve", "run": f"sam={sam},seed={seed}", "optimizer": "momentum", "sam": sam,
                             "m": None, "batch_size": bs, "seed": seed, "dataset": "mnist5k", "status": "ok",
                             "lr_scaling": "none", "lr_tuned": True, "base_batch_size": 32, "milestone": "loss=0.1",
                             "kind": "loss", "at": 0.1, "reached": not (bs == 512 and seed == 2 and sam == "sam"),
                             "step": steps, "epoch": steps * bs / 3500, "b_simple": 50.0 if bs == 32 else None})
    table = curve_table(pd.DataFrame(rows))
    assert [(e["method"], e["lr_rule"]) for e in table] == [("SGD+momentum", "tuned"), ("SGD+momentum+SAM", "tuned")]
    base, sam = table
    p32 = base["points"][0]
    assert p32["batch_size"] == 32 and p32["steps"]["mean"] == pytest.approx(s_min * 5 + 1) and p32["steps"]["n"] == 3
    assert p32["grad_evals"]["mean"] == pytest.approx(p32["steps"]["mean"]) and p32["b_simple"] == 50.0  # its registry key
    assert sam["grad_evals_per_step"] == 2.0 and sam["points"][0]["grad_evals"]["mean"] == pytest.approx(
        2 * sam["points"][0]["steps"]["mean"])
    assert sam["points"][2]["missed"] == 1 and sam["points"][2]["steps"]["n"] == 2  # one run missed 0.1
    assert base["fit"]["b_crit"] == pytest.approx(b_crit, rel=0.05)  # the seed offsets barely move it
