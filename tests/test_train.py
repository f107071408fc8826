"""Training runs: files, determinism, stop rules, divergence, learning on the embedded data."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from samlib.config import Config
from samlib.data import Data
from samlib.train import WarmupSchedule, is_complete, load_run, main, samples_seen, train_and_evaluate


def tiny_data(n_train=96, n_test=32, seed=0) -> Data:
    rng = np.random.default_rng(seed)
    x = rng.random((n_train + n_test, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n_train + n_test).astype("int32")
    return Data(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def config(tmp_path=None, **kw) -> Config:
    values = dict(batch_size=32, epochs=2, verbose=0, lr=0.05)
    values.update(kw)
    if tmp_path is not None:
        values["run_dir"] = str(tmp_path / "run")
    return Config.from_dict(values)


def test_run_directory_files_and_contents(tmp_path):
    cfg = config(tmp_path, sam="sam")
    result = train_and_evaluate(cfg, tiny_data())
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text()) == cfg.to_dict()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps"] == 2 * 3 and metrics["epochs_run"] == 2
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "wall_seconds", "samples_per_second"):
        assert math.isfinite(metrics[key])
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2] and list(history["steps"]) == [3, 6]
    assert {"loss", "accuracy", "test_loss", "test_accuracy", "epoch_seconds", "lr"} <= set(history.columns)
    # final metrics are evaluated in inference mode on the whole sets: check against the model itself
    data = tiny_data()
    logits = result.model(data.x_test, training=False).numpy()
    log_softmax = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    np.testing.assert_allclose(metrics["test_loss"], -log_softmax[np.arange(32), data.y_test].mean(), rtol=1e-4)
    assert metrics["test_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == data.y_test))
    assert is_complete(run, cfg) and not is_complete(run, cfg.replace(seed=1))


def test_same_seed_gives_identical_metrics_and_other_seed_differs():
    data = tiny_data()
    a = train_and_evaluate(config(sam="sam", seed=3), data).metrics
    b = train_and_evaluate(config(sam="sam", seed=3), data).metrics
    c = train_and_evaluate(config(sam="sam", seed=4), data).metrics
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        assert a[key] == b[key]
    assert a["train_loss"] != c["train_loss"]


def test_step_budget_stops_after_exactly_that_many_steps():
    metrics = train_and_evaluate(config(steps=5, epochs=1), tiny_data()).metrics
    assert metrics["steps"] == 5 and metrics["stop_reason"] == "steps" and metrics["epochs_run"] == 2


def test_loss_target_stops_at_the_first_step_below_it():
    result = train_and_evaluate(config(epochs=20, target_loss=10.0), tiny_data())
    assert result.metrics["stop_reason"] == "target_loss" and result.metrics["steps"] == 1


def test_loss_target_is_checked_every_step_not_only_at_epoch_ends():
    cfg = Config.from_dict(dict(optimizer="momentum", lr=0.05, batch_size=32, epochs=1, verbose=0, target_loss=1.0))
    metrics = train_and_evaluate(cfg).metrics  # mnist5k: 125 steps per epoch
    assert metrics["stop_reason"] == "target_loss" and 1 < metrics["steps"] < 125
    assert metrics["loss_smoothed_min"] <= 1.0


def test_smoothed_loss_recovers_batch_losses_from_running_means():
    from samlib.train import SmoothedLoss

    losses, sizes = [3.0, 1.0, 2.0], [4, 4, 2]  # the last batch of the epoch is partial
    running = [np.average(losses[: k + 1], weights=sizes[: k + 1]) for k in range(3)]
    smoother, ema, seen = SmoothedLoss(decay=0.5), 0.0, []
    for t, (mean, n, loss) in enumerate(zip(running, sizes, losses), start=1):
        ema = 0.5 * ema + 0.5 * loss
        seen.append(smoother.update(mean, n))
        assert seen[-1] == pytest.approx(ema / (1 - 0.5**t))
    assert smoother.minimum == pytest.approx(min(seen))
    smoother.new_epoch()  # a new epoch's running mean starts again; the average carries on
    assert smoother.update(0.5, 4) == pytest.approx((0.5 * ema + 0.5 * 0.5) / (1 - 0.5**4))


def test_divergence_is_recorded_not_raised(tmp_path):
    result = train_and_evaluate(config(tmp_path, lr=1e12, optimizer="sgd", epochs=3), tiny_data())
    assert result.metrics["status"] == "diverged"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "diverged"
    assert is_complete(tmp_path / "run", config(tmp_path, lr=1e12, optimizer="sgd", epochs=3))


def test_incomplete_run_is_not_complete(tmp_path):
    cfg = config(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "run" / "metrics.json").write_text('{"status": "running"}')
    assert not is_complete(tmp_path / "run", cfg)
    assert not is_complete(tmp_path / "nothing", cfg)


def test_warmup_schedule_is_linear_from_base_to_scaled_lr():
    schedule = WarmupSchedule(0.1, 0.8, warmup_steps=10)
    assert [round(float(schedule(s)), 6) for s in (0, 5, 10, 50)] == [0.1, 0.45, 0.8, 0.8]
    assert float(WarmupSchedule(0.1, 0.8, 0)(0)) == pytest.approx(0.8)


def test_samples_seen_counts_partial_last_batches():
    assert samples_seen(steps=7, steps_per_epoch=3, n_train=70, batch_size=32) == 2 * 70 + 32


def test_learns_on_embedded_mnist5k_and_reloads(tmp_path):
    cfg = Config.from_dict(dict(optimizer="momentum", lr=0.05, batch_size=64, epochs=1, verbose=0, run_dir=str(tmp_path / "r")))
    result = train_and_evaluate(cfg)
    assert result.metrics["test_accuracy"] > 0.8  # chance is 0.1
    _, network = load_run(tmp_path / "r")
    for a, b in zip(network.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_cli_trains_with_overrides_and_rejects_bad_keys(tmp_path, capsys):
    params = tmp_path / "p.yaml"
    params.write_text("epochs: 1\nverbose: 0\nsteps: 2\n")
    assert main([str(params), "--set", "batch_size=16", "--set", f"run_dir={tmp_path / 'cli'}"]) == 0
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["steps"] == 2
    assert main([str(params), "--set", "batch_sise=16"]) == 2
    assert "batch_sise" in capsys.readouterr().err
