"""One training run: `train_and_evaluate(config) -> RunResult`, writing its run directory.

`train_and_evaluate` is a list of steps, each a function with one job: `prepare_data`, `start_run`,
`seed_everything`, `samlib.models.build_network` + `samlib.optimizers.wrap` + `compile_model` (the base
optimizer of `samlib.optimizers.make_optimizer`), `make_evaluators`, `fit` (watched by
`samlib.monitor.RunMonitor`), `final_evaluation`, `run_metrics`, `write_run`. This module holds the run
and its steps only: the optimizers are `samlib.optimizers`', the callback that checks, stops and
snapshots is `samlib.monitor`'s, the run folder's names and status rule are `samlib.rundir`'s.

Run directory (all files written atomically; the names are `samlib.rundir`'s):
    config.json        the validated Config (``run_dir`` null: the folder is where the file is)
    history.csv        per epoch: loss, accuracy (train, running mean with dropout on), val_loss,
                       val_accuracy (validation split), epoch_seconds (training only), steps
                       (cumulative), lr; SAM runs also grad_norm and perturbation_norm (epoch means)
    metrics.json       final train/val/test loss and accuracy on the whole splits in inference mode
                       (`Evaluator`), converged, stop_reason, status, step_seconds (steady state),
                       wall_seconds, samples_per_second, steps, epochs_run, and ``environment``:
                       where it ran (`devices.environment`: versions, processor, GPUs); with
                       ``record_predictions``, ``test_correct`` (`samlib.rundir.encode_correct`)
    model.weights.h5   the trained network's weights (the bare CNN, not the SAM wrapper)
    snapshots/<milestone>.weights.h5   the live weights at each milestone reached (see below)

Stop rules: a step budget (`steps`), an epoch budget (`epochs`), or milestones (`samlib.milestones`:
`loss_milestones` and `target_loss` on the inference-mode training loss, checked on a
`samlib.monitor.CheckSchedule` that aims at the largest one not yet reached; `epoch_milestones` after
exactly that many epochs; `evals_milestones` at the first step with that many gradient evaluations spent),
capped by `steps` or else `epochs`. At each milestone the run records a **snapshot** (metrics.json
``snapshots``: step, epoch, train/val/test loss and accuracy, weight norm; its weights under
``snapshots/``) and trains on until every milestone is reached. A loss milestone's snapshot holds the
check that reached it, so its ``train_loss`` is <= the milestone; the run's last loss check is the
``train_loss`` it reports when it stopped there, so a run that stopped with every milestone reached
(``stop_reason`` ``milestones``; ``target_loss`` for a run given only a loss target) reports a
``train_loss`` at or below its last loss milestone. With ``match_tolerance``, a loss milestone's
snapshot is at the first step whose loss is <= it (the checks go step by step near it) and also
records ``check_before`` ({step, train_loss} of the check before, which was above it) and ``mismatch``
= ln(milestone / train_loss); with ``record_predictions``, every snapshot records ``test_correct`` and
``n_test``. Milestones never reached are ``milestones_missing``; a run with loss
milestones is ``converged`` when it reached all of them. A run whose training loss stays at the loss of
a uniform guess is stopped once detected and is ``collapsed``, as is an ok run that ends at chance
after the patience (`samlib.rundir.final_status`); a non-finite loss is ``diverged``.
The validation split (carved from the training images,
`data.split_validation`) is what settings are chosen on; the test split is read at the snapshots and
after training, for the report of chosen settings only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import keras
import pandas as pd

from samlib import backends, devices, io, milestones
from samlib.config import Config
from samlib.data import Data, load_data, split_validation
from samlib.evaluation import Evaluator, make_loss
from samlib.models import build_network
from samlib.monitor import RunMonitor, check_cadence
from samlib.optimizers import make_optimizer, wrap
from samlib.rundir import COLLAPSED, CONFIG, DIVERGED, HISTORY, METRICS, OK, RUNNING, WEIGHTS
from samlib.rundir import encode_correct, final_status, snapshot_weights


@dataclasses.dataclass
class RunResult:
    """What `train_and_evaluate` returns: the config, metrics.json's contents, the history, the network."""

    config: Config
    metrics: dict[str, Any]
    history: pd.DataFrame
    model: keras.Model  # the trained network (not the SAM wrapper)
    run_dir: Path | None = None


# ---------------------------------------------------------------------- one run, step by step
def prepare_data(config: Config, data: Data | None = None) -> Data:
    """The run's data set with its validation split: `data` as `load_data(config)` gives it (loaded if
    None); one without a validation split gets it carved here when ``config.val_fraction > 0``."""
    data = data if data is not None else load_data(config)
    if data.x_val is None and config.val_fraction > 0:
        data = split_validation(data, config.val_fraction)
    return data


def start_run(config: Config) -> Path | None:
    """The run directory (None: `config.run_dir` unset), now holding config.json (the config without
    `run_dir`: the folder is where the file is, and a committed record holds no machine path) and a metrics.json
    that says `RUNNING` until `write_run` replaces it."""
    if not config.run_dir:
        return None
    run_dir = Path(config.run_dir)
    io.write_json(run_dir / CONFIG, {**config.to_dict(), "run_dir": None})
    io.write_json(run_dir / METRICS, {"status": RUNNING})
    return run_dir


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and the backend's random generators (`keras.utils.set_random_seed`) and
    make TensorFlow's ops deterministic: the same config and seed give identical metrics on CPU."""
    backends.seed_everything(seed)


def compile_model(config: Config, model: keras.Model, steps_per_epoch: int) -> keras.Model:
    """Compile `model` (the network or its SAM wrapper) with the run's optimizer (`make_optimizer`,
    loss-scaled under mixed_float16), loss, accuracy metric, XLA choice and steps per execution."""
    optimizer = make_optimizer(config, steps_per_epoch)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer, loss=make_loss(), metrics=["accuracy"], jit_compile=devices.resolve_jit(config),
        steps_per_execution=_steps_per_execution(config, steps_per_epoch),
    )
    return model


def _steps_per_execution(config: Config, steps_per_epoch: int) -> int:
    """`steps_per_execution`, but never more than the check cadence of a loss-target run (callbacks,
    and so checks, only see every k-th step) nor more than an epoch; 1 for a loss-target run with
    ``match_tolerance``, which may check any step, and for a run with `evals_milestones` (reached at an
    exact step)."""
    k = min(config.steps_per_execution, steps_per_epoch)
    has_loss_checks = config.target_loss is not None or bool(config.loss_milestones)
    if (has_loss_checks and config.match_tolerance is not None) or config.evals_milestones:
        return 1
    return min(k, check_cadence(config, steps_per_epoch)) if has_loss_checks else k


def make_evaluators(config: Config, network: keras.Model, data: Data) -> dict[str, Evaluator]:
    """Inference-mode evaluators of the bare network on the "train", "test" and (if it has one) "val"
    splits, sharing their compiled functions."""
    evaluators = {"train": Evaluator(network, data.x_train, data.y_train, config.eval_batch_size)}
    evaluators["test"] = evaluators["train"].split(data.x_test, data.y_test)
    if data.x_val is not None and len(data.x_val):
        evaluators["val"] = evaluators["train"].split(data.x_val, data.y_val)
    return evaluators


@dataclasses.dataclass
class Training:
    """What `fit` leaves: its monitor (stop reason, checks, steady-state timing), the per-epoch history,
    the wall-clock seconds of Keras' fit, and the optimizer steps taken."""

    monitor: RunMonitor
    history: pd.DataFrame
    wall_seconds: float
    steps: int


def fit(config: Config, model: keras.Model, data: Data, evaluators: dict[str, Evaluator],
        steps_per_epoch: int) -> Training:
    """Train `model` on the training split until a stop rule of `config` says stop (`RunMonitor`:
    step budget, every milestone reached, collapse, divergence; else the epoch budget)."""
    epochs = math.ceil(config.steps / steps_per_epoch) if config.steps else config.epochs
    monitor = RunMonitor(config, steps_per_epoch, evaluators, data.num_classes)
    start = time.perf_counter()
    logs = model.fit(
        data.x_train,
        data.y_train,
        batch_size=config.batch_size,
        epochs=epochs,
        callbacks=[monitor],
        shuffle=True,
        verbose=config.verbose,
    )
    wall = time.perf_counter() - start
    history = history_frame(monitor.rows, logs.history)
    return Training(monitor, history, wall, int(model.optimizer.iterations.numpy()))


def history_frame(rows: list[dict[str, float]], logs: dict[str, list]) -> pd.DataFrame:
    """history.csv: the monitor's per-epoch rows (epoch, epoch_seconds, steps, lr, val_loss,
    val_accuracy) with Keras' per-epoch logs beside them (loss, accuracy with dropout on; SAM's norms)."""
    history = pd.DataFrame(rows)
    for key, values in logs.items():
        history[key] = values[: len(history)]
    return history


def final_evaluation(monitor: RunMonitor, evaluators: dict[str, Evaluator], steps: int,
                     predictions: bool = False) -> dict[str, Any]:
    """(loss, accuracy) of the trained network on "train", "val" (NaN without that split) and "test",
    in inference mode. A run whose last loss check (or snapshot) was at its last step reports that
    check as its train split's: it saw these very weights. With `predictions`, also "test_correct":
    which test images it classifies correctly (`Evaluator.with_correct`, the pass of the test accuracy)."""
    last = monitor.last_check
    scores: dict[str, Any] = {
        "train": last[1] if last is not None and last[0] == steps else evaluators["train"](),
        "val": evaluators["val"]() if "val" in evaluators else (math.nan, math.nan),
    }
    if predictions:
        *test, scores["test_correct"] = evaluators["test"].with_correct()
        scores["test"] = tuple(test)
    else:
        scores["test"] = evaluators["test"]()
    return scores


def _status(monitor: RunMonitor, scores: dict[str, tuple[float, float]], num_classes: int, steps: int,
            steps_per_epoch: int) -> str:
    """A finished run's status: `DIVERGED` (a non-finite loss in training, or a final train or test loss
    that is not finite), `COLLAPSED` (stopped at chance by the monitor), else `samlib.rundir.final_status`
    of `OK` (`COLLAPSED` when the final scores are at chance after the patience)."""
    (train_loss, train_acc), (test_loss, _) = scores["train"], scores["test"]
    if monitor.stop_reason == DIVERGED or not all(math.isfinite(v) for v in (train_loss, test_loss)):
        return DIVERGED
    if monitor.stop_reason == COLLAPSED:
        return COLLAPSED
    return final_status(OK, train_loss, train_acc, num_classes, steps, steps_per_epoch)


def run_metrics(config: Config, data: Data, training: Training, scores: dict[str, tuple[float, float]],
                replicas: int) -> dict[str, Any]:
    """metrics.json of a finished run (module docstring): status and stop reason, the final `scores`,
    split sizes, timings and throughput, steps, the device and where the run ran (``environment``)."""
    monitor, history, wall, steps = training.monitor, training.history, training.wall_seconds, training.steps
    (train_loss, train_acc), (val_loss, val_acc), (test_loss, test_acc) = (scores[k] for k in ("train", "val", "test"))
    n_train = len(data.x_train)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    train_seconds = float(history["epoch_seconds"].sum()) if len(history) else wall
    status = _status(monitor, scores, data.num_classes, steps, steps_per_epoch)
    stop_reason = monitor.stop_reason if status == OK or monitor.stop_reason == COLLAPSED else status
    loss_milestones = [m for m in monitor.tracker.milestones if m.kind == milestones.LOSS]
    missing = [m.name for m in monitor.tracker.missing]
    return {
        "status": status,
        "stop_reason": stop_reason,
        # converged: every loss milestone (or the target) reached, None for a run without one
        "converged": None if not loss_milestones else bool(
            status == OK and not any(m in monitor.tracker.missing for m in loss_milestones)),
        "snapshots": monitor.snapshots,
        "milestones_missing": missing,
        "num_classes": data.num_classes,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "n_train": n_train,
        "n_val": 0 if data.x_val is None else int(len(data.x_val)),
        "n_test": int(len(data.x_test)),
        "wall_seconds": wall,
        "train_seconds": train_seconds,
        "step_seconds": monitor.step_seconds,
        "check_seconds": monitor.check_seconds,
        "snapshot_seconds": monitor.snapshot_seconds,
        "n_checks": 0 if monitor.schedule is None else len(monitor.schedule.checks),
        "samples_per_second": samples_seen(steps, steps_per_epoch, n_train, config.batch_size)
        / max(train_seconds, 1e-9),
        "steps": steps,
        "epochs_run": len(history),
        "lr_effective": config.scaled_lr,
        "device": devices.describe(),
        "replicas": replicas,
        "environment": devices.environment(),
        # which test images the network gets right (`Config.record_predictions`; `rundir.decode_correct`)
        **({"test_correct": encode_correct(scores["test_correct"])} if "test_correct" in scores else {}),
    }


def write_run(run_dir: Path | None, history: pd.DataFrame, network: keras.Model, metrics: dict[str, Any],
              snapshots: dict[str, list] | None = None) -> None:
    """Write history.csv, the network's weights, each milestone's snapshot weights (`snapshots`: name ->
    weights) and metrics.json into `run_dir` (nothing if None); metrics.json last, as its status marks
    the run complete."""
    if run_dir is None:
        return
    io.write_text(run_dir / HISTORY, history.to_csv(index=False))
    io.atomic_write(run_dir / WEIGHTS, network.save_weights)
    if snapshots:
        final = network.get_weights()
        for name, weights in snapshots.items():
            network.set_weights(weights)
            io.atomic_write(snapshot_weights(run_dir, name), network.save_weights)
        network.set_weights(final)
    io.write_json(run_dir / METRICS, metrics)


def samples_seen(steps: int, steps_per_epoch: int, n_train: int, batch_size: int) -> int:
    """Examples processed in `steps` steps (each epoch's last batch may be partial)."""
    full_epochs, rest = divmod(steps, steps_per_epoch)
    return full_epochs * n_train + rest * batch_size


def train_and_evaluate(config: Config, data: Data | None = None) -> RunResult:
    """Train the CNN as `config` says, evaluate it, and (if `config.run_dir`) write the run directory.

    `data`: the run's data set as `load_data(config)` gives it (loaded if None); if it has no
    validation split and ``config.val_fraction > 0``, the split is carved here.
    Same config and seed → identical metrics on CPU (seeded Keras RNG and op determinism).
    """
    data = prepare_data(config, data)
    run_dir = start_run(config)
    seed_everything(config.seed)
    steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
    strategy = devices.make_strategy(config)
    with devices.precision(config.precision), strategy.scope():
        network = build_network(config, data)
        model = compile_model(config, wrap(config, network), steps_per_epoch)
        evaluators = make_evaluators(config, network, data)
        training = fit(config, model, data, evaluators, steps_per_epoch)
        scores = final_evaluation(training.monitor, evaluators, training.steps, config.record_predictions)
    metrics = run_metrics(config, data, training, scores, strategy.num_replicas_in_sync)
    write_run(run_dir, training.history, network, metrics, training.monitor.snapshot_weights)
    return RunResult(config=config, metrics=metrics, history=training.history, model=network, run_dir=run_dir)
