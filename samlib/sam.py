"""Sharpness-Aware Minimization (Foret et al. 2021, "Sharpness-Aware Minimization for Efficiently
Improving Generalization", Algorithm 1) as a Keras 3 model wrapper.

One SAM step on a batch with loss L and weights w:

    g      = ∇L(w)                              gradient at w (training mode: dropout on, BN batch stats)
    ε̂      = ρ · g / (‖g‖₂ + 1e-12)             SAM
    ε̂      = ρ · T_w² g / ‖T_w g‖₂              ASAM (Kwon et al. 2021, adaptive=True), T_w = |w| + η
                                                 on kernels (and BN γ), 1 on biases, as their code does
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
- Backends: TensorFlow and JAX. Only the gradient call and the train step's signature differ
  (`samlib.backends`: on JAX the step runs on the state Keras passes and returns the new state); on JAX
  `keras.distribution.DataParallel` takes the global batch's step (ε̂ from the global gradient).
- Gradient accumulation (`gradient_accumulation_steps` on the base optimizer): each micro-batch
  perturbs from the unchanged w with its own ε̂; the update is the mean of their SAM gradients.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
from keras import ops

from samlib import backends
from samlib.validate import integer, number

EPS = 1e-12  # the guard in ε̂ = ρ·g/(‖g‖₂ + EPS) (and in LookSAM's projections)


def _is_float(variable: keras.Variable) -> bool:
    return keras.backend.is_float_dtype(variable.dtype)


class Pass(NamedTuple):
    """What a forward/backward pass (or a whole SAM step) on one (micro-)batch produced."""

    loss: Any  # L(w): the batch's mean loss, regularization included, at the weights w
    grads: list  # loss-scaled gradient: ∇L at the pass's weights; in a SAM step, the descent ∇L(w + ε̂)
    y_pred: Any  # the predictions at w (what the compiled metrics see)
    states: list  # the non-trainable variables' values after the pass at w (BN statistics, dropout seeds)
    grad_norm: Any = None  # ‖∇L(w)‖₂ of the unscaled gradient (float32; set by a SAM step)
    eps_norm: Any = None  # ‖ε̂‖₂ (float32; set by a SAM step)


class SAM(keras.Model):
    """Wrap any Keras `model` so that `fit` trains it with SAM over the compiled base optimizer.

    `compile`, `fit`, `evaluate`, `predict` work as for any Keras model; training updates the wrapped
    model's own weights. ``rho=0`` reproduces the base optimizer exactly. `fit` also logs
    ``grad_norm`` (‖∇L(w)‖₂) and ``perturbation_norm`` (‖ε̂‖₂, = ρ for plain SAM), epoch means.

    Arguments are checked by `samlib.validate`'s checkers: `rho` and `eta` (ASAM's T_w = |w| + eta)
    finite numbers >= 0, `m` (the micro-batch size) None or an integer >= 1; a bad one raises a
    `samlib.validate.ConfigError` (a ValueError) naming it.
    """

    LABEL = "SAM argument"  # how an error names a bad argument (`samlib.validate`)

    def __init__(
        self,
        model: keras.Model,
        rho: float = 0.05,
        adaptive: bool = False,
        m: int | None = None,
        sync_perturbation: bool = False,
        eta: float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.eta = number(0)("eta", eta, self.LABEL)
        self.rho = number(0)("rho", rho, self.LABEL)
        self.m = integer(1).or_none()("m", m, self.LABEL)
        self.model = model
        self.adaptive = bool(adaptive)
        self.sync_perturbation = bool(sync_perturbation)
        # ‖∇L(w)‖₂ and ‖ε̂‖₂ of every step, averaged per epoch; train-only (see `metrics`)
        self.grad_norm_tracker = keras.metrics.Mean(name="grad_norm")
        self.perturbation_norm_tracker = keras.metrics.Mean(name="perturbation_norm")

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    # ------------------------------------------------------------------ metrics
    @property
    def _norm_trackers(self) -> tuple[keras.metrics.Metric, keras.metrics.Metric]:
        return self.grad_norm_tracker, self.perturbation_norm_tracker

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """The metrics Keras resets, and `evaluate` reports: the compiled loss and metrics. The norm
        trackers measure a SAM step, which `evaluate` does not take (it would report them as 0):
        `train_step` reports them and `reset_metrics` resets them."""
        return [m for m in super().metrics if all(m is not t for t in self._norm_trackers)]

    @property
    def metrics_variables(self) -> list[keras.Variable]:
        """The metrics' variables, the norm trackers' included: a JAX train step carries them in its state."""
        return super().metrics_variables + [v for t in self._norm_trackers for v in t.variables]

    def reset_metrics(self) -> None:
        super().reset_metrics()  # Keras calls this at every epoch's start
        for tracker in self._norm_trackers:
            tracker.reset_state()

    # ------------------------------------------------------------------ the two passes
    def _loss_and_grads(self, x, y, sample_weight, weights, states) -> Pass:
        """L and ∇L (loss-scaled) at `weights`, with the non-trainable `states` (BN stats, dropout
        seeds) as given; runs without touching any variable (the norms are left unset)."""
        variables = self.model.trainable_variables
        non_trainable = self.model.non_trainable_variables

        def scaled_loss(weights):
            mapping = list(zip(variables, weights)) + list(zip(non_trainable, states))
            with backends.scope(mapping, collect_losses=True) as scope:
                y_pred = self(x, training=True)
                loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
                new_states = [scope.get_current_value(v) for v in non_trainable]
                return self.optimizer.scale_loss(loss), (loss, y_pred, new_states)

        _, (loss, y_pred, new_states), grads = backends.value_and_grad(scaled_loss, weights)
        grads = [ops.zeros_like(w) if g is None else g for g, w in zip(grads, weights)]
        return Pass(loss, grads, y_pred, new_states)

    def _scale(self, variable, w):
        """ASAM's T_w: |w| + η for kernels (and BN γ), 1 for biases and BN β (Kwon et al.'s code
        scales parameters named 'weight' only)."""
        if variable.path.endswith(("bias", "beta")):
            return ops.ones_like(w)
        return ops.abs(w) + self.eta

    def _perturbation(self, grads, weights):
        """(ε̂, ‖g‖₂) from the unscaled ascent gradient: ε̂ = ρ·g/‖g‖ (SAM) or ρ·T²g/‖Tg‖ (ASAM)."""
        context = backends.replica_context()  # tf.distribute's; None off TensorFlow
        replicas = 1 if context is None else context.num_replicas_in_sync
        if self.sync_perturbation and replicas > 1:
            # each replica's loss carries a 1/replicas factor, so the sum is the global-batch gradient
            grads, replicas = context.all_reduce("sum", grads), 1
        grad_norm = ops.sqrt(sum(ops.sum(ops.square(g)) for g in grads)) * replicas  # of this batch's mean loss
        if self.adaptive:
            scales = [self._scale(v, w) for v, w in zip(self.model.trainable_variables, weights)]
            scaled = [t * g for t, g in zip(scales, grads)]  # T_w g
        else:
            scaled = grads
        norm = ops.sqrt(sum(ops.sum(ops.square(s)) for s in scaled))
        factor = self.rho / (norm + EPS)
        # an overflowed (non-finite) ascent gradient gives no perturbation; the step is then skipped
        # by the loss-scale optimizer if the descent gradient overflows too
        factor = ops.where(ops.isfinite(factor), factor, ops.zeros_like(factor))
        if self.adaptive:
            return [factor * t * s for t, s in zip(scales, scaled)], grad_norm  # ρ T² g / ‖T g‖
        return [factor * g for g in grads], grad_norm

    def _two_passes(self, x, y, sample_weight, states) -> tuple[Pass, Pass]:
        """(the pass at w: ∇L(w); the SAM step: its grads ∇L(w + ε̂), with the norms), both loss-scaled."""
        weights = [backends.snapshot(v) for v in self.model.trainable_variables]
        at_w = self._loss_and_grads(x, y, sample_weight, weights, states)
        scale = self.optimizer.scale_loss(ops.ones((), dtype=at_w.loss.dtype))
        unscaled = [g / ops.cast(scale, g.dtype) for g in at_w.grads]
        eps, grad_norm = self._perturbation(unscaled, weights)
        eps_norm = ops.sqrt(sum(ops.sum(ops.square(e)) for e in eps))
        step = at_w._replace(grad_norm=ops.cast(grad_norm, "float32"), eps_norm=ops.cast(eps_norm, "float32"))
        if self.rho == 0.0:
            return at_w, step  # plain base-optimizer step
        perturbed = [w + e for w, e in zip(weights, eps)]  # climb to w + ε̂
        # same seeds as pass 1 -> same dropout mask; the scope discards this pass's state updates
        at_perturbed = self._loss_and_grads(x, y, sample_weight, perturbed, states)
        # "back to w" is implicit: w never changed
        return at_w, step._replace(grads=at_perturbed.grads)

    def _sam_gradient(self, x, y, sample_weight, states) -> Pass:
        """One (micro-)batch's SAM step: loss and y_pred at w, descent gradient ∇L(w + ε̂), norms."""
        return self._two_passes(x, y, sample_weight, states)[1]

    # ------------------------------------------------------------------ train_step
    def train_step(self, *args):
        """Keras' train step: ``train_step(data)`` on TensorFlow (variables assigned in place);
        ``train_step(state, data) -> (logs, new state)`` on JAX (`backends.stateful_step`)."""
        if backends.is_tensorflow():
            return self._train_step(*args)
        state, data = args
        return backends.stateful_step(self, state, lambda: self._train_step(data))

    def _train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        states = [backends.snapshot(v) for v in self.model.non_trainable_variables]
        # forward + backward at w, climb to w + ε̂, gradient there (per micro-batch of m for m-SAM)
        if self.m is None:
            step = self._sam_gradient(x, y, sample_weight, states)
        elif backends.is_tensorflow():
            step = self._micro_batched(x, y, sample_weight, states)
        else:
            step = self._micro_batched_scan(x, y, sample_weight, states)
        for variable, value in zip(self.model.non_trainable_variables, step.states):
            variable.assign(value)
        backends.apply_gradients(self.optimizer, step.grads, self.model.trainable_variables)  # base optimizer steps from w
        return self._update_metrics(x, y, sample_weight, step)

    def _update_metrics(self, x, y, sample_weight, step: Pass) -> dict[str, Any]:
        """Update the compiled loss and metrics and the norm trackers; the logs of this step."""
        # Keras divides each replica's loss by the replica count; the loss metric reports the true mean
        replicas = backends.replicas_in_sync()
        for metric in self.metrics:
            if metric.name == "loss":  # the compiled loss tracker
                metric.update_state(step.loss * replicas, sample_weight=ops.shape(keras.tree.flatten(x)[0])[0])
        self.grad_norm_tracker.update_state(step.grad_norm)
        self.perturbation_norm_tracker.update_state(step.eps_norm)
        logs = self.compute_metrics(x, y, step.y_pred, sample_weight=sample_weight)
        return {**logs, **{t.name: t.result() for t in self._norm_trackers}}

    def _output_shape(self, x):
        import tensorflow as tf

        try:
            return tf.TensorShape(self.model.compute_output_shape(tf.nest.flatten(x)[0].shape))
        except Exception:  # a subclassed model that cannot say; metrics then see an unknown shape
            return tf.TensorShape(None)

    def _micro_batched(self, x, y, sample_weight, states) -> Pass:
        """m-sharpness: a SAM gradient per micro-batch of `m` examples, averaged by micro-batch size
        (TensorFlow: a `tf.while_loop`; `_micro_batched_scan` is the same on JAX)."""
        import tensorflow as tf

        n = tf.shape(tf.nest.flatten(x)[0])[0]
        k = (n + self.m - 1) // self.m
        is_float = [_is_float(v) for v in self.model.non_trainable_variables]
        take = lambda t, i: None if t is None else tf.nest.map_structure(  # noqa: E731
            lambda a: a[i * self.m : (i + 1) * self.m], t
        )

        def body(i, grad_sum, loss_sum, float_sum, seeds, preds, norm_sum):
            xi, yi, swi = take(x, i), take(y, i), take(sample_weight, i)
            w_i = tf.cast(tf.shape(tf.nest.flatten(xi)[0])[0], "float32")  # this micro-batch's size
            carry, y_pred = self._accumulate((grad_sum, loss_sum, float_sum, seeds, norm_sum), xi, yi, swi, w_i,
                                             states, is_float)
            grad_sum, loss_sum, float_sum, seeds, norm_sum = carry
            return i + 1, grad_sum, loss_sum, float_sum, seeds, preds.write(i, y_pred), norm_sum

        float_states = [s for s, f in zip(states, is_float) if f]
        seed_states = [s for s, f in zip(states, is_float) if not f]
        init = (
            tf.constant(0),
            [ops.zeros_like(v) for v in self.model.trainable_variables],
            tf.constant(0.0),
            [ops.zeros_like(s) for s in float_states],
            seed_states,
            tf.TensorArray("float32", size=k, infer_shape=False),
            [tf.constant(0.0), tf.constant(0.0)],
        )
        _, grad_sum, loss_sum, float_sum, seeds, preds, norm_sum = tf.while_loop(
            lambda i, *_: i < k, body, init, parallel_iterations=1
        )
        total = tf.cast(n, "float32")
        grads = [g / ops.cast(total, g.dtype) for g in grad_sum]  # mean, not sum, of micro-batch grads
        new_states, floats, seeds_it = [], iter(float_sum), iter(seeds)
        for s, f in zip(states, is_float):
            new_states.append(next(floats) / ops.cast(total, s.dtype) if f else next(seeds_it))
        y_pred = preds.concat()
        y_pred.set_shape(self._output_shape(x))  # concat loses the static shape metrics need
        grad_norm, eps_norm = (s / tf.cast(k, "float32") for s in norm_sum)  # means over micro-batches
        return Pass(loss_sum / total, grads, y_pred, new_states, grad_norm, eps_norm)

    def _micro_batched_scan(self, x, y, sample_weight, states) -> Pass:
        """m-sharpness on JAX: `jax.lax.scan` over the full micro-batches of `m`, then the remainder;
        the same sums as `_micro_batched` (static shapes: the remainder's size is known when traced)."""
        import jax

        n = keras.tree.flatten(x)[0].shape[0]
        full, rest = divmod(n, self.m)
        is_float = [_is_float(v) for v in self.model.non_trainable_variables]
        carry = (
            [ops.zeros(v.shape, v.dtype) for v in self.model.trainable_variables],
            ops.zeros((), "float32"),
            [ops.zeros_like(s) for s, f in zip(states, is_float) if f],
            [s for s, f in zip(states, is_float) if not f],
            [ops.zeros((), "float32"), ops.zeros((), "float32")],
        )

        def body(carry, batch):
            w_i = float(keras.tree.flatten(batch[0])[0].shape[0])  # this micro-batch's size (static on JAX)
            return self._accumulate(carry, *batch, w_i, states, is_float)

        preds = []
        if full:
            shape = lambda a: ops.reshape(a[: full * self.m], (full, self.m, *a.shape[1:]))  # noqa: E731
            batches = tuple(_map(shape, t) for t in (x, y, sample_weight))
            carry, stacked = jax.lax.scan(body, carry, batches)
            preds.append(ops.reshape(stacked, (full * self.m, *stacked.shape[2:])))
        if rest:
            tail = tuple(_map(lambda a: a[full * self.m :], t) for t in (x, y, sample_weight))
            carry, pred = body(carry, tail)
            preds.append(pred)
        grad_sum, loss_sum, float_sum, seeds, norm_sum = carry
        grads = [g / ops.cast(n, g.dtype) for g in grad_sum]  # mean, not sum, of micro-batch grads
        floats, seeds_it = iter(float_sum), iter(seeds)
        new_states = [next(floats) / ops.cast(n, s.dtype) if f else next(seeds_it) for s, f in zip(states, is_float)]
        k = full + (1 if rest else 0)
        grad_norm, eps_norm = (s / k for s in norm_sum)  # means over micro-batches
        return Pass(loss_sum / n, grads, ops.concatenate(preds, axis=0), new_states, grad_norm, eps_norm)

    def _accumulate(self, carry, xi, yi, swi, w_i, states, is_float):
        """One micro-batch's SAM gradient added, weighted by its size `w_i`, to the running sums `carry`
        (gradients, loss, float states, the dropout seeds it advances, the two norms); (carry, y_pred).
        The body of both backends' loops: TensorFlow's `tf.while_loop` and JAX's `lax.scan`."""
        grad_sum, loss_sum, float_sum, seeds, norm_sum = carry
        # every micro-batch's pass 1 starts from the same BN statistics; dropout seeds advance
        it = iter(seeds)
        start = [s if f else next(it) for s, f in zip(states, is_float)]
        step = self._sam_gradient(xi, yi, swi, start)
        grad_sum = [a + w_i * ops.cast(g, a.dtype) for a, g in zip(grad_sum, step.grads)]
        after_floats = [s for s, f in zip(step.states, is_float) if f]
        float_sum = [a + w_i * ops.cast(s, a.dtype) for a, s in zip(float_sum, after_floats)]
        seeds = [s for s, f in zip(step.states, is_float) if not f]
        norm_sum = [a + ops.cast(b, "float32") for a, b in zip(norm_sum, (step.grad_norm, step.eps_norm))]
        loss_sum = loss_sum + w_i * ops.cast(step.loss, "float32")
        return (grad_sum, loss_sum, float_sum, seeds, norm_sum), ops.cast(step.y_pred, "float32")


def _map(function, structure):
    """`function` on every tensor of a (possibly nested, possibly None) batch structure."""
    return None if structure is None else keras.tree.map_structure(function, structure)
