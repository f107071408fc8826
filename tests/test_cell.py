"""A study cell (samlib.study.cell) with real training on mnist5k: resume without retraining, measure
only what is not measured with the same settings (by a cell or by ``python -m samlib sharpness``), and
loss-target runs that stop at their target or at their cap."""

from pathlib import Path

import pytest

from samlib import cli, io
from samlib.config import SharpnessSettings
from samlib.study.selections import target_of
from samlib.study import layout
from samlib.study.cell import run_cell

BASE = {"dataset": "mnist5k", "steps": 3, "lr": 0.05, "verbose": 0}
SHARP = {"subset": 64, "measures": ["sam"]}


def test_loss_target_runs_of_a_cell_stop_at_their_target_or_their_cap(tmp_path):
    """A grid axis target_loss: [null, T] beside a step budget: every run trains on its own; one whose
    target is reached stops there (converged), one whose target is not stops at the budget."""
    base = {**BASE, "check_every": 1}
    runs = run_cell(tmp_path / "c", 128, [0], base, {"target_loss": [None, 0.01, 100.0]}, SHARP, log=None)
    assert list(runs["action"]) == ["trained+measured"] * 3
    by_target = {target_of(row.stop_rule): row for row in runs.itertuples()}  # 'target_loss=0.01 (cap 3 steps)'
    assert set(by_target) == {None, 0.01, 100.0}
    free, never, always = (io.read_json(f"{by_target[t].run_dir}/metrics.json") for t in (None, 0.01, 100.0))
    assert free["stop_reason"] == "steps" and free["steps"] == 3 and free["converged"] is None
    assert never["stop_reason"] == "steps" and never["steps"] == 3 and never["converged"] is False
    # 100 is above the first check's loss: a run of its own that stops after one step
    assert always["stop_reason"] == "target_loss" and always["steps"] == 1 and always["converged"] is True


def test_run_cell_resumes_without_retraining_and_measures_unmeasured_runs(tmp_path):
    sharp = {"subset": 64, "max_iter": 1, "iters": 2, "measures": ["keskar", "sam"], "epsilons": [1e-3, 5e-4]}
    root = layout.cell_dir(tmp_path, "baseline", 128)
    first = run_cell(root, 128, [0, 1], BASE, {}, sharp, log=None)
    assert list(first["action"]) == ["trained+measured"] * 2
    assert {"keskar_1e-03", "keskar_5e-04", "sam_sharpness"} <= set(first.columns)
    run = Path(first["run_dir"].iloc[0])
    weights = (run / "model.weights.h5").stat().st_mtime_ns
    # simulate a kill between training and measuring: drop the sharpness keys from metrics.json
    metrics = io.read_json(run / "metrics.json")
    kept = {k: v for k, v in metrics.items() if not (k.startswith(("keskar", "sam_sharp", "sharpness")))}
    io.write_json(run / "metrics.json", kept)
    again = run_cell(root, 128, [0, 1], BASE, {}, sharp, log=None)
    assert list(again["action"]) == ["measured", "skipped (complete)"]
    assert (run / "model.weights.h5").stat().st_mtime_ns == weights  # not retrained
    assert again["keskar_1e-03"].iloc[0] == pytest.approx(first["keskar_1e-03"].iloc[0], rel=1e-6)
    assert again["test_loss"].tolist() == first["test_loss"].tolist()
    # other settings → measured again (the settings are part of the measurement)
    third = run_cell(root, 128, [0], BASE, {}, {**sharp, "measures": ["sam"]}, log=None)
    assert list(third["action"]) == ["measured"]


def test_a_run_measured_by_the_sharpness_cli_is_not_measured_again_by_its_cell(tmp_path, capsys):
    root = layout.cell_dir(tmp_path, "baseline", 64)
    trained = run_cell(root, 64, [0], BASE, {}, {"subset": 32, "measures": ["sam"]}, log=None)
    run = trained["run_dir"].iloc[0]
    # the CLI with its own settings (not the cell's): recorded in metrics.json as the cell records them
    argv = ["sharpness", run, "--subset", "48", "--measures", "sam", "lambda_max", "--iters", "3", "--seed", "2"]
    assert cli.main(argv) == 0
    assert "sam_sharpness" in capsys.readouterr().out
    metrics = io.read_json(Path(run) / "metrics.json")
    settings = SharpnessSettings(subset=48, measures=("sam", "lambda_max"), iters=3, seed=2)
    assert metrics["sharpness_settings"] == settings.to_dict() and metrics["sharpness_subset"] == 48
    assert layout.is_measured(run, settings)
    # a study cell that contains this run with the same settings does not measure it again
    again = run_cell(root, 64, [0], BASE, {}, settings.to_dict(), log=None)
    assert list(again["action"]) == ["skipped (complete)"]
    assert io.read_json(Path(run) / "metrics.json")["sam_sharpness"] == metrics["sam_sharpness"]
    # the CLI's defaults are SharpnessSettings' defaults
    assert cli.main(["sharpness", run, "--iters", "2", "--max-iter", "1", "--subset", "40"]) == 0
    assert io.read_json(Path(run) / "metrics.json")["sharpness_settings"] == SharpnessSettings(
        iters=2, max_iter=1, subset=40).to_dict()


def test_the_sharpness_cli_rejects_bad_settings_and_missing_runs(tmp_path, capsys):
    tmp_path.joinpath("run").mkdir()
    assert cli.main(["sharpness", str(tmp_path / "run"), "--subset", "-1"]) == 2
    assert "'subset' has value -1" in capsys.readouterr().err
    assert cli.main(["sharpness", str(tmp_path / "nosuch")]) == 2
    assert cli.main(["sharpness", str(tmp_path / "run")]) == 2  # no config.json
    assert "cannot load run" in capsys.readouterr().err
