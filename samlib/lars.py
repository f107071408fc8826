"""LARS (You, Gitman and Ginsburg 2017, "Large batch training of convolutional networks", Algorithm 1)
as a Keras 3 optimizer: momentum SGD whose step on each layer is scaled by a layer-wise local learning
rate, so that every layer moves by about the same fraction η of its weights whatever its gradient's size.

For each variable w with gradient g, weight decay β, trust coefficient η, momentum μ and lr γ:

    λ  = η·‖w‖ / (‖g‖ + β‖w‖ + ε)   if ‖w‖ > 0 and ‖g‖ > 0, else 1      (ε = `epsilon`, 1e-9)
    v ← μ·v + γ·λ·(g + β·w)
    w ← w − v                        (nesterov: w ← w − (μ·v + γ·λ·(g + β·w)), v the new velocity)

Norms are Frobenius norms of the whole variable (one λ per kernel). Variables excluded from the layer
adaptation, every variable of rank <= 1 (biases, BatchNorm γ and β) and those named by
`LARS.exclude_from_layer_adaptation`, take plain momentum SGD: λ = 1 and no weight decay. A variable
named by Keras' `exclude_from_weight_decay` keeps its λ but has β = 0.

The weight decay is LARS's own, inside the update (so it is scaled by λ and carried by the momentum);
Keras' decoupled decay of the base class (``w ← w − γ·wd·w`` before the step) is switched off. Written
with `keras.ops` only: it runs on any Keras backend.
"""

from __future__ import annotations

import re
from typing import Any

import keras
from keras import ops

from samlib.validate import boolean, number


@keras.saving.register_keras_serializable(package="samlib")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling (module docstring for the update). `learning_rate` γ (a float or
    a `LearningRateSchedule`), `momentum` μ in [0, 1), `weight_decay` β >= 0, `eta` η > 0 (the trust
    coefficient), `epsilon` >= 0 (added to the trust ratio's denominator), `nesterov`; a bad one raises a
    `samlib.validate.ConfigError` (a ValueError) naming it. Other keyword arguments go to
    `keras.optimizers.Optimizer` (clipping, EMA, loss scaling, gradient accumulation, name)."""

    LABEL = "LARS argument"  # how an error names a bad argument (`samlib.validate`)

    def __init__(self, learning_rate: Any = 0.1, momentum: float = 0.9, weight_decay: float | None = 0.0,
                 eta: float = 0.001, epsilon: float = 1e-9, nesterov: bool = False, **kwargs: Any) -> None:
        weight_decay = number(0)("weight_decay", 0.0 if weight_decay is None else weight_decay, self.LABEL)
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)
        self.momentum = number(0, 1, hi_open=True)("momentum", momentum, self.LABEL)
        self.eta = number(0, lo_open=True)("eta", eta, self.LABEL)
        self.epsilon = number(0)("epsilon", epsilon, self.LABEL)
        self.nesterov = boolean()("nesterov", nesterov, self.LABEL)

    def build(self, var_list: list) -> None:
        """One velocity v per variable, zeros."""
        if self.built:
            return
        super().build(var_list)
        self._velocities = self.add_optimizer_variables(var_list, "velocity")

    # ------------------------------------------------------------------ which variables adapt
    def exclude_from_layer_adaptation(self, var_list: list | None = None, var_names: list[str] | None = None) -> None:
        """Give these variables plain momentum SGD (λ = 1, no weight decay), besides those of rank <= 1:
        the variables of `var_list`, and those whose name contains one of `var_names`. As Keras'
        `exclude_from_weight_decay`: call it before the optimizer is built."""
        if self.built:
            raise ValueError("`exclude_from_layer_adaptation()` can only be configured before the optimizer is built.")
        self._no_adaptation = {self._var_key(v) for v in var_list or ()}
        self._no_adaptation_pattern = re.compile("|".join(map(re.escape, var_names))) if var_names else None

    def _adapts(self, variable: Any) -> bool:
        """Whether `variable` gets the trust ratio and the weight decay (a Python bool: traced once)."""
        if len(variable.shape) <= 1:  # biases, BatchNorm γ and β
            return False
        if self._var_key(variable) in getattr(self, "_no_adaptation", ()):
            return False
        pattern = getattr(self, "_no_adaptation_pattern", None)
        return pattern is None or pattern.search(variable.name) is None

    def _apply_weight_decay(self, variables: list) -> None:
        """Off: LARS's weight decay is inside its update (`update_step`), not Keras' decoupled decay."""

    # ------------------------------------------------------------------ the step
    def _trust_ratio(self, variable: Any, gradient: Any, beta: float) -> Any:
        """λ = η‖w‖/(‖g‖ + β‖w‖ + ε), or 1 where ‖w‖ = 0 or ‖g‖ = 0."""
        dtype = variable.dtype
        w_norm = ops.sqrt(ops.sum(ops.square(variable)))  # ‖w‖
        g_norm = ops.sqrt(ops.sum(ops.square(gradient)))  # ‖g‖
        eta, beta, eps = (ops.cast(c, dtype) for c in (self.eta, beta, self.epsilon))
        ratio = eta * w_norm / (g_norm + beta * w_norm + eps)  # η‖w‖/(‖g‖ + β‖w‖ + ε)
        both = ops.logical_and(ops.greater(w_norm, 0), ops.greater(g_norm, 0))
        return ops.where(both, ratio, ops.ones_like(ratio))  # λ = 1 for a zero weight or a zero gradient

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One LARS step of `variable` (module docstring)."""
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)  # γ
        g = ops.cast(gradient, dtype)
        mu = ops.cast(self.momentum, dtype)  # μ
        if self._adapts(variable):
            beta = self.weight_decay if self._use_weight_decay(variable) else 0.0  # β
            local_lr = self._trust_ratio(variable, g, beta)  # λ
            decayed = g + ops.cast(beta, dtype) * variable if beta else g  # g + β·w
            step = lr * local_lr * decayed  # γ·λ·(g + β·w)
        else:
            step = lr * g  # plain momentum SGD: λ = 1, β = 0
        v = self._velocities[self._get_variable_index(variable)]
        self.assign(v, mu * v + step)  # v ← μ·v + γ·λ·(g + β·w)
        if self.nesterov:
            self.assign_sub(variable, mu * v + step)  # w ← w − (μ·v + γ·λ·(g + β·w))
        else:
            self.assign_sub(variable, v)  # w ← w − v

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()  # learning_rate, weight_decay, name, clipping, ...
        config.update(momentum=self.momentum, eta=self.eta, epsilon=self.epsilon, nesterov=self.nesterov)
        return config
