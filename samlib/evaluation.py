"""The one inference-mode evaluator: the exact mean loss (and accuracy) of a network over fixed batches.

    f = (1/N) Σ_b n_b · mean-loss(batch b) + Σ model.losses

in inference mode (``training=False``: dropout off, BatchNorm on its moving statistics), over constant
batches of `batch_size` (the partial last batch weighted by its size, so f is the exact mean). R = Σ
``model.losses`` is the regularization (the L2 weight decay of `samlib.models.build_cnn`; 0 by default).

An `Evaluator` evaluates either at the network's live weights (``evaluator()``: what training reports
as ``train_loss`` / ``val_loss`` / ``test_loss``) or at given values of its variables (``evaluator(values)``,
mapped in a `keras.StatelessScope`, so nothing is assigned: what `samlib.sharpness` and
`samlib.sharpness.interpolate` need). `batch_loss` is the per-batch loss itself, uncompiled, for callers
that differentiate it (the gradient and Hessian-vector product of `samlib.sharpness`).

Two accumulations, each bit-for-bit what its caller always computed:

- ``dtype="float32"`` (training's): each batch gives n_b · mean-loss in float32 (logits cast to float32,
  as mixed precision needs); the batches are summed in Python floats, divided by N, and R is added once.
- ``dtype="float64"`` (sharpness's and interpolation's): each batch gives mean-loss + R cast to float64,
  weighted by n_b / N in Python floats: differences of nearby losses (f(w + ε) − f(w)) keep their digits.

The batch mean is taken here, not by the Keras loss: a Keras loss reducing to a mean multiplies it by
1/replicas whenever a `tf.distribute` strategy is current (training builds and calls the evaluators in
``strategy.scope()``), which would report a 2-replica run's losses halved. So the loss gives per-example
values (its own `call`, with no reduction) and `_mean` reduces them with exactly the ops Keras uses
(sum / element count, `divide_no_nan`), less the scaling: on one device the numbers are bit-for-bit
those of the loss's own reduction, and under any strategy they are the mean itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from samlib import backends


def make_loss() -> keras.losses.Loss:
    """The study's loss: softmax cross-entropy on integer labels, from logits."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


class _Unreduced(keras.losses.Loss):
    """A Keras loss's per-example values: its own ``__call__`` (dtype conversion, masks) with
    ``reduction=None``, delegating to its `call` (the loss object itself computes, keeping any state)."""

    def __init__(self, loss: keras.losses.Loss) -> None:
        super().__init__(name=loss.name, reduction=None, dtype=loss.dtype)
        self.loss = loss

    def call(self, y_true, y_pred):
        return self.loss.call(y_true, y_pred)


def _per_example(loss: Any) -> Any:
    """`loss` without its reduction, when it is a Keras loss that reduces to a mean (module docstring);
    other losses as given (a "sum" reduction and plain loss functions are not scaled by a strategy)."""
    if isinstance(loss, keras.losses.Loss) and loss.reduction in _MEAN_REDUCTIONS:
        return _Unreduced(loss)
    return loss


def _mean(values: Any) -> Any:
    """The mean of per-example loss values, as Keras's "sum_over_batch_size" reduction computes it
    (`keras.src.losses.loss.reduce_values`, the same ops in the same order) but with no scaling by the
    distribution strategy's replica count. A scalar (an already reduced loss) is returned as it is."""
    if tuple(values.shape) == ():
        return values
    total = keras.ops.sum(values)
    count = keras.ops.cast(keras.ops.prod(keras.ops.convert_to_tensor(keras.ops.shape(values), dtype="int32")),
                           total.dtype)
    return keras.ops.divide_no_nan(total, count)


def _hits(logits: Any, labels: Any) -> Any:
    """Per example, whether argmax(logits) == its integer label (bool)."""
    pred = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.equal(pred, ops.cast(ops.reshape(labels, ops.shape(pred)), "int32"))


def _compile(function, **kwargs):
    """A graph function without XLA on TensorFlow (jit is several times slower on CPU), `jax.jit` on JAX."""
    return backends.compile(function, **kwargs)


class Evaluator:
    """The exact mean loss and accuracy of `network` on one split (x, y), in inference mode.

    ``Evaluator(network, x, y, batch_size)()`` → (loss, accuracy) at the live weights; with `values`
    (one tensor per `variables`: the trainable, then the non-trainable variables) at those values
    instead. `loss`: any Keras loss (default `make_loss`); `dtype`: the accumulation (module docstring).
    A compiled forward pass over constant batches (no Keras `evaluate` loop), so a check costs about a
    quarter of an epoch of training. `split(x, y)` gives another split sharing the compiled functions
    (traced once per batch shape, not once per split). Accuracy is the fraction with argmax(logits) == y,
    NaN for non-integer targets; `with_correct` also says which examples those are.
    """

    def __init__(self, network: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int, *,
                 loss: Any = None, dtype: str = "float32", _functions: tuple | None = None) -> None:
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.network, self.batch_size, self.dtype = network, int(batch_size), dtype
        # float64 terms and hit counts where the backend computes float64 (JAX without x64: float32, the
        # batches still summed in Python floats)
        self._wide = dtype if dtype == "float32" else backends.wide_float()
        self._count = backends.wide_float()
        self.loss = make_loss() if loss is None else loss
        self._unreduced = _per_example(self.loss)  # reduced by `_mean`, never scaled by a strategy
        #: what `values` are mapped to, in this order
        self.variables = list(network.trainable_variables) + list(network.non_trainable_variables)
        self.n = len(x)
        self.integer = bool(np.issubdtype(np.asarray(y).dtype, np.integer))
        #: (x_b, y_b, n_b / N): one constant per batch, built once
        self.batches = [(ops.convert_to_tensor(x[i : i + self.batch_size]), ops.convert_to_tensor(y[i : i + self.batch_size]),
                         min(self.batch_size, self.n - i) / self.n) for i in range(0, self.n, self.batch_size)]
        self._terms, self._reg, self._hits = _functions or (
            _compile(self._batch_terms, reduce_retracing=True), _compile(self._regularization),
            _compile(self._batch_hits, reduce_retracing=True))

    def split(self, x: np.ndarray, y: np.ndarray) -> "Evaluator":
        """The same evaluator on another split, sharing the compiled functions."""
        return Evaluator(self.network, x, y, self.batch_size, loss=self.loss, dtype=self.dtype,
                         _functions=(self._terms, self._reg, self._hits))

    # ------------------------------------------------------------------ per batch (graph code)
    def _scope(self, values: Sequence[Any]):
        if not values:
            return contextlib.nullcontext()
        return keras.StatelessScope(state_mapping=list(zip(self.variables, values)))

    def _forward(self, values: Sequence[Any], xb: Any, yb: Any) -> tuple:
        """The one inference-mode pass: (the batch's mean loss, its logits, model.losses), at `values`."""
        with self._scope(values):
            logits = self.network(xb, training=False)
            if self.dtype == "float32":
                logits = ops.cast(logits, "float32")
            mean = _mean(self._unreduced(yb, logits))
            extras = list(self.network.losses)  # regularization, at the mapped weights
        return mean, logits, extras

    def batch_loss(self, values: Sequence[Any], xb: Any, yb: Any) -> Any:
        """f on one batch, mean loss + Σ model.losses, in `dtype`, at `values` (``()``: the live weights).

        Uncompiled and differentiable in `values`: Σ_b (n_b/N) · batch_loss is f (``dtype="float64"``).
        """
        return self._loss_of(*self._forward(values, xb, yb)[::2])

    def _loss_of(self, mean: Any, extras: list) -> Any:
        value = ops.cast(mean, self._wide)
        for extra in extras:
            value += ops.cast(extra, self._wide)
        return value

    def _term(self, mean: Any, extras: list, yb: Any) -> Any:
        if self.dtype == "float32":  # n_b · mean loss; R once, in `_regularization`
            return mean * ops.cast(ops.shape(yb)[0], "float32")
        return self._loss_of(mean, extras)

    def _batch_terms(self, values, xb, yb):
        mean, logits, extras = self._forward(values, xb, yb)
        term = self._term(mean, extras, yb)
        correct = ops.zeros((), self._count)
        if "int" in keras.backend.standardize_dtype(yb.dtype):
            correct = ops.sum(ops.cast(_hits(logits, yb), self._count))
        return term, correct

    def _batch_hits(self, values, xb, yb):
        """`_batch_terms` and, from the same forward pass, each example's hit (argmax(logits) == label)."""
        mean, logits, extras = self._forward(values, xb, yb)
        hits = _hits(logits, yb)
        return self._term(mean, extras, yb), ops.sum(ops.cast(hits, self._count)), hits

    def _regularization(self, values):
        with self._scope(values):
            losses = self.network.losses
            return backends.add_n([ops.cast(v, "float32") for v in losses]) if losses else ops.zeros(())

    # ------------------------------------------------------------------ the whole split
    def __call__(self, values: Sequence[Any] | None = None) -> tuple[float, float]:
        """(loss, accuracy) at the live weights, or at `values` (one tensor per `variables`)."""
        return self._run(self._check(values), self._terms)[:2]

    def with_correct(self, values: Sequence[Any] | None = None) -> tuple[float, float, np.ndarray]:
        """(loss, accuracy, correct): the numbers of ``evaluator(values)`` and, from the same batches and
        forward pass, whether each example (in split order) is classified correctly, argmax(logits) ==
        label (bool). ``correct.mean() == accuracy`` exactly: both count the same hits and divide by N.
        Needs integer labels."""
        if not self.integer:
            raise ValueError("per-example correctness needs integer class labels")
        return self._run(self._check(values), self._hits)

    def _run(self, values: list[Any], function) -> tuple[float, float, np.ndarray | None]:
        """Sum `function`'s per-batch terms and hits over the batches (module docstring's accumulation);
        the per-example hits too, if `function` gives them (else None)."""
        total, correct, hits = 0.0, 0.0, []
        for xb, yb, weight in self.batches:
            term, n_hits, *per_example = function(values, xb, yb)
            total += float(term) if self.dtype == "float32" else weight * float(term)
            correct += float(n_hits)
            hits += [ops.convert_to_numpy(h) for h in per_example]
        if self.dtype == "float32":
            total = total / self.n + float(self._reg(values))
        accuracy = correct / self.n if self.integer else float("nan")
        return total, accuracy, (np.concatenate(hits).astype(bool) if hits else None)

    def _check(self, values: Sequence[Any] | None) -> list[Any]:
        if values is None:  # the live weights: read inside the graph (TF), passed in (a jitted function's
            # reads of a variable would be constants fixed when it was traced)
            return [] if backends.is_tensorflow() else [v.value for v in self.variables]
        values = list(values)
        if len(values) != len(self.variables):
            raise ValueError(f"expected {len(self.variables)} values (trainable, then non-trainable variables), "
                             f"got {len(values)}")
        return values
