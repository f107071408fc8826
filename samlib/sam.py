"""Sharpness-Aware Minimization (Foret et al. 2021, "Sharpness-Aware Minimization for Efficiently
Improving Generalization", Algorithm 1) as a Keras 3 model wrapper.

One SAM step on a batch with loss L and weights w:

    g      = ∇L(w)                              gradient at w (training mode: dropout on, BN batch stats)
    ε̂      = ρ · g / (‖g‖₂ + 1e-12)             SAM
    ε̂      = ρ · |w|² ⊙ g / ‖|w| ⊙ g‖₂          ASAM (Kwon et al. 2021, adaptive=True)
    g_SAM  = ∇L(w + ε̂)                          gradient at the perturbed point
    w     ← base_optimizer.step(w, g_SAM)       the step is taken from w, not from w + ε̂

Design: the weights are never assigned to. Both passes run the network functionally inside a
`keras.StatelessScope` that maps each variable to a value (w, or w + ε̂), so "back to w" is exact by
construction and the perturbed pass cannot leak state: its BatchNorm statistics and dropout-seed
updates are collected by the scope and thrown away.

- Dropout: the second pass sees the dropout seeds as they were *before* the first pass, so it uses the
  **same dropout mask** as the first pass — ε̂ was computed for that sub-network.
- BatchNorm: moving statistics are updated once per step, by the unperturbed pass.
- Regularization losses (`model.losses`) are part of L in both passes (evaluated at w, then at w + ε̂).
- `sample_weight` enters L as in any Keras model.
- m-sharpness (`m`): the batch is split into micro-batches of m examples; each gets its own ε̂ from its
  own gradient, and the descent gradient is the size-weighted **mean** of the micro-batch gradients
  (so ρ = 0 gives exactly the full-batch gradient). BatchNorm statistics become the size-weighted mean
  of the per-micro-batch updates (what the official JAX code's `pmean` of the batch statistics gives).
- Loss scaling (mixed precision): ε̂ is built from the *unscaled* gradient; the perturbed-pass gradient
  is passed still scaled to the optimizer, which unscales it once and skips the step on overflow.
- Data parallel (`tf.distribute`): each replica perturbs with its own gradient (m-sharpness with m =
  per-replica batch, as the official implementation does) unless `sync_perturbation=True`, which
  all-reduces the ascent gradient so the step equals single-device SAM on the global batch.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

_EPS = 1e-12


def _is_float(variable: keras.Variable) -> bool:
    return keras.backend.is_float_dtype(variable.dtype)


class SAM(keras.Model):
    """Wrap any Keras `model` so that `fit` trains it with SAM over the compiled base optimizer.

    `compile`, `fit`, `evaluate`, `predict` work as for any Keras model; training updates the wrapped
    model's own weights. ``rho=0`` reproduces the base optimizer exactly.
    """

    def __init__(
        self,
        model: keras.Model,
        rho: float = 0.05,
        adaptive: bool = False,
        m: int | None = None,
        sync_perturbation: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(rho, (int, float)) or isinstance(rho, bool) or not rho >= 0.0:
            raise ValueError(f"SAM: rho must be a number >= 0, got {rho!r}")
        if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 1):
            raise ValueError(f"SAM: m (micro-batch size) must be None or an integer >= 1, got {m!r}")
        self.model = model
        self.rho = float(rho)
        self.adaptive = bool(adaptive)
        self.m = m
        self.sync_perturbation = bool(sync_perturbation)

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    # ------------------------------------------------------------------ the two passes
    def _loss_and_grads(self, x, y, sample_weight, weights, states):
        """L and ∇L at `weights`, with the non-trainable `states` (BN stats, dropout seeds) as given.

        Runs without touching any variable; returns (loss, scaled gradients, y_pred, new states).
        """
        variables = self.model.trainable_variables
        non_trainable = self.model.non_trainable_variables
        mapping = list(zip(variables, weights)) + list(zip(non_trainable, states))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            with tf.GradientTape() as tape:
                tape.watch(weights)
                y_pred = self(x, training=True)
                loss = self._compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
                )
                scaled_loss = self.optimizer.scale_loss(loss)
            new_states = [scope.get_current_value(v) for v in non_trainable]
        grads = tape.gradient(scaled_loss, weights)
        grads = [ops.zeros_like(w) if g is None else g for g, w in zip(grads, weights)]
        return loss, grads, y_pred, new_states

    def _perturbation(self, grads, weights):
        """ε̂ from the unscaled ascent gradient: ρ·g/‖g‖ (SAM) or ρ·|w|²⊙g/‖|w|⊙g‖ (ASAM)."""
        context = tf.distribute.get_replica_context()
        if self.sync_perturbation and context is not None and context.num_replicas_in_sync > 1:
            # each replica's loss carries a 1/replicas factor, so the sum is the global-batch gradient
            grads = context.all_reduce("sum", grads)
        if self.adaptive:
            scaled = [ops.abs(w) * g for w, g in zip(weights, grads)]  # T_w g with T_w = |w|
        else:
            scaled = grads
        norm = ops.sqrt(sum(ops.sum(ops.square(s)) for s in scaled))
        factor = self.rho / (norm + _EPS)
        # an overflowed (non-finite) ascent gradient gives no perturbation; the step is then skipped
        # by the loss-scale optimizer if the descent gradient overflows too
        factor = ops.where(ops.isfinite(factor), factor, ops.zeros_like(factor))
        if self.adaptive:
            return [factor * ops.abs(w) * s for w, s in zip(weights, scaled)]  # ρ |w|² g / ‖|w| g‖
        return [factor * g for g in grads]

    def _two_passes(self, x, y, sample_weight, states):
        """(loss at w, scaled ∇L(w), scaled ∇L(w + ε̂), y_pred, states after the pass at w)."""
        weights = [tf.identity(v.value) for v in self.model.trainable_variables]
        loss, grads, y_pred, states_after = self._loss_and_grads(x, y, sample_weight, weights, states)
        if self.rho == 0.0:
            return loss, grads, grads, y_pred, states_after  # plain base-optimizer step
        scale = self.optimizer.scale_loss(ops.ones((), dtype=loss.dtype))
        unscaled = [g / ops.cast(scale, g.dtype) for g in grads]
        eps = self._perturbation(unscaled, weights)
        perturbed = [w + e for w, e in zip(weights, eps)]  # climb to w + ε̂
        # same seeds as pass 1 -> same dropout mask; the scope discards this pass's state updates
        _, sam_grads, _, _ = self._loss_and_grads(x, y, sample_weight, perturbed, states)
        return loss, grads, sam_grads, y_pred, states_after  # "back to w" is implicit: w never changed

    def _sam_gradient(self, x, y, sample_weight, states):
        """One (micro-)batch: (loss at w, scaled descent gradient ∇L(w + ε̂), y_pred, new states)."""
        loss, _, sam_grads, y_pred, states_after = self._two_passes(x, y, sample_weight, states)
        return loss, sam_grads, y_pred, states_after

    # ------------------------------------------------------------------ train_step
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        states = [tf.identity(v.value) for v in self.model.non_trainable_variables]
        if self.m is None:
            loss, grads, y_pred, new_states = self._sam_gradient(x, y, sample_weight, states)
        else:
            loss, grads, y_pred, new_states = self._micro_batched(x, y, sample_weight, states)

        for variable, value in zip(self.model.non_trainable_variables, new_states):
            variable.assign(value)
        # Keras divides each replica's loss by the replica count; the tracker reports the true mean
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self._loss_tracker.update_state(loss * replicas, sample_weight=tf.shape(tf.nest.flatten(x)[0])[0])
        self.optimizer.apply(grads, self.model.trainable_variables)  # base optimizer steps from w
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _output_shape(self, x) -> tf.TensorShape:
        try:
            return tf.TensorShape(self.model.compute_output_shape(tf.nest.flatten(x)[0].shape))
        except Exception:  # a subclassed model that cannot say; metrics then see an unknown shape
            return tf.TensorShape(None)

    def _micro_batched(self, x, y, sample_weight, states):
        """m-sharpness: a SAM gradient per micro-batch of `m` examples, averaged by micro-batch size."""
        n = tf.shape(tf.nest.flatten(x)[0])[0]
        k = (n + self.m - 1) // self.m
        is_float = [_is_float(v) for v in self.model.non_trainable_variables]
        take = lambda t, i: None if t is None else tf.nest.map_structure(  # noqa: E731
            lambda a: a[i * self.m : (i + 1) * self.m], t
        )

        def body(i, grad_sum, loss_sum, float_sum, seeds, preds):
            xi, yi, swi = take(x, i), take(y, i), take(sample_weight, i)
            ni = tf.shape(tf.nest.flatten(xi)[0])[0]
            w_i = tf.cast(ni, "float32")
            # every micro-batch's pass 1 starts from the same BN statistics; dropout seeds advance
            start, it = [], iter(seeds)
            for s, f in zip(states, is_float):
                start.append(s if f else next(it))
            loss, grads, y_pred, after = self._sam_gradient(xi, yi, swi, start)
            grad_sum = [a + w_i * ops.cast(g, a.dtype) for a, g in zip(grad_sum, grads)]
            after_floats = [s for s, f in zip(after, is_float) if f]
            float_sum = [a + w_i * ops.cast(s, a.dtype) for a, s in zip(float_sum, after_floats)]
            seeds = [s for s, f in zip(after, is_float) if not f]
            return i + 1, grad_sum, loss_sum + w_i * ops.cast(loss, "float32"), float_sum, seeds, preds.write(i, ops.cast(y_pred, "float32"))

        float_states = [s for s, f in zip(states, is_float) if f]
        seed_states = [s for s, f in zip(states, is_float) if not f]
        init = (
            tf.constant(0),
            [ops.zeros_like(v) for v in self.model.trainable_variables],
            tf.constant(0.0),
            [ops.zeros_like(s) for s in float_states],
            seed_states,
            tf.TensorArray("float32", size=k, infer_shape=False),
        )
        _, grad_sum, loss_sum, float_sum, seeds, preds = tf.while_loop(
            lambda i, *_: i < k, body, init, parallel_iterations=1
        )
        total = tf.cast(n, "float32")
        grads = [g / ops.cast(total, g.dtype) for g in grad_sum]  # mean, not sum, of micro-batch grads
        new_states, floats, seeds_it = [], iter(float_sum), iter(seeds)
        for s, f in zip(states, is_float):
            new_states.append(next(floats) / ops.cast(total, s.dtype) if f else next(seeds_it))
        y_pred = preds.concat()
        y_pred.set_shape(self._output_shape(x))  # concat loses the static shape metrics need
        return loss_sum / total, grads, y_pred, new_states
