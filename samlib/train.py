"""One training run: `train_and_evaluate(config) -> RunResult`, writing its run directory.

`train_and_evaluate` is a list of steps, each a function here with one job: `prepare_data`,
`start_run`, `seed_everything`, `build_network` + `wrap` + `compile_model`, `make_evaluators`, `fit`,
`final_evaluation`, `run_metrics`, `write_run`.

Run directory (all files written atomically; the names are `samlib.rundir`'s):
    config.json        the validated Config (``run_dir`` null: the folder is where the file is)
    history.csv        per epoch: loss, accuracy (train, running mean with dropout on), val_loss,
                       val_accuracy (validation split), epoch_seconds (training only), steps
                       (cumulative), lr; SAM runs also grad_norm and perturbation_norm (epoch means)
    metrics.json       final train/val/test loss and accuracy on the whole splits in inference mode
                       (`Evaluator`), converged, stop_reason, status, step_seconds (steady state),
                       wall_seconds, samples_per_second, steps, epochs_run, and ``environment``:
                       where it ran (`devices.environment`: versions, processor, GPUs)
    model.weights.h5   the trained network's weights (the bare CNN, not the SAM wrapper)
    snapshots/<milestone>.weights.h5   the live weights at each milestone reached (see below)

Stop rules: a step budget (`steps`), an epoch budget (`epochs`), or milestones (`samlib.milestones`:
`loss_milestones` and `target_loss` on the inference-mode training loss, checked on a `CheckSchedule`
that aims at the largest one not yet reached; `epoch_milestones` after exactly that many epochs),
capped by `steps` or else `epochs`. At each milestone the run records a **snapshot** (metrics.json
``snapshots``: step, epoch, train/val/test loss and accuracy, weight norm; its weights under
``snapshots/``) and trains on until every milestone is reached. A loss milestone's snapshot holds the
check that reached it, so its ``train_loss`` is <= the milestone; the run's last loss check is the
``train_loss`` it reports when it stopped there, so ``stop_reason == "target_loss"`` implies
``train_loss <= target_loss``. Milestones never reached are ``milestones_missing``; a run with loss
milestones is ``converged`` when it reached all of them. A run whose training loss stays at the loss of
a uniform guess (`samlib.rundir.is_collapsed`) is stopped once detected and is ``collapsed``; a
non-finite loss is ``diverged``. The validation split (carved from the training images,
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
import tensorflow as tf

from samlib import devices, io, milestones
from samlib.config import Config, load_yaml_mapping, parse_override
from samlib.data import Data, load_data, split_validation
from samlib.evaluation import Evaluator, make_loss
from samlib.models import build_network
from samlib.rundir import COLLAPSED, CONFIG, DIVERGED, HISTORY, METRICS, OK, RUNNING, WEIGHTS
from samlib.rundir import collapse_patience, is_collapsed
from samlib.rundir import SNAPSHOT_FIELDS, snapshot_weights
from samlib.rundir import is_complete, load_run  # noqa: F401  (part of this module's API)
from samlib.sam import SAM


@dataclasses.dataclass
class RunResult:
    config: Config
    metrics: dict[str, Any]
    history: pd.DataFrame
    model: keras.Model  # the trained network (not the SAM wrapper)
    run_dir: Path | None = None


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Goyal et al. 2017 gradual warm-up: lr rises linearly from `start` to `target` over
    `warmup_steps` steps, then stays at `target` (= lr · k for batch-size scale factor k)."""

    def __init__(self, start: float, target: float, warmup_steps: int) -> None:
        self.start, self.target, self.warmup_steps = float(start), float(target), int(warmup_steps)

    def __call__(self, step):
        if self.warmup_steps <= 0:
            return tf.constant(self.target, "float32")
        frac = tf.minimum(tf.cast(step, "float32") / self.warmup_steps, 1.0)
        return self.start + (self.target - self.start) * frac

    def get_config(self) -> dict:
        return {"start": self.start, "target": self.target, "warmup_steps": self.warmup_steps}


def make_optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr = WarmupSchedule(config.lr, config.scaled_lr, round(config.warmup_epochs * steps_per_epoch))
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr)
    if config.optimizer == "momentum":
        return keras.optimizers.SGD(lr, momentum=config.momentum)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)


def wrap(config: Config, network: keras.Model) -> keras.Model:
    """The model that `fit` trains: the bare network, or a SAM wrapper around it."""
    if config.sam == "none":
        return network
    if config.sam == "looksam":
        from samlib.looksam import LookSAM

        return LookSAM(network, rho=config.rho, k=config.looksam_k, alpha=config.looksam_alpha)
    return SAM(
        network,
        rho=config.rho,
        adaptive=config.sam == "asam",
        m=config.m,
        sync_perturbation=config.sync_perturbation,
        eta=config.asam_eta,
    )


class CheckSchedule:
    """When to evaluate the inference-mode training loss against ``target_loss`` (T).

    The base cadence is c = ``check_every`` steps (default: a quarter epoch, at least 1). Checks are
    sparser far from the target and tighten near it: after checks (s₁, L₁), …, (s₂, L₂) with L₂ > T, the
    loss is extrapolated log-linearly, Δ = ln(L₂/T) / r with r = ln(L₁/L₂)/(s₂ − s₁), and the next check
    comes after clip(⌊Δ/2⌋, c, 16c) steps (4c when the loss did not fall). (s₁, L₁) is the oldest of the
    last `window` checks (``check_window``; 2: the previous check). Losses fall slower than log-linearly,
    so the extrapolation is early rather than late: a run crosses T at most about c steps before the
    check that stops it -- unless noise hides the fall between two checks (a noisy plateau: SGD at batch
    32 on Fashion-MNIST went from 0.3172 to 0.2459 against T = 0.3 in one 16c wait); a wider window
    averages the noise out. Deterministic, so a run and its re-run check at the same steps.
    """

    def __init__(self, target: float, cadence: int, window: int = 2) -> None:
        # `target` may move on (the next milestone) once reached; the cadence and window stay
        self.target, self.cadence, self.window = float(target), max(1, int(cadence)), max(2, int(window))
        self.next = self.cadence
        self.checks: list[tuple[int, float]] = []

    def due(self, step: int) -> bool:
        return step >= self.next

    def record(self, step: int, loss: float) -> None:
        self.checks.append((step, loss))
        c, interval = self.cadence, 4 * self.cadence
        if len(self.checks) >= 2 and math.isfinite(loss) and loss > self.target:
            (s1, l1), (s2, l2) = self.checks[-self.window:][0], self.checks[-1]
            rate = (math.log(l1) - math.log(l2)) / max(s2 - s1, 1) if l1 > 0 and l2 > 0 else 0.0
            if rate > 0:
                interval = int(min(max(math.log(l2 / self.target) / rate / 2, c), 16 * c))
        self.next = step + interval


class _RunMonitor(keras.callbacks.Callback):
    """Stops on a step budget, on reaching every milestone (loss milestones checked in inference mode
    on a `CheckSchedule`, epoch milestones at epoch ends), on collapse or on a non-finite loss
    (divergence); takes the milestones' snapshots; times training in steady state.

    Time spent in loss checks, snapshots and the per-epoch validation is not training time.
    ``step_seconds`` is measured from the first callback on, so the first compiled call, which traces
    the graph, is excluded (with ``steps_per_execution = k`` that first call is k steps).
    """

    def __init__(self, config: Config, steps_per_epoch: int, evaluators: dict[str, Evaluator],
                 num_classes: int) -> None:
        super().__init__()
        self.config, self.steps_per_epoch, self.num_classes = config, steps_per_epoch, num_classes
        self.evaluators = evaluators
        self.train_eval, self.val_eval = evaluators["train"], evaluators.get("val")
        self.stop_reason = "steps" if config.steps is not None else "epochs"
        self.rows: list[dict[str, float]] = []
        self.tracker = milestones.Tracker(milestones.of_config(config))
        self.schedule = None
        if self.tracker.has_loss:
            self.schedule = CheckSchedule(self.tracker.next_loss, check_cadence(config, steps_per_epoch),
                                          config.check_window)
        self.snapshots: list[dict[str, Any]] = []  # metrics.json "snapshots", in the order reached
        self.snapshot_weights: dict[str, list] = {}  # milestone name -> the network's weights there
        self.last_check: tuple[int, tuple[float, float]] | None = None  # (step, (loss, accuracy))
        self.check_seconds = self.snapshot_seconds = 0.0
        self._paused = 0.0  # seconds of checks, snapshots and validation, not training
        self._first: tuple[float, int] | None = None  # (training clock, step) at the first callback

    def _clock(self) -> float:
        return time.perf_counter() - self._paused

    def _stop(self, reason: str) -> None:
        self.stop_reason, self.model.stop_training = reason, True

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = self._clock()

    def on_train_batch_end(self, batch, logs=None):
        step = self._steps()
        if self._first is None:
            self._first = (self._clock(), step)
        self._last = (self._clock(), step)
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return self._stop(DIVERGED)
        if self.schedule is not None and self.schedule.due(step):
            value = self._check(step)
            reached = self.tracker.at_loss(value[0])
            if reached:
                self._snapshot(reached, step, value)
                if self.tracker.done:
                    return self._stop("target_loss")
                if self.tracker.next_loss is None:
                    self.schedule = None  # every loss milestone reached: no more checks
                else:
                    self.schedule.target = self.tracker.next_loss
            elif self._collapsed(step, value):
                return self._stop(COLLAPSED)
        if self.config.steps is not None and step >= self.config.steps:
            self._stop("steps")

    def on_epoch_end(self, epoch, logs=None):
        seconds = self._clock() - self._t0
        lr = self.model.optimizer.learning_rate
        row = {"epoch": epoch + 1, "epoch_seconds": seconds, "steps": self._steps(), "lr": float(lr)}
        if self.val_eval is not None:  # the validation split, in inference mode (`Evaluator`)
            start = time.perf_counter()
            row["val_loss"], row["val_accuracy"] = self.val_eval()
            self._paused += time.perf_counter() - start
        self.rows.append(row)
        reached = self.tracker.at_epoch(epoch + 1)
        if reached and not self.model.stop_training:
            step = self._steps()
            self._snapshot(reached, step, self._check(step, count=False))
            if self.tracker.done:
                self._stop("epochs")

    # ------------------------------------------------------------------ checks and snapshots
    def _check(self, step: int, count: bool = True) -> tuple[float, float]:
        """The inference-mode (loss, accuracy) on the whole training split at this step."""
        if self.last_check is not None and self.last_check[0] == step:
            return self.last_check[1]
        start = time.perf_counter()
        value = self.train_eval()
        if count and self.schedule is not None:
            self.schedule.record(step, value[0])
        spent = time.perf_counter() - start
        self._paused, self.check_seconds = self._paused + spent, self.check_seconds + spent
        self.last_check = (step, value)
        return value

    def _collapsed(self, step: int, value: tuple[float, float]) -> bool:
        """Stuck at chance: after `collapse_patience` steps, the loss still within 1 % of ln K (a slow
        start moves away from it; a dead network sits on it). At chance by the looser final rule
        (`is_collapsed`), the next check comes one cadence later, to confirm soon."""
        if not is_collapsed(*value, self.num_classes):
            return False
        self.schedule.next = min(self.schedule.next, step + self.schedule.cadence)
        stuck = abs(value[0] - math.log(self.num_classes)) <= 0.01 * math.log(self.num_classes)
        return step >= collapse_patience(self.steps_per_epoch) and stuck

    def _snapshot(self, reached: list[milestones.Milestone], step: int, train: tuple[float, float]) -> None:
        """Record the live weights and their numbers at the milestones `reached` now (metrics.json's
        ``snapshots``): the train split's check, the validation and test splits, the weight norm."""
        start = time.perf_counter()
        nan = (math.nan, math.nan)
        val = self.evaluators["val"]() if "val" in self.evaluators else nan
        test = self.evaluators["test"]()
        network = self.train_eval.network
        weights = network.get_weights()
        norm = math.sqrt(sum(float((w.astype("float64") ** 2).sum()) for w in
                             (v.numpy() for v in network.trainable_variables)))
        for m in reached:
            record = {
                "milestone": m.name, "kind": m.kind, "at": m.at, "step": step,
                "epoch": step / self.steps_per_epoch, "epochs_done": len(self.rows),
                "train_loss": train[0], "train_accuracy": train[1], "val_loss": val[0],
                "val_accuracy": val[1], "test_loss": test[0], "test_accuracy": test[1],
                "weight_norm": norm,
            }
            assert tuple(record) == SNAPSHOT_FIELDS, "rundir.SNAPSHOT_FIELDS names what a snapshot records"
            self.snapshots.append(record)
            self.snapshot_weights[m.name] = weights
        self.tracker.mark(reached, step)
        spent = time.perf_counter() - start
        self._paused, self.snapshot_seconds = self._paused + spent, self.snapshot_seconds + spent

    @property
    def step_seconds(self) -> float:
        """Steady-state training seconds per optimizer step (NaN if only one compiled call ran)."""
        if self._first is None or self._last[1] <= self._first[1]:
            return math.nan
        return (self._last[0] - self._first[0]) / (self._last[1] - self._first[1])

    def _steps(self) -> int:
        return int(self.model.optimizer.iterations.numpy())


def check_cadence(config: Config, steps_per_epoch: int) -> int:
    """Steps between loss-target checks near the target: `check_every`, or a quarter epoch (>= 1)."""
    return config.check_every or max(1, round(steps_per_epoch / 4))


def _steps_per_execution(config: Config, steps_per_epoch: int) -> int:
    """`steps_per_execution`, but never more than the check cadence of a loss-target run (callbacks,
    and so checks, only see every k-th step) nor more than an epoch."""
    k = min(config.steps_per_execution, steps_per_epoch)
    has_loss_checks = config.target_loss is not None or bool(config.loss_milestones)
    return min(k, check_cadence(config, steps_per_epoch)) if has_loss_checks else k


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
    """Seed Python's, numpy's and TensorFlow's random generators (`keras.utils.set_random_seed`) and
    make TensorFlow's ops deterministic: the same config and seed give identical metrics on CPU."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


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

    monitor: _RunMonitor
    history: pd.DataFrame
    wall_seconds: float
    steps: int


def fit(config: Config, model: keras.Model, data: Data, evaluators: dict[str, Evaluator],
        steps_per_epoch: int) -> Training:
    """Train `model` on the training split until a stop rule of `config` says stop (`_RunMonitor`:
    step budget, every milestone reached, collapse, divergence; else the epoch budget)."""
    epochs = math.ceil(config.steps / steps_per_epoch) if config.steps else config.epochs
    monitor = _RunMonitor(config, steps_per_epoch, evaluators, data.num_classes)
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


def final_evaluation(monitor: _RunMonitor, evaluators: dict[str, Evaluator], steps: int) -> dict[str, tuple[float, float]]:
    """(loss, accuracy) of the trained network on "train", "val" (NaN without that split) and "test",
    in inference mode. A run whose last loss check (or snapshot) was at its last step reports that
    check as its train split's: it saw these very weights."""
    last = monitor.last_check
    return {
        "train": last[1] if last is not None and last[0] == steps else evaluators["train"](),
        "val": evaluators["val"]() if "val" in evaluators else (math.nan, math.nan),
        "test": evaluators["test"](),
    }


def run_metrics(config: Config, data: Data, training: Training, scores: dict[str, tuple[float, float]],
                replicas: int) -> dict[str, Any]:
    """metrics.json of a finished run (module docstring): status and stop reason, the final `scores`,
    split sizes, timings and throughput, steps, the device and where the run ran (``environment``)."""
    monitor, history, wall, steps = training.monitor, training.history, training.wall_seconds, training.steps
    (train_loss, train_acc), (val_loss, val_acc), (test_loss, test_acc) = (scores[k] for k in ("train", "val", "test"))
    n_train = len(data.x_train)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    diverged = monitor.stop_reason == DIVERGED
    train_seconds = float(history["epoch_seconds"].sum()) if len(history) else wall
    finite = all(math.isfinite(v) for v in (train_loss, test_loss))
    status = DIVERGED if diverged or not finite else OK
    if status == OK and (monitor.stop_reason == COLLAPSED or (
            steps >= collapse_patience(steps_per_epoch) and is_collapsed(train_loss, train_acc, data.num_classes))):
        status = COLLAPSED
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
        scores = final_evaluation(training.monitor, evaluators, training.steps)
    metrics = run_metrics(config, data, training, scores, strategy.num_replicas_in_sync)
    write_run(run_dir, training.history, network, metrics, training.monitor.snapshot_weights)
    return RunResult(config=config, metrics=metrics, history=training.history, model=network, run_dir=run_dir)


def samples_seen(steps: int, steps_per_epoch: int, n_train: int, batch_size: int) -> int:
    """Examples processed in `steps` steps (each epoch's last batch may be partial)."""
    full_epochs, rest = divmod(steps, steps_per_epoch)
    return full_epochs * n_train + rest * batch_size


# ---------------------------------------------------------------------- params files
def config_from_args(params: str | None, overrides: list[str]) -> Config:
    values = load_yaml_mapping(params) if params else {}
    values.update(parse_override(text) for text in overrides)
    return Config.from_dict(values)
