"""One training run: `train_and_evaluate(config) -> RunResult`, writing its run directory.

Run directory (all files written atomically):
    config.json        the validated Config
    history.csv        per epoch: loss, accuracy (train, running mean with dropout on), test_loss,
                       test_accuracy, epoch_seconds (training only), steps (cumulative), lr
    metrics.json       final train/test loss and accuracy on the whole sets in inference mode,
                       wall_seconds, samples_per_second, steps, epochs_run, stop_reason, status
    model.weights.h5   the trained network's weights (the bare CNN, not the SAM wrapper)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import keras
import pandas as pd
import tensorflow as tf

from samlib import devices, io
from samlib.config import Config, ConfigError, load_yaml_mapping, parse_override
from samlib.data import Data, DataError, load
from samlib.models import build_cnn
from samlib.rundir import WEIGHTS, is_complete  # noqa: F401  (is_complete: part of this module's API)
from samlib.sam import SAM



@dataclasses.dataclass
class RunResult:
    config: Config
    metrics: dict[str, Any]
    history: pd.DataFrame
    model: keras.Model  # the trained network (not the SAM wrapper)
    run_dir: Path | None = None


def make_loss() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


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


def build_network(config: Config, data: Data) -> keras.Model:
    """The CNN; weight decay is an L2 term in the loss except for AdamW, where it is decoupled."""
    l2 = 0.0 if config.optimizer == "adamw" else config.weight_decay
    return build_cnn(data.input_shape, data.num_classes, dropout=config.dropout, weight_decay=l2)


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
    )


class SmoothedLoss:
    """The training loss per step, smoothed: what a loss target is compared with.

    Keras reports the running mean of the epoch so far, m_k = S_k / N_k (weighted by batch size), so
    step k's own batch loss is l_k = (m_k N_k − m_{k−1} N_{k−1}) / n_k; it is smoothed by an
    exponential moving average e_t = d·e_{t−1} + (1−d)·l_t with bias correction e_t / (1 − d^t)
    (d = 0.9: about the last ten steps), which carries across epochs.
    """

    def __init__(self, decay: float = 0.9) -> None:
        self.decay, self._ema, self._t = decay, 0.0, 0
        self.minimum = math.inf
        self.new_epoch()

    def new_epoch(self) -> None:
        self._seen, self._sum = 0, 0.0

    @property
    def seen(self) -> int:
        """Examples fed so far in this epoch."""
        return self._seen

    def update(self, running_mean: float, batch: int) -> float:
        """Feed the epoch's running mean after a batch of `batch` examples; returns the smoothed loss."""
        total = running_mean * (self._seen + batch)
        loss = (total - self._sum) / batch
        self._seen, self._sum = self._seen + batch, total
        self._t += 1
        self._ema = self.decay * self._ema + (1 - self.decay) * loss
        value = self._ema / (1 - self.decay**self._t)
        self.minimum = min(self.minimum, value)
        return value


class _RunMonitor(keras.callbacks.Callback):
    """Times epochs (training part only), records steps/lr, stops on a step budget, a train-loss
    target (the smoothed per-step loss of `SmoothedLoss`, checked every step), or a non-finite loss
    (divergence)."""

    def __init__(self, config: Config, steps_per_epoch: int, n_train: int) -> None:
        super().__init__()
        self.config, self.steps_per_epoch, self.n_train = config, steps_per_epoch, n_train
        self.stop_reason = "epochs"
        self.rows: list[dict[str, float]] = []
        self.smoothed = SmoothedLoss()

    def on_epoch_begin(self, epoch, logs=None):
        self._t0, self._train_seconds = time.perf_counter(), None
        self.smoothed.new_epoch()

    def on_test_begin(self, logs=None):
        if self._train_seconds is None:  # validation runs inside the epoch: stop the clock there
            self._train_seconds = time.perf_counter() - self._t0

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.stop_reason, self.model.stop_training = "diverged", True
            return
        if loss is not None:
            size = min(self.config.batch_size, self.n_train - self.smoothed.seen)
            self._smoothed = self.smoothed.update(float(loss), size)
            target = self.config.target_loss
            if target is not None and self._smoothed <= target:
                self.stop_reason, self.model.stop_training = "target_loss", True
                return
        if self.config.steps is not None and self._steps() >= self.config.steps:
            self.stop_reason, self.model.stop_training = "steps", True

    def on_epoch_end(self, epoch, logs=None):
        seconds = self._train_seconds if self._train_seconds is not None else time.perf_counter() - self._t0
        lr = self.model.optimizer.learning_rate
        self.rows.append(
            {"epoch": epoch + 1, "epoch_seconds": seconds, "steps": self._steps(), "lr": float(lr),
             "loss_smoothed": getattr(self, "_smoothed", math.nan)}
        )

    def _steps(self) -> int:
        return int(self.model.optimizer.iterations.numpy())


def train_and_evaluate(config: Config, data: Data | None = None) -> RunResult:
    """Train the CNN as `config` says, evaluate it, and (if `config.run_dir`) write the run directory.

    Same config and seed → identical metrics on CPU (seeded Keras RNG and op determinism).
    """
    data = data if data is not None else load(config.dataset, config.data_dir)
    run_dir = Path(config.run_dir) if config.run_dir else None
    if run_dir is not None:
        io.write_json(run_dir / "config.json", config.to_dict())
        io.write_json(run_dir / "metrics.json", {"status": "running"})
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    n_train = len(data.x_train)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    epochs = math.ceil(config.steps / steps_per_epoch) if config.steps else config.epochs
    strategy = devices.make_strategy(config)
    with devices.precision(config.precision), strategy.scope():
        network = build_network(config, data)
        model = wrap(config, network)
        optimizer = make_optimizer(config, steps_per_epoch)
        if config.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(
            optimizer=optimizer, loss=make_loss(), metrics=["accuracy"], jit_compile=devices.resolve_jit(config)
        )
        monitor = _RunMonitor(config, steps_per_epoch, n_train)
        start = time.perf_counter()
        fit = model.fit(
            data.x_train,
            data.y_train,
            batch_size=config.batch_size,
            epochs=epochs,
            validation_data=(data.x_test, data.y_test),
            validation_batch_size=config.eval_batch_size,
            callbacks=[monitor],
            shuffle=True,
            verbose=config.verbose,
        )
        wall = time.perf_counter() - start
        history = pd.DataFrame(monitor.rows)
        for key, values in fit.history.items():
            history[key.replace("val_", "test_")] = values[: len(history)]
        diverged = monitor.stop_reason == "diverged"
        train_loss, train_acc = model.evaluate(data.x_train, data.y_train, batch_size=config.eval_batch_size, verbose=0)
        test_loss, test_acc = model.evaluate(data.x_test, data.y_test, batch_size=config.eval_batch_size, verbose=0)

    steps = int(model.optimizer.iterations.numpy())
    train_seconds = float(history["epoch_seconds"].sum()) if len(history) else wall
    finite = all(math.isfinite(v) for v in (train_loss, test_loss))
    metrics = {
        "status": "diverged" if diverged or not finite else "ok",
        "stop_reason": "diverged" if diverged or not finite else monitor.stop_reason,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "wall_seconds": wall,
        "train_seconds": train_seconds,
        "samples_per_second": samples_seen(steps, steps_per_epoch, n_train, config.batch_size)
        / max(train_seconds, 1e-9),
        "steps": steps,
        "epochs_run": len(history),
        "loss_smoothed_min": monitor.smoothed.minimum,  # lowest smoothed train loss seen (SmoothedLoss)
        "lr_effective": config.scaled_lr,
        "device": devices.describe(),
        "replicas": strategy.num_replicas_in_sync,
    }
    if run_dir is not None:
        io.write_text(run_dir / "history.csv", history.to_csv(index=False))
        io.atomic_write(run_dir / WEIGHTS, network.save_weights)
        io.write_json(run_dir / "metrics.json", metrics)  # last: its status marks the run complete
    return RunResult(config=config, metrics=metrics, history=history, model=network, run_dir=run_dir)


def samples_seen(steps: int, steps_per_epoch: int, n_train: int, batch_size: int) -> int:
    """Examples processed in `steps` steps (each epoch's last batch may be partial)."""
    full_epochs, rest = divmod(steps, steps_per_epoch)
    return full_epochs * n_train + rest * batch_size


# ---------------------------------------------------------------------- finished runs
def load_run(run_dir: str | Path, data: Data | None = None) -> tuple[Config, keras.Model]:
    """Rebuild the network of a finished run and load its weights (`data`: its data set, if at hand)."""
    run_dir = Path(run_dir)
    for name in ("config.json", WEIGHTS):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished run: {name} is missing")
    config = Config.from_dict(io.read_json(run_dir / "config.json"))
    data = data if data is not None else load(config.dataset, config.data_dir)
    network = build_network(config, data)
    network.load_weights(run_dir / WEIGHTS)
    return config, network


# ---------------------------------------------------------------------- CLI
def config_from_args(params: str | None, overrides: list[str]) -> Config:
    values = load_yaml_mapping(params) if params else {}
    values.update(parse_override(text) for text in overrides)
    return Config.from_dict(values)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m samlib train", description="Train one run.")
    parser.add_argument("params", nargs="?", help="YAML file of Config keys")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args.params, args.overrides)
        result = train_and_evaluate(config)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    m = result.metrics
    print(
        f"{m['status']}: train loss {m['train_loss']:.4f} acc {m['train_accuracy']:.4f} | "
        f"test loss {m['test_loss']:.4f} acc {m['test_accuracy']:.4f} | {m['steps']} steps "
        f"({m['stop_reason']}), {m['wall_seconds']:.1f} s, {m['samples_per_second']:.0f} samples/s"
        + (f"\nrun directory: {result.run_dir}" if result.run_dir else "")
    )
    return 0
