"""Milestone snapshots of a real run (mnist5k), checked against numbers computed here: the snapshot's
weights give its recorded losses (numpy cross-entropy of the network's logits), a loss milestone's
snapshot is at or below it, an epoch milestone's is after exactly that many epochs' steps, a re-run
gives the same snapshots, and a dead run is stopped as collapsed."""

import json
import math
import types

import numpy as np
import pytest

from samlib.config import Config, SharpnessSettings
from samlib.data import load_data, split_validation
from samlib.models import build_network
from samlib.monitor import RunMonitor
from samlib.rundir import is_collapsed, is_measured, is_stuck, measure_run, snapshot_weights
from samlib.train import train_and_evaluate

TIMING = ("wall_seconds", "train_seconds", "step_seconds", "check_seconds", "snapshot_seconds",
          "samples_per_second")


def _numpy_loss_and_accuracy(network, x, y):
    logits = np.asarray(network(x, training=False), dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean()), float((logits.argmax(axis=1) == y).mean())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = Config(optimizer="momentum", lr=0.05, batch_size=128, loss_milestones=[0.5, 0.25],
                 epoch_milestones=[1], epochs=10, verbose=0,
                 run_dir=str(tmp_path_factory.mktemp("snap") / "run"))
    result = train_and_evaluate(cfg)
    return cfg, result


def test_every_milestone_has_a_snapshot_at_the_right_point(run):
    cfg, result = run
    m = result.metrics
    snaps = {s["milestone"]: s for s in m["snapshots"]}
    assert set(snaps) == {"loss=0.5", "loss=0.25", "epochs=1"} and m["milestones_missing"] == []
    steps_per_epoch = math.ceil(3500 / 128)  # mnist5k after the 1/8 validation split: 3,500 images
    assert snaps["epochs=1"]["step"] == steps_per_epoch and snaps["epochs=1"]["epoch"] == 1.0
    for name in ("loss=0.5", "loss=0.25"):
        assert snaps[name]["train_loss"] <= snaps[name]["at"]
    assert snaps["loss=0.5"]["step"] <= snaps["loss=0.25"]["step"]
    # the run stopped at its last milestone ("milestones": every one reached): that snapshot is its final state
    assert m["stop_reason"] == "milestones" and m["converged"] is True
    assert snaps["loss=0.25"]["step"] == m["steps"] and snaps["loss=0.25"]["train_loss"] == m["train_loss"]


def test_a_snapshots_weights_give_its_recorded_numbers(run):
    cfg, result = run
    data = load_data(cfg)
    network = build_network(cfg, data)
    for snap in result.metrics["snapshots"]:
        network.load_weights(snapshot_weights(cfg.run_dir, snap["milestone"]))
        for split, x, y in (("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val),
                            ("test", data.x_test, data.y_test)):
            loss, accuracy = _numpy_loss_and_accuracy(network, x, y)
            assert snap[f"{split}_loss"] == pytest.approx(loss, rel=2e-5), (snap["milestone"], split)
            assert snap[f"{split}_accuracy"] == pytest.approx(accuracy, abs=1e-9)
        norm = math.sqrt(sum(float((w.numpy().astype(np.float64) ** 2).sum()) for w in network.trainable_variables))
        assert snap["weight_norm"] == pytest.approx(norm, rel=1e-9)


def test_a_run_retrained_from_its_config_json_gives_its_snapshots(run, tmp_path):
    from samlib.cli import main as cli_main

    cfg, result = run
    config_json = __import__("pathlib").Path(cfg.run_dir) / "config.json"
    assert cli_main(["train", str(config_json), "--set", f"run_dir={tmp_path / 'again'}"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["snapshots"] == result.metrics["snapshots"]
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert Config.from_dict(saved) == cfg.replace(run_dir=None)  # config.json holds no machine path


def test_each_snapshot_is_measured_with_its_milestones_settings(run):
    cfg, _ = run
    settings = SharpnessSettings(subset=200, measures=("sam",), milestones={"loss=0.5": ()})
    measure_run(cfg.run_dir, settings)
    metrics = json.loads((__import__("pathlib").Path(cfg.run_dir) / "metrics.json").read_text())
    snaps = {s["milestone"]: s for s in metrics["snapshots"]}
    assert "sam_sharpness" not in snaps["loss=0.5"] and math.isfinite(snaps["loss=0.5"]["grad_norm"])
    assert snaps["epochs=1"]["sam_sharpness"] != snaps["loss=0.25"]["sam_sharpness"]
    assert snaps["loss=0.25"]["sam_sharpness"] == metrics["sam_sharpness"]  # the final weights
    assert is_measured(cfg.run_dir, settings) and not is_measured(cfg.run_dir, settings.replace(subset=100))


def test_a_milestone_never_reached_is_listed_and_the_run_is_not_converged(tmp_path):
    cfg = Config(optimizer="momentum", lr=0.05, batch_size=128, loss_milestones=[1.0, 1e-6], epochs=2, verbose=0)
    m = train_and_evaluate(cfg).metrics
    assert [s["milestone"] for s in m["snapshots"]] == ["loss=1"]
    assert m["milestones_missing"] == ["loss=1e-06"] and m["converged"] is False and m["stop_reason"] == "epochs"


def test_the_collapse_rule_by_hand():
    ln10 = math.log(10)  # 2.302585
    assert is_collapsed(ln10, 0.5, 10) and is_collapsed(0.951 * ln10, 0.5, 10)
    assert not is_collapsed(0.94 * ln10, 0.5, 10)
    assert is_collapsed(0.3, 0.15, 10) and not is_collapsed(0.3, 0.16, 10)  # accuracy <= 1.5 / K
    assert not is_collapsed(float("nan"), float("nan"), 10)


def test_the_in_training_stop_rule_by_hand():
    ln10 = math.log(10)
    assert is_stuck(ln10 * 1.009, 0.5, 10) and not is_stuck(ln10 * 1.02, 0.5, 10)  # within 1 % of ln K
    assert is_stuck(350.0, 0.10, 10) and is_stuck(ln10, 0.15, 10)  # at chance and no better than uniform
    assert not is_stuck(350.0, 0.16, 10)  # above chance: still learning something
    assert not is_stuck(2.0, 0.12, 10)  # at chance but below ln K by more than 1 %: a slow start
    assert not is_stuck(float("inf"), 0.1, 10) and not is_stuck(float("nan"), 0.1, 10)  # diverged, not stuck


def test_the_monitor_stops_a_run_stuck_at_a_large_finite_loss_only_after_its_patience():
    # Fashion-MNIST's LookSAM at lr 0.316 (batch 2048) sat at loss 350-700 and 10 % accuracy to its cap
    monitor = RunMonitor.__new__(RunMonitor)
    monitor.num_classes, monitor.steps_per_epoch = 10, 3  # patience: max(2 * 3, 100) = 100 steps
    monitor.schedule = types.SimpleNamespace(next=500, cadence=8)
    assert not monitor._collapsed(99, (350.0, 0.1)) and monitor.schedule.next == 107  # confirms soon
    assert monitor._collapsed(100, (350.0, 0.1))
    assert not monitor._collapsed(400, (350.0, 0.2)) and not monitor._collapsed(400, (1.0, 0.9))


def test_a_dead_run_stops_as_collapsed_long_before_its_cap():
    # momentum SGD at lr 0.3, batch 32: the ReLUs die and the loss sits at ln 10 (measured: 2.31 from ~step 140)
    cfg = Config(optimizer="momentum", lr=0.3, batch_size=32, loss_milestones=[0.05], epochs=8, verbose=0)
    m = train_and_evaluate(cfg).metrics
    assert m["status"] == "collapsed" and m["stop_reason"] == "collapsed"
    assert m["steps"] < 8 * 110 // 2 and m["snapshots"] == []
    assert abs(m["train_loss"] - math.log(10)) <= 0.05 * math.log(10)


@pytest.mark.parametrize("sam, k, expected_step", [("none", 5, 24), ("sam", 5, 12), ("looksam", 5, 20)])
def test_an_evaluations_milestone_snapshots_at_the_step_its_count_is_spent(tmp_path, sam, k, expected_step):
    # 24 gradient evaluations: 24 SGD steps, 12 SAM steps (2 a step), 20 LookSAM steps at k = 5 (20 + 4 SAM
    # steps: the 1st, 6th, 11th, 16th); the snapshot's numbers are the network's there
    cfg = Config(optimizer="momentum", lr=0.05, batch_size=256, sam=sam, looksam_k=k, evals_milestones=[24],
                 epochs=10, steps_per_execution=8, verbose=0, train_subset=1200, run_dir=str(tmp_path / "run"))
    metrics = train_and_evaluate(cfg).metrics
    (snap,) = metrics["snapshots"]
    assert snap["milestone"] == "evals=24" and snap["kind"] == "evals" and snap["step"] == expected_step
    assert metrics["stop_reason"] == "milestones" and metrics["steps"] == expected_step
    data = load_data(cfg)
    network = build_network(cfg, data)
    network.load_weights(snapshot_weights(cfg.run_dir, "evals=24"))
    loss, accuracy = _numpy_loss_and_accuracy(network, data.x_test, data.y_test)
    assert snap["test_loss"] == pytest.approx(loss, rel=2e-5) and snap["test_accuracy"] == pytest.approx(accuracy)
