"""Watching a run while it trains: when to check its loss, when to stop, what to record on the way.

- `CheckSchedule`: when to evaluate the inference-mode training loss against the next loss milestone
  (`check_cadence` steps apart near it, sparser far from it).
- `RunMonitor`: the Keras callback of a run (`samlib.train.fit`). It stops the run on its step budget,
  on reaching every milestone (`samlib.milestones`), on collapse (stuck at chance, `_collapsed`) or on a
  non-finite loss (divergence); takes the milestones' snapshots (with ``match_tolerance`` a loss
  snapshot's bracket, with ``record_predictions`` which test images are right); keeps the per-epoch
  history rows.
- `Clock`: training time without the checks, snapshots and validation, and the steady-state seconds
  per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import keras

from samlib import milestones
from samlib.cost import grad_evals
from samlib.config import Config
from samlib.evaluation import Evaluator
from samlib.rundir import (
    COLLAPSED, DIVERGED, SNAPSHOT_EXTRAS, SNAPSHOT_FIELDS, collapse_patience, encode_correct, is_collapsed, is_stuck,
)

T = TypeVar("T")


def check_cadence(config: Config, steps_per_epoch: int) -> int:
    """Steps between loss-target checks near the target: `check_every`, or a quarter epoch (>= 1)."""
    return config.check_every or max(1, round(steps_per_epoch / 4))


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

    With a `tolerance` τ (``match_tolerance``), the target is matched at the first step whose loss is
    <= T: once a check's loss is within a factor e^τ of T (ln(L₂/T) <= τ, "the band"), every step is
    checked until the loss is <= T. Farther away the wait is clip(⌊Δ/4⌋, 1, 16c), a quarter of the
    extrapolated way without the floor c (c when the loss did not fall), and at most twice the last wait:
    the first check is after one step, and the waits grow geometrically from there. So the checks close
    in on T and enter the band rather than jump over it, also where the loss speeds up (early in training
    the fall is faster than log-linear). The rate is measured over at least c steps (from the latest
    check c or more steps back, if older than the window's), so that checks close together do not
    measure only the noise between them. The match is exact when the check before the one that reaches
    T was one step earlier (the snapshot's ``check_before``); a loss whose step-to-step noise exceeds τ
    (it can touch T between two checks outside the band) or that suddenly falls faster than 4x the
    measured rate can still jump the band, and ``check_before`` shows it. Cost: about
    log(ln(L/T)/τ)/log(4/3) checks to reach the band, one per step in it (about τ / the loss's per-step
    fall in ln L), and log2(c) more at the start. `retarget` re-plans the next check from the last one
    when the target moves on.
    """

    def __init__(self, target: float, cadence: int, window: int = 2, tolerance: float | None = None) -> None:
        # `target` may move on (the next milestone) once reached; the cadence and window stay
        self.target, self.cadence, self.window = float(target), max(1, int(cadence)), max(2, int(window))
        self.tolerance = None if tolerance is None else float(tolerance)
        self.next = self.cadence if self.tolerance is None else 1  # matching: a milestone may be near from the start
        self.checks: list[tuple[int, float]] = []

    def due(self, step: int) -> bool:
        return step >= self.next

    def record(self, step: int, loss: float) -> None:
        self.checks.append((step, loss))
        self.next = step + self._interval(loss)

    def retarget(self, target: float) -> None:
        """Aim at `target` from now on; with a tolerance, the next check is planned again against it."""
        self.target = float(target)
        if self.tolerance is not None and self.checks:
            step, loss = self.checks[-1]
            self.next = step + self._interval(loss)

    def _interval(self, loss: float) -> int:
        """Steps from the last check (its `loss`) to the next (class docstring)."""
        c, matching = self.cadence, self.tolerance is not None
        if matching and math.isfinite(loss) and self.target < loss <= self.target * math.exp(self.tolerance):
            return 1
        interval, floor, part = (c, 1, 4) if matching else (4 * c, c, 2)
        if len(self.checks) >= 2 and math.isfinite(loss) and loss > self.target:
            (s1, l1), (s2, l2) = self._baseline(), self.checks[-1]
            rate = (math.log(l1) - math.log(l2)) / max(s2 - s1, 1) if l1 > 0 and l2 > 0 else 0.0
            if rate > 0:
                interval = int(min(max(math.log(l2 / self.target) / rate / part, floor), 16 * c))
        if matching:  # at most twice the last wait (from step 0 for the first check): trusted so far
            last_wait = self.checks[-1][0] - (self.checks[-2][0] if len(self.checks) >= 2 else 0)
            interval = max(1, min(interval, 2 * last_wait))
        return interval

    def _baseline(self) -> tuple[int, float]:
        """The check the rate of fall is measured from: the oldest of the last `window`; with a tolerance,
        at least c steps before the last check if there is one (checks a step or two apart would measure
        the noise between them)."""
        oldest = self.checks[-self.window:][0]
        if self.tolerance is None:
            return oldest
        last = self.checks[-1][0]
        earlier = [check for check in self.checks if last - check[0] >= self.cadence]
        return earlier[-1] if earlier and earlier[-1][0] < oldest[0] else oldest


class Clock:
    """Training time: wall-clock seconds less those spent `off` it (loss checks, snapshots, the
    per-epoch validation). `tick` at every callback step; `step_seconds` is measured from the first
    tick on, so the first compiled call, which traces the graph, is excluded (with
    ``steps_per_execution = k`` that first call is k steps)."""

    def __init__(self) -> None:
        self.paused = 0.0  # seconds off the training clock
        self.first: tuple[float, int] | None = None  # (training clock, step) at the first tick
        self.last: tuple[float, int] | None = None

    def now(self) -> float:
        return time.perf_counter() - self.paused

    def tick(self, step: int) -> None:
        if self.first is None:
            self.first = (self.now(), step)
        self.last = (self.now(), step)

    def off(self, work: Callable[[], T]) -> tuple[T, float]:
        """(what `work` returns, the seconds it took), those seconds kept off the training clock."""
        start = time.perf_counter()
        result = work()
        spent = time.perf_counter() - start
        self.paused += spent
        return result, spent

    @property
    def step_seconds(self) -> float:
        """Steady-state training seconds per optimizer step (NaN if only one compiled call ran)."""
        if self.first is None or self.last[1] <= self.first[1]:
            return math.nan
        return (self.last[0] - self.first[0]) / (self.last[1] - self.first[1])


def weight_norm(network: keras.Model) -> float:
    """‖w‖₂ of the trainable weights, summed in float64."""
    return math.sqrt(sum(float((w.astype("float64") ** 2).sum())
                         for w in (v.numpy() for v in network.trainable_variables)))


class RunMonitor(keras.callbacks.Callback):
    """The callback of one run: stops on a step budget, on reaching every milestone (loss milestones
    checked in inference mode on a `CheckSchedule`, epoch milestones at epoch ends), on collapse or on a
    non-finite loss (divergence); takes the milestones' snapshots; keeps the per-epoch history `rows`;
    times training in steady state (`Clock`: loss checks, snapshots and the per-epoch validation are not
    training time)."""

    def __init__(self, config: Config, steps_per_epoch: int, evaluators: dict[str, Evaluator],
                 num_classes: int) -> None:
        super().__init__()
        self.config, self.steps_per_epoch, self.num_classes = config, steps_per_epoch, num_classes
        self.evaluators = evaluators
        self.train_eval, self.val_eval = evaluators["train"], evaluators.get("val")
        self.stop_reason = "steps" if config.steps is not None else "epochs"
        self.rows: list[dict[str, float]] = []
        self.tracker = milestones.Tracker(milestones.of_config(config))
        # every milestone reached: 'milestones' for a run given milestones, 'target_loss' for a run given
        # only a loss target (the one milestone it has)
        self.done_reason = ("milestones" if config.loss_milestones or config.epoch_milestones or config.evals_milestones
                            else "target_loss")
        self.schedule = None
        if self.tracker.has_loss:
            self.schedule = CheckSchedule(self.tracker.next_loss, check_cadence(config, steps_per_epoch),
                                          config.check_window, config.match_tolerance)
        self.snapshots: list[dict[str, Any]] = []  # metrics.json "snapshots", in the order reached
        self.snapshot_weights: dict[str, list] = {}  # milestone name -> the network's weights there
        self.last_check: tuple[int, tuple[float, float]] | None = None  # (step, (loss, accuracy))
        self.check_seconds = self.snapshot_seconds = 0.0
        self.clock = Clock()

    @property
    def step_seconds(self) -> float:
        """Steady-state training seconds per optimizer step (`Clock.step_seconds`)."""
        return self.clock.step_seconds

    def _steps(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _stop(self, reason: str) -> None:
        self.stop_reason, self.model.stop_training = reason, True

    # ------------------------------------------------------------------ Keras' callbacks
    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = self.clock.now()

    def on_train_batch_end(self, batch, logs=None):
        step = self._steps()
        self.clock.tick(step)
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return self._stop(DIVERGED)
        if self.schedule is not None and self.schedule.due(step):
            reason = self._loss_check(step)
            if reason is not None:
                return self._stop(reason)
        if self.tracker.has_evals:
            reached = self.tracker.at_evals(grad_evals(step, self.config.sam, self.config.looksam_k))
            if reached:
                self._snapshot(reached, step, self._check(step, count=False))
                if self.tracker.done:
                    return self._stop(self.done_reason)
        if self.config.steps is not None and step >= self.config.steps:
            self._stop("steps")

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.clock.now() - self._t0
        lr = self.model.optimizer.learning_rate
        row = {"epoch": epoch + 1, "epoch_seconds": seconds, "steps": self._steps(), "lr": float(lr)}
        if self.val_eval is not None:  # the validation split, in inference mode (`Evaluator`)
            (row["val_loss"], row["val_accuracy"]), _ = self.clock.off(self.val_eval)
        self.rows.append(row)
        reached = self.tracker.at_epoch(epoch + 1)
        if reached and not self.model.stop_training:
            step = self._steps()
            self._snapshot(reached, step, self._check(step, count=False))
            if self.tracker.done:
                self._stop(self.done_reason)

    # ------------------------------------------------------------------ checks and snapshots
    def _loss_check(self, step: int) -> str | None:
        """A scheduled loss check: snapshot the loss milestones it reaches and aim at the next one; the
        reason to stop now (every milestone reached, or collapse), or None."""
        value = self._check(step)
        reached = self.tracker.at_loss(value[0])
        if reached:
            self._snapshot(reached, step, value)
            if self.tracker.done:
                return self.done_reason
            if self.tracker.next_loss is None:
                self.schedule = None  # every loss milestone reached: no more checks
            else:
                self.schedule.retarget(self.tracker.next_loss)
        elif self._collapsed(step, value):
            return COLLAPSED
        return None

    def _check(self, step: int, count: bool = True) -> tuple[float, float]:
        """The inference-mode (loss, accuracy) on the whole training split at this step."""
        if self.last_check is not None and self.last_check[0] == step:
            return self.last_check[1]

        def evaluate() -> tuple[float, float]:
            value = self.train_eval()
            if count and self.schedule is not None:
                self.schedule.record(step, value[0])
            return value

        value, spent = self.clock.off(evaluate)
        self.check_seconds += spent
        self.last_check = (step, value)
        return value

    def _collapsed(self, step: int, value: tuple[float, float]) -> bool:
        """Stuck at chance (`is_stuck`: the loss within 1 % of ln K, or the accuracy at chance with the
        loss at or above ln K) after `collapse_patience` steps. At chance by the looser final rule
        (`is_collapsed`), the next check comes one cadence later, to confirm soon."""
        if not is_collapsed(*value, self.num_classes):
            return False
        self.schedule.next = min(self.schedule.next, step + self.schedule.cadence)
        return step >= collapse_patience(self.steps_per_epoch) and is_stuck(*value, self.num_classes)

    def _snapshot(self, reached: list[milestones.Milestone], step: int, train: tuple[float, float]) -> None:
        """Record the live weights and their numbers at the milestones `reached` now (metrics.json's
        ``snapshots``): the train split's check, the validation and test splits, the weight norm."""
        _, spent = self.clock.off(lambda: self._record(reached, step, train))
        self.tracker.mark(reached, step)
        self.snapshot_seconds += spent

    def _record(self, reached: list[milestones.Milestone], step: int, train: tuple[float, float]) -> None:
        nan = (math.nan, math.nan)
        val = self.evaluators["val"]() if "val" in self.evaluators else nan
        predictions = {}
        if self.config.record_predictions:  # which test images are right, from the pass that gives the accuracy
            *test, correct = self.evaluators["test"].with_correct()
            predictions = {"test_correct": encode_correct(correct), "n_test": len(correct)}
        else:
            test = self.evaluators["test"]()
        network = self.train_eval.network
        weights, norm = network.get_weights(), weight_norm(network)
        for m in reached:
            record = {
                "milestone": m.name, "kind": m.kind, "at": m.at, "step": step,
                "epoch": step / self.steps_per_epoch, "epochs_done": len(self.rows),
                "train_loss": train[0], "train_accuracy": train[1], "val_loss": val[0],
                "val_accuracy": val[1], "test_loss": test[0], "test_accuracy": test[1],
                "weight_norm": norm,
            }
            assert tuple(record) == SNAPSHOT_FIELDS, "rundir.SNAPSHOT_FIELDS names what a snapshot records"
            if m.kind == milestones.LOSS and self.config.match_tolerance is not None:
                record.update(self._bracket(m, step, train[0]))
            record.update(predictions)
            assert set(record) <= set(SNAPSHOT_FIELDS + SNAPSHOT_EXTRAS), "rundir.SNAPSHOT_EXTRAS names the rest"
            self.snapshots.append(record)
            self.snapshot_weights[m.name] = weights

    def _bracket(self, milestone: milestones.Milestone, step: int, loss: float) -> dict[str, Any]:
        """A loss snapshot's match (``match_tolerance``): ``check_before``, the step and loss of the check
        before the one that reached `milestone` (its loss is above it: the milestone lies between the two;
        None for the first check), and ``mismatch`` = ln(milestone / loss) >= 0, how far below it the
        snapshot's loss is."""
        before = [(s, value) for s, value in self.schedule.checks if s < step]
        check_before = {"step": before[-1][0], "train_loss": before[-1][1]} if before else None
        mismatch = math.log(milestone.at / loss) if loss > 0 else math.inf
        return {"check_before": check_before, "mismatch": mismatch}
