"""Training runs: files, determinism, stop rules, divergence, learning on the embedded data."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from samlib.config import Config
from samlib.data import Data
from samlib.cli import main as cli_main
from samlib.optimizers import WarmupSchedule
from samlib.rundir import is_complete, load_run
from samlib.train import samples_seen, train_and_evaluate


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
    assert json.loads((run / "config.json").read_text()) == {**cfg.to_dict(), "run_dir": None}  # no machine path
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps"] == 2 * 3 and metrics["epochs_run"] == 2
    for key in ("train_loss", "train_accuracy", "val_loss", "test_loss", "test_accuracy", "wall_seconds",
                "samples_per_second"):
        assert math.isfinite(metrics[key])
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2] and list(history["steps"]) == [3, 6]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds", "lr", "grad_norm",
            "perturbation_norm"} <= set(history.columns)
    assert "test_loss" not in history  # the test split is read once, after training
    np.testing.assert_allclose(history["perturbation_norm"], cfg.rho, rtol=1e-5)  # ‖ε̂‖ = ρ for SAM
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


def _inference_loss(network, x, y) -> float:
    """Mean softmax cross-entropy of the network in inference mode, by hand in numpy."""
    logits = network(x, training=False).numpy().astype("float64")
    shifted = logits - logits.max(1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return float(-log_softmax[np.arange(len(y)), y].mean())


def test_loss_target_stop_has_inference_train_loss_at_or_below_target():
    from samlib.data import split_validation

    data = tiny_data(n_train=160)
    cfg = config(epochs=40, target_loss=1.5, optimizer="momentum", lr=0.05, batch_size=16, dropout=0.5)
    result = train_and_evaluate(cfg, data)
    m = result.metrics
    assert m["stop_reason"] == "target_loss" and m["converged"] is True
    assert m["train_loss"] <= cfg.target_loss
    # the reported train loss is the inference-mode (dropout off) loss on the training split, by hand
    train = split_validation(data, cfg.val_fraction)
    assert m["train_loss"] == pytest.approx(_inference_loss(result.model, train.x_train, train.y_train), rel=1e-5)
    assert m["val_loss"] == pytest.approx(_inference_loss(result.model, train.x_val, train.y_val), rel=1e-5)
    assert m["n_train"] == 140 and m["n_val"] == 20


def test_capped_run_that_misses_its_target_is_not_converged():
    m = train_and_evaluate(config(steps=3, target_loss=1e-6), tiny_data()).metrics
    assert m["stop_reason"] == "steps" and m["steps"] == 3 and m["converged"] is False
    assert m["train_loss"] > 1e-6 and m["n_checks"] >= 1
    assert train_and_evaluate(config(steps=2), tiny_data()).metrics["converged"] is None  # no target


def test_loss_target_is_checked_within_epochs_on_mnist5k():
    cfg = Config.from_dict(dict(optimizer="momentum", lr=0.05, batch_size=32, epochs=1, verbose=0, target_loss=1.0))
    metrics = train_and_evaluate(cfg).metrics  # 3,500 training images: 110 steps per epoch
    assert metrics["stop_reason"] == "target_loss" and 1 < metrics["steps"] < 110
    assert metrics["train_loss"] <= 1.0


def test_check_schedule_tightens_near_the_target_by_log_linear_extrapolation():
    from samlib.monitor import CheckSchedule

    s = CheckSchedule(target=0.1, cadence=10)
    assert not s.due(9) and s.due(10)
    s.record(10, 2.0)
    assert s.next == 10 + 40  # one check: no rate yet, 4 cadences
    s.record(50, 1.0)  # rate ln2/40 per step; ln(1/0.1)/rate = 132.9 steps; half of it
    assert s.next == 50 + int(math.log(10) / (math.log(2) / 40) / 2)
    s.record(116, 0.11)  # close: rate ln(1/0.11)/66, predicted 2.9 steps -> clipped up to the cadence
    assert s.next == 116 + 10
    s.record(126, 0.2)  # the loss rose: back to 4 cadences
    assert s.next == 126 + 40
    far = CheckSchedule(target=1e-9, cadence=10)
    far.record(10, 2.0), far.record(20, 1.99)
    assert far.next == 20 + 160  # clipped at 16 cadences


def test_a_wider_check_window_estimates_the_rate_over_older_checks():
    """check_window = 4: the rate runs from the oldest of the last four checks, so a noisy near-flat
    last pair (the Fashion-MNIST plateau that overshot 0.3 to 0.246) no longer sends the next check
    16 cadences away."""
    from samlib.monitor import CheckSchedule

    checks = [(1015, 0.375), (1152, 0.3517), (1321, 0.3373), (1563, 0.3196), (1708, 0.3172)]
    two, four = CheckSchedule(target=0.3, cadence=34), CheckSchedule(target=0.3, cadence=34, window=4)
    for step, loss in checks:
        two.record(step, loss), four.record(step, loss)
    # the last pair: rate ln(0.3196/0.3172)/145 -> 1,072 steps to go; half of it, 4 epochs at batch 32
    assert two.next == 1708 + 536
    # checks 1152..1708: rate ln(0.3517/0.3172)/556 -> ln(0.3172/0.3)/rate = 300 steps to go; half
    rate = math.log(0.3517 / 0.3172) / (1708 - 1152)
    assert four.next == 1708 + int(math.log(0.3172 / 0.3) / rate / 2) == 1708 + 150
    # fewer checks than the window: the oldest there is
    short = CheckSchedule(target=0.1, cadence=10, window=4)
    short.record(10, 2.0), short.record(50, 1.0)
    assert short.next == 50 + int(math.log(10) / (math.log(2) / 40) / 2)


def test_step_seconds_exclude_the_first_call_that_traces(monkeypatch):
    """Steady state: the first compiled call (tracing, 50 s here) and the loss checks do not count."""
    from types import SimpleNamespace

    from samlib import monitor as M

    clock = {"t": 0.0}
    monkeypatch.setattr(M.time, "perf_counter", lambda: clock["t"])
    iterations = {"n": 0}
    model = SimpleNamespace(optimizer=SimpleNamespace(iterations=SimpleNamespace(numpy=lambda: iterations["n"])),
                            stop_training=False)

    def slow_eval():
        clock["t"] += 7.0  # a loss check: not training time
        return (5.0, 0.9)  # far from the target, not at chance

    monitor = M.RunMonitor(config(target_loss=0.01, check_every=2), 10, {"train": slow_eval}, num_classes=10)
    monitor.set_model(model)
    monitor.on_epoch_begin(0)
    for step, seconds in enumerate([50.0, 1.0, 1.0, 1.0, 1.0], start=1):
        clock["t"] += seconds
        iterations["n"] = step
        monitor.on_train_batch_end(step - 1, {"loss": 1.0})
    assert monitor.step_seconds == pytest.approx(1.0)
    assert monitor.check_seconds == pytest.approx(7.0)  # one check, at step 2 (the next 4 cadences later)


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
    assert cli_main(["train", str(params), "--set", "batch_size=16", "--set", f"run_dir={tmp_path / 'cli'}"]) == 0
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["steps"] == 2
    assert cli_main(["train", str(params), "--set", "batch_sise=16"]) == 2
    assert "batch_sise" in capsys.readouterr().err


def test_steps_per_execution_changes_speed_not_results():
    """k steps per compiled call: the same updates (and a loss-target run still checks at its cadence)."""
    data = tiny_data()
    one = train_and_evaluate(config(sam="sam", epochs=2), data).metrics
    three = train_and_evaluate(config(sam="sam", epochs=2, steps_per_execution=3), data).metrics
    assert three["train_loss"] == one["train_loss"] and three["steps"] == one["steps"] == 6
    from samlib.train import _steps_per_execution

    assert _steps_per_execution(config(steps_per_execution=8, target_loss=0.1), steps_per_epoch=110) == 8
    assert _steps_per_execution(config(steps_per_execution=8, target_loss=0.1), steps_per_epoch=4) == 1  # cadence 1
    assert _steps_per_execution(config(steps_per_execution=8), steps_per_epoch=4) == 4  # at most an epoch


def test_a_run_retrained_from_its_config_json_reproduces_its_metrics(tmp_path):
    """What docs/results/ promises: `python -m samlib train RUN/config.json` gives the same numbers."""
    cfg = Config.from_dict(dict(optimizer="momentum", lr=0.02, batch_size=256, steps=4, target_loss=1.5,
                                steps_per_execution=2, verbose=0, run_dir=str(tmp_path / "a")))
    first = train_and_evaluate(cfg).metrics
    assert cli_main(["train", str(tmp_path / "a" / "config.json"), "--set", f"run_dir={tmp_path / 'b'}"]) == 0
    again = json.loads((tmp_path / "b" / "metrics.json").read_text())
    for key in ("train_loss", "val_loss", "test_loss", "test_accuracy", "steps"):
        assert again[key] == first[key], key


def test_a_run_records_where_it_ran(tmp_path):
    """metrics.json names the software versions and the hardware, so a run can be compared with its re-run."""
    import platform

    import keras
    import tensorflow as tf

    train_and_evaluate(config(tmp_path, steps=1), tiny_data())
    env = json.loads((tmp_path / "run" / "metrics.json").read_text())["environment"]
    assert env["python"] == platform.python_version() and env["tensorflow"] == tf.__version__
    assert env["keras"] == keras.__version__ and env["numpy"] == np.__version__
    assert isinstance(env["processor"], str) and env["processor"]
    assert env["gpus"] == [str(tf.config.experimental.get_device_details(g).get("device_name", g.name))
                           for g in tf.config.list_physical_devices("GPU")]
    assert env["cpu_count"] >= 1


def test_warmup_steps_sets_the_lr_of_each_step(tmp_path):
    """84 training images at batch 32: 3 steps an epoch; history's lr is the one of the next step."""
    result = train_and_evaluate(config(tmp_path, epochs=2, warmup_steps=10, warmup_epochs=5.0), tiny_data())
    np.testing.assert_allclose(result.history["lr"], [0.05 * 4 / 10, 0.05 * 7 / 10], rtol=1e-6)
    plain = train_and_evaluate(config(epochs=2), tiny_data()).metrics
    assert result.metrics["train_loss"] != plain["train_loss"]


def test_a_run_folder_from_before_the_newer_keys_is_still_complete(tmp_path):
    """config.json written before warmup_steps, match_tolerance and record_predictions existed: the keys
    take their defaults (off), so the run is the same run; asking for one of them on is another run."""
    cfg = config(tmp_path, steps=1)
    train_and_evaluate(cfg, tiny_data())
    path = tmp_path / "run" / "config.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in saved.items()
                                if k not in ("warmup_steps", "match_tolerance", "record_predictions")}))
    assert is_complete(tmp_path / "run", cfg)
    for newer in (dict(warmup_steps=0), dict(match_tolerance=0.1), dict(record_predictions=True)):
        assert not is_complete(tmp_path / "run", cfg.replace(**newer)), newer
