"""LookSAM (Liu et al. 2022, "Towards Efficient and Scalable Sharpness-Aware Minimization", Alg. 1):
the full SAM step only every k-th step; in between, the sharpness direction it found is reused.

Every k-th step (t mod k = 0), a SAM step that also stores the part of the SAM gradient orthogonal to
the plain gradient:
    g_s = ∇L(w + ε̂),   g_v = g_s − (⟨g, g_s⟩ / ‖g‖²) · g
Other steps cost one forward/backward pass:
    g_s ≈ g + α · (‖g‖ / ‖g_v‖) · g_v
The base optimizer steps with g_s. Cost ≈ (1 + 1/k) × SGD; k = 1 is exactly SAM.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from samlib import backends
from samlib.sam import EPS, SAM, Pass
from samlib.validate import integer, invalid, number


def _dot(a, b):
    return sum(ops.sum(x * y) for x, y in zip(a, b))


class LookSAM(SAM):
    """SAM that recomputes the perturbed gradient every `k` steps and reuses its direction between.

    Arguments as `SAM`'s (checked the same way), and `k` an integer >= 1, `alpha` a finite number >= 0;
    `m` (m-sharpness) is not supported.
    """

    LABEL = "LookSAM argument"

    def __init__(self, model: keras.Model, rho: float = 0.05, k: int = 5, alpha: float = 0.7, **kwargs: Any):
        if kwargs.get("m") is not None:
            raise invalid("m", kwargs["m"], "null", self.LABEL, why="LookSAM has no m-sharpness; use SAM for m")
        super().__init__(model, rho=rho, **kwargs)
        self.k = integer(1)("k", k, self.LABEL)
        self.alpha = number(0)("alpha", alpha, self.LABEL)
        # the stored sharpness direction g_v, one slot per trainable weight (not part of the network)
        self.g_v = [
            self.add_weight(shape=v.shape, initializer="zeros", trainable=False, name=f"g_v_{i}")
            for i, v in enumerate(model.trainable_variables)
        ]

    def _sam_gradient(self, x, y, sample_weight, states) -> Pass:
        # each branch returns the step and the g_v to store: the stores happen outside the branch
        # (a JAX branch may not assign), so both backends run the same code
        if self.k == 1:
            step, g_v = self._full_step(x, y, sample_weight, states)
        else:
            full = ops.equal(self.optimizer.iterations % self.k, 0)
            step, g_v = ops.cond(
                full,
                lambda: self._full_step(x, y, sample_weight, states),
                lambda: self._reuse_step(x, y, sample_weight, states),
            )
        for slot, value in zip(self.g_v, g_v):
            slot.assign(value)
        return step

    def _full_step(self, x, y, sample_weight, states) -> tuple[Pass, list]:
        at_w, step = self._two_passes(x, y, sample_weight, states)
        # g_v: the component of g_s orthogonal to g (the sharpness direction to reuse)
        proj = _dot(at_w.grads, step.grads) / (_dot(at_w.grads, at_w.grads) + EPS)
        return step, [gs - proj * g for gs, g in zip(step.grads, at_w.grads)]

    def _reuse_step(self, x, y, sample_weight, states) -> tuple[Pass, list]:
        weights = [backends.snapshot(v) for v in self.model.trainable_variables]
        at_w = self._loss_and_grads(x, y, sample_weight, weights, states)
        g_v = [ops.convert_to_tensor(s.value) for s in self.g_v]
        g_norm, v_norm = ops.sqrt(_dot(at_w.grads, at_w.grads)), ops.sqrt(_dot(g_v, g_v))
        factor = self.alpha * g_norm / (v_norm + EPS)
        # no climb on this step: ‖ε̂‖ = 0; ‖g‖ of the scaled gradient (loss scale 1 unless mixed_float16)
        step = at_w._replace(grads=[g + factor * v for g, v in zip(at_w.grads, g_v)],
                             grad_norm=ops.cast(g_norm, "float32"), eps_norm=ops.zeros((), "float32"))
        return step, g_v
