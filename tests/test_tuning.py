"""The tuning cell's self-extending grid (samlib.study.tuning) with training replaced by a synthetic
validation curve whose best lr is known (no TensorFlow): the grid grows one half-decade step past the
best and stops when the best is interior; a failed lr bounds it; the choices read back from the runs."""

import json
import math
import shutil

import pandas as pd
import pytest

from samlib.study import cell, tables, tuning


def fake_training(val_loss_of, fail=(), steps_of=lambda lr: 10):
    """A `cell.train_and_measure` that writes the run folder a finished run would have, its validation
    loss val_loss_of(lr) reached in steps_of(lr) steps (an lr in `fail` diverges)."""

    def train_and_measure(config, data, settings):
        run = config.run_dir
        import os

        os.makedirs(run, exist_ok=True)
        lr = config.lr
        diverged = any(math.isclose(lr, f) for f in fail)
        metrics = {"status": "diverged" if diverged else "ok", "converged": not diverged, "steps": steps_of(lr),
                   "train_loss": 0.1, "train_accuracy": 0.97, "val_loss": math.nan if diverged else val_loss_of(lr),
                   "val_accuracy": 0.9, "test_loss": 0.2, "test_accuracy": 0.95, "n_train": 3500}
        with open(f"{run}/config.json", "w") as f:
            json.dump(config.to_dict(), f)
        with open(f"{run}/metrics.json", "w") as f:
            json.dump(metrics, f)
        return ["trained"]

    return train_and_measure


def curve(lr):
    return (math.log10(lr) + 1.5) ** 2 + 0.1  # lowest at lr = 10^-1.5 = 0.0316


BASE = {"dataset": "mnist5k", "optimizer": "momentum", "epochs": 1, "loss_milestones": [0.1], "verbose": 0}


def test_the_grid_grows_past_the_best_and_stops_when_it_is_interior(tmp_path, monkeypatch):
    monkeypatch.setattr(cell, "train_and_measure", fake_training(curve))
    lines = []
    runs = tuning.tune_cell(tmp_path / "runs" / "tuning" / "64", 64, [0, 1], BASE, {"lr": [0.1, 0.316]},
                            data=object(), log=lines.append)
    assert sorted(set(runs["lr"].round(6))) == [0.01, 0.0316, 0.1, 0.316]  # 0.1 -> 0.0316 -> 0.01: interior
    assert len(runs) == 8 and set(runs["seed"]) == {0, 1}
    (entry,) = tuning.tuning_table(runs)
    assert entry["choice"]["lr"] == pytest.approx(0.0316) and entry["choice"]["interior"]
    assert entry["batch_size"] == 64 and [g["seeds"] for g in entry["grid"]] == [2, 2, 2, 2]
    assert entry["grid"][1]["val_loss"] == pytest.approx(curve(0.0316))
    assert "lr 0.0316 (interior;" in lines[0]


def test_a_diverged_lr_bounds_the_grid_per_method(tmp_path, monkeypatch):
    monkeypatch.setattr(cell, "train_and_measure", fake_training(lambda lr: 1 / lr, fail=(0.316,)))
    grid = {"lr": [0.1], "sam": ["none", "sam"]}
    runs = tuning.tune_cell(tmp_path / "runs" / "tuning" / "32", 32, [0, 1], BASE, grid, data=object(), log=None)
    table = tuning.tuning_table(runs)
    assert [t["sam"] for t in table] == ["none", "sam"]
    # one lr is at both edges: one step down (0.0316, worse), then up: 0.316 diverged, so 0.1 is bounded
    for t in table:
        assert t["choice"]["lr"] == pytest.approx(0.1) and t["choice"]["bounded_by_failure"]
        assert [g["lr"] for g in t["grid"]] == [0.0316, 0.1, 0.316] and [g["seeds_out"] for g in t["grid"]] == [0, 0, 2]


def test_tuning_needs_two_seeds_and_snaps_to_the_half_decade_grid(tmp_path):
    with pytest.raises(ValueError, match="at least 2 seeds"):
        tuning.tune_cell(tmp_path, 64, [0], BASE, {"lr": [0.1]})
    assert [tuning.half_decade(x) for x in (0.00999, 0.0316227, 0.1, 0.3162)] == [0.01, 0.0316, 0.1, 0.316]
    frame = tuning.choices_frame(pd.DataFrame(columns=tables.COLUMNS))
    assert list(frame.columns) == ["method", "batch_size", "lr", "settled", "grid"] and not len(frame)


def test_the_choice_is_the_fastest_lr_within_the_noise_and_its_grid_grows_past_it(tmp_path, monkeypatch):
    # nearly flat in the lr (0.1 is 2.5 % worse than 0.0316, within the 5 % floor; 0.316 10 % worse), and
    # steps to the milestone fall as 10/lr: the rule takes 0.1, and must try 0.316 to call it interior
    flat = lambda lr: 0.1 + 0.01 * (math.log10(lr) + 1.5) ** 2  # noqa: E731
    monkeypatch.setattr(cell, "train_and_measure", fake_training(flat, steps_of=lambda lr: round(10 / lr)))
    root = tmp_path / "runs" / "tuning" / "64"
    runs = tuning.tune_cell(root, 64, [0, 1], BASE, {"lr": [0.0316, 0.1]}, data=object(), log=None)
    assert sorted(set(runs["lr"].round(6))) == [0.0316, 0.1, 0.316]
    (entry,) = tuning.tuning_table(runs)
    choice = entry["choice"]
    assert choice["lr"] == pytest.approx(0.1) and choice["best_lr"] == pytest.approx(0.0316) and choice["interior"]
    assert choice["tolerance"] == pytest.approx(0.05 * 0.1)  # seeds agree exactly: the floor, 5 % of the best
    points = [{"lr": 0.0316}, {"lr": 0.1}]
    assert tuning.settled(root, points)
    for seed in (0, 1):  # without the runs past the choice, the cell is not settled: a re-run extends it
        shutil.rmtree(root / f"lr=0.316,seed={seed}")
    assert not tuning.settled(root, points)


def test_seed_noise_pools_the_sample_variances_of_the_lrs_that_did_not_fail():
    rec = lambda v: {"status": "ok", "converged": True, "val_loss": v}  # noqa: E731
    by_lr = {0.01: [rec(0.10), rec(0.12)], 0.1: [rec(0.20), rec(0.26)], 1.0: [rec(0.3), {"status": "collapsed"}]}
    # sample variances 0.0002 and 0.0018, one degree of freedom each: sqrt(0.002 / 2)
    assert tuning.seed_noise(by_lr) == pytest.approx(math.sqrt(0.001))
    assert tuning.seed_noise({0.1: [rec(0.2)]}) == 0.0
