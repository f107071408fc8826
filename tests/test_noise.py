"""The gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018, App. A; `samlib.noise`),
checked against per-example gradients that numpy computes exactly for softmax regression:
dL/dW = x (p − y)ᵀ, dL/db = p − y."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from samlib import measures as M
from samlib import sharpness as S
from samlib.config import SharpnessSettings
from samlib.evaluation import make_loss
from samlib.noise import gradient_noise_scale, noise_scale
from samlib.objective import Objective

N, D, K = 40, 5, 3


def softmax_regression(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = rng.integers(0, K, N).astype(np.int32)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K)])
    model.set_weights([rng.standard_normal((D, K)).astype(np.float32) * 0.5,
                       rng.standard_normal(K).astype(np.float32) * 0.1])
    return model, x, y


def exact(model, x, y) -> tuple[float, float, float]:
    """(B_simple, S², |G|²) in float64: S² the per-example variance (divisor N − 1) summed over coordinates."""
    w, b = (v.astype(np.float64) for v in model.get_weights())
    logits = x.astype(np.float64) @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = p - np.eye(K)[y]  # p − y
    per_example = np.concatenate([(x[:, :, None] * delta[:, None, :]).reshape(N, -1), delta], axis=1)
    g = per_example.mean(0)
    s2 = ((per_example - g) ** 2).sum() / (N - 1)
    return s2 / (g @ g), s2, g @ g


def test_with_micro_batches_of_one_it_is_the_exact_noise_scale():
    model, x, y = softmax_regression()
    b_simple, s2, g2 = exact(model, x, y)
    found = gradient_noise_scale(model, make_loss(), x, y, micro_batch=1)
    assert list(found) == ["b_simple", "trace_sigma", "grad_norm_sq", "micro_batch"]  # the registry's keys
    assert found["micro_batch"] == 1
    assert found["grad_norm_sq"] == pytest.approx(g2, rel=1e-5)  # float32 gradients
    assert found["trace_sigma"] == pytest.approx(s2, rel=1e-5)
    assert found["b_simple"] == pytest.approx(b_simple, rel=1e-5)


def test_with_micro_batches_of_four_it_is_unbiased_over_permutations():
    model, x, y = softmax_regression(seed=1)
    b_simple = exact(model, x, y)[0]
    obj = Objective(model, make_loss(), x, y, 1000)
    draws = np.array([noise_scale(obj, 4, seed)[0] for seed in range(300)])
    assert draws.std() > 0.05 * b_simple  # each draw is noisy ...
    assert draws.mean() == pytest.approx(b_simple, rel=0.04)  # ... their mean is not (|G|² is exact)
    print(f"B_simple {b_simple:.3f}; b = 4 over 300 permutations: {draws.mean():.3f} ± {draws.std() / 300 ** 0.5:.3f}")


def test_the_micro_batch_is_at_most_half_the_examples_and_the_draw_is_seeded():
    model, x, y = softmax_regression(seed=2)
    obj = Objective(model, make_loss(), x, y, 16)
    assert noise_scale(obj, 32, 0)[3] == 20 and noise_scale(obj, 32, 0) == noise_scale(obj, 32, 0)
    assert noise_scale(obj, 8, 0) != noise_scale(obj, 8, 1)
    with pytest.raises(ValueError, match="micro_batch"):
        noise_scale(obj, 0, 0)


def test_it_is_a_measure_not_taken_by_default():
    assert M.NOISE == "noise_scale" and M.NOISE in M.NAMES and M.NOISE not in M.DEFAULT_MEASURES
    assert M.label("b_simple") == "gradient noise scale B_simple" and M.measure_of("b_simple").name == M.NOISE
    assert M.normalise(["b_simple"]) == [M.NOISE]
    assert M.result_keys(SharpnessSettings(measures=(M.NOISE,))) == [
        *M.CONTEXT, "b_simple", "trace_sigma", "grad_norm_sq", "micro_batch"]
    settings = SharpnessSettings.from_dict({"measures": ["sam"], "milestones": {"loss=0.1": ["noise_scale"]}})
    assert settings.at_milestone("loss=0.1").measures == (M.NOISE,)
    model, x, y = softmax_regression(seed=3)
    out = S.measure(model, make_loss(), x, y, ["noise_scale"], seed=5)
    direct = gradient_noise_scale(model, make_loss(), x, y, seed=5)  # b = 32, capped at 20
    assert {k: out[k] for k in direct} == pytest.approx(direct)
    assert out["b_simple_seconds"] > 0 and out["grad_norm"] ** 2 == pytest.approx(out["grad_norm_sq"], rel=1e-5)
    assert "b_simple" not in S.measure(model, make_loss(), x, y, settings=SharpnessSettings(iters=2, max_iter=2))
