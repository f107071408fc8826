"""The training objective as a function of the flat weight vector, for the sharpness measures:

    f(w) = (1/N) Σ_i ℓ(y_i, model(x_i; w)) + R(w),

evaluated in inference mode (``training=False``: dropout off, BatchNorm uses its moving statistics)
over all N examples in batches of `batch_size` (each batch's mean loss is weighted by n_b / N, so the
value is the exact mean, partial last batch included). R is the model's regularization (``model.losses``,
e.g. the L2 weight decay of `samlib.models.build_cnn`); it is 0 for the study's default runs. f is
`samlib.evaluation.Evaluator`'s (accumulated in float64); `Objective` adds its gradient and
Hessian-vector product, which differentiate the evaluator's per-batch loss.

Weights are never assigned to: every evaluation maps the variables to tensors inside a
`keras.StatelessScope` (the approach of `samlib.sam`), so the model is left bit-for-bit as it was, also
when a measure is interrupted by an exception. The hot computations (loss, gradient, Hessian-vector
product) are `tf.function`s without XLA (XLA is several times slower on CPU) on TensorFlow, `jax.jit`
functions on JAX (`samlib.backends`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from samlib import backends
from samlib.evaluation import Evaluator


def compile_graph(function):
    """A graph function without XLA on TensorFlow (jit is several times slower on CPU), `jax.jit` on
    JAX; one trace per batch shape."""
    return backends.compile(function, reduce_retracing=True)


class Objective:
    """f(w) of the module docstring on one data set, with its gradient and Hessian-vector product.

    f is `samlib.evaluation.Evaluator`'s (float64 accumulation), evaluated at the flat vector w mapped
    onto the trainable variables; the gradient and Hessian-vector product differentiate its per-batch
    `Evaluator.batch_loss`, so the loss is written once. Built once and reused (`samlib.sharpness`'s
    callback keeps one across epochs: `refresh` re-reads the weights), so the `tf.function`s are traced
    once per batch shape rather than once per measurement.
    """

    def __init__(self, model: keras.Model, loss: Any, x: np.ndarray, y: np.ndarray, batch_size: int):
        self.evaluator = Evaluator(model, x, y, batch_size, loss=loss, dtype="float64")  # checks x, y, batch_size
        if not model.trainable_variables:
            raise ValueError("the model has no trainable weights (is it built?)")
        self.model, self.loss = model, loss
        self.x, self.y = x, y  # the examples f is the mean over (`grad_on` takes subsets of them)
        self.variables = list(model.trainable_variables)
        self.states = list(model.non_trainable_variables)
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.dtype = keras.backend.standardize_dtype(self.variables[0].dtype)
        # one constant per batch, built once: the hot loops then only move the weight vector
        self.batches = self.evaluator.batches  # (x_b, y_b, n_b / N)
        self._value_and_grad = compile_graph(self._batch_value_and_grad)
        self._hvp = compile_graph(self._batch_hvp)
        self.refresh()

    @property
    def n(self) -> int:
        """Number of trainable parameters."""
        return sum(self.sizes)

    def refresh(self) -> None:
        """Snapshot the model's current weights as w (and its BatchNorm statistics / seeds)."""
        self.w = ops.concatenate([ops.reshape(ops.cast(v.value, self.dtype), [-1]) for v in self.variables], 0)
        self.state_values = [backends.snapshot(v) for v in self.states]

    # ---------------------------------------------------------------- per-batch graph functions
    def _unflatten(self, w: Any) -> list[Any]:
        ends = np.cumsum(self.sizes)
        parts = [w[end - size : end] for end, size in zip(ends, self.sizes)]
        return [ops.cast(ops.reshape(p, s), v.dtype) for p, s, v in zip(parts, self.shapes, self.variables)]

    def _batch_loss(self, w: Any, states: list[Any], xb: Any, yb: Any) -> Any:
        # the evaluator maps trainable, then non-trainable variables, as `self.variables + self.states`
        return self.evaluator.batch_loss(self._unflatten(w) + list(states), xb, yb)

    def _batch_value_and_grad(self, w, states, xb, yb):
        value, _, grad = backends.value_and_grad(lambda w: (self._batch_loss(w, states, xb, yb), None), w)
        return value, grad

    def _batch_hvp(self, w, v, states, xb, yb):
        # forward-over-reverse: the JVP of the gradient along v is H v at ~2 gradient costs, and was as
        # fast as (or faster than) reverse-over-reverse on this CPU at batch 1000
        return backends.hvp(lambda w: self._batch_loss(w, states, xb, yb), w, v)

    # ---------------------------------------------------------------- full-data quantities
    def value(self, w: Any | None = None) -> float:
        w = self.w if w is None else w
        return self.evaluator(self._unflatten(w) + self.state_values)[0]

    def value_and_grad(self, w: Any | None = None) -> tuple[float, Any]:
        w = self.w if w is None else w
        total, grad = 0.0, None
        for xb, yb, c in self.batches:
            value, g = self._value_and_grad(w, self.state_values, xb, yb)
            total += c * float(value)
            grad = g * c if grad is None else grad + g * c
        return total, grad

    def grad_on(self, x: np.ndarray, y: np.ndarray) -> Any:
        """∇ of the mean loss over the examples (x, y) alone, plus R, at the snapshot w (flat): one batch,
        in inference mode, as f's batches are (`samlib.noise` takes micro-batches' gradients so)."""
        return self._value_and_grad(self.w, self.state_values, ops.convert_to_tensor(x), ops.convert_to_tensor(y))[1]

    def hvp(self, v: Any) -> Any:
        """H v at the snapshot w (flat, in the weights' dtype)."""
        out = None
        for xb, yb, c in self.batches:
            h = self._hvp(self.w, v, self.state_values, xb, yb) * c
            out = h if out is None else out + h
        return out
