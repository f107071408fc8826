"""The two lr rules as the first, untuned CPU study plans them: under `same` every batch size trains with
one lr (the history's lr column, step by step), under `scaled` the lr grows with B / B0 after a
warm-up (Goyal et al.), worked out by hand."""

import math

import pandas as pd
import pytest

from samlib.study.params import load_params, plan_cells
from samlib.study.selections import in_lr_rule
from samlib.train import train_and_evaluate


def _planned(tmp_path):
    params = load_params("params/cpu_untuned.yaml")
    runs = [(cell.notebook, c) for cell in plan_cells(params, tmp_path) for c in cell.configs]
    return pd.DataFrame([{"notebook": nb, "optimizer": c.optimizer, "sam": c.sam, "m": c.m, "batch_size": c.batch_size,
                          "base_batch_size": c.base_batch_size, "lr_scaling": c.lr_scaling, "lr": c.scaled_lr,
                          "config": c} for nb, c in runs if nb != "lr_scaling"])


def test_the_same_rule_gives_one_lr_at_every_batch_size_and_the_scaled_rule_b_over_b0(tmp_path):
    df = _planned(tmp_path)
    for optimizer, same_lr in (("momentum", 0.05), ("adam", 0.001)):
        fam = df[df["optimizer"] == optimizer]
        same = in_lr_rule(fam, "same")
        assert set(same["batch_size"]) == {32, 1000} and set(same["lr"]) == {same_lr}
        scaled = in_lr_rule(fam, "scaled")
        expected = {32: 0.005, 1000: 0.005 * 1000 / 32} if optimizer == "momentum" else {
            32: 0.001, 1000: 0.001 * math.sqrt(1000 / 32)}
        for bs, lr in expected.items():
            got = list(scaled[scaled["batch_size"] == bs]["lr"])
            assert got and all(x == pytest.approx(lr) for x in got), (optimizer, bs, got)


def test_a_same_rule_run_trains_with_that_lr_at_every_step(tmp_path):
    df = _planned(tmp_path)
    lrs = []
    for bs in (32, 1000):
        row = df[(df["notebook"] == "baseline") & (df["lr_scaling"] == "none") & (df["batch_size"] == bs)].iloc[0]
        short = row["config"].replace(run_dir=None, epochs=2, loss_milestones=[], epoch_milestones=[], seed=0)
        history = train_and_evaluate(short).history
        lrs += list(history["lr"])
    assert lrs == [pytest.approx(0.05, rel=1e-7)] * len(lrs)
