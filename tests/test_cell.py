"""A cell's loss-target runs: copied from their target-free twin only when the target could not
have stopped them; trained (and stopped at the target) otherwise."""

from samlib import io
from samlib.study.cell import run_cell

BASE = {"dataset": "mnist5k", "steps": 3, "lr": 0.05, "verbose": 0}
SHARP = {"subset": 64, "measures": ["sam"]}


def test_unreachable_target_reuses_the_twin_and_reachable_target_trains(tmp_path):
    runs = run_cell(tmp_path / "c", 128, [0], BASE, {"target_loss": [None, 0.01, 100.0]}, SHARP, log=None)
    by_target = {row.target_loss if row.target_loss == row.target_loss else None: row for row in runs.itertuples()}
    free, never, always = (io.read_json(f"{by_target[t].run_dir}/metrics.json") for t in (None, 0.01, 100.0))
    assert free["stop_reason"] == "steps" and free["loss_smoothed_min"] > 0.01
    # 0.01 is below every smoothed loss of the twin: the same computation, copied not retrained
    assert never.get("reused_from") and never["test_loss"] == free["test_loss"]
    # 100 is above the first step's loss: a run of its own that stops after one step
    assert always["stop_reason"] == "target_loss" and always["steps"] == 1 and "reused_from" not in always
