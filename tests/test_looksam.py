"""LookSAM against a numpy reference: k = 1 is SAM; with k = 2 the in-between step reuses g_v."""

import keras
import numpy as np
import pytest

from reference import assert_step_matches, data, mlp, ref_epsilon, ref_loss_and_grad
from samlib.looksam import LookSAM
from samlib.sam import SAM


def fit_steps(wrapper_cls, steps, x, y, lr=0.1, **kwargs):
    net = mlp()
    model = wrapper_cls(net, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for _ in range(steps):
        model.train_on_batch(x, y)
    return net.get_weights()


def test_k1_equals_sam_over_several_steps():
    x, y, _ = data()
    sam = fit_steps(SAM, 3, x, y, rho=0.1)
    look = fit_steps(LookSAM, 3, x, y, rho=0.1, k=1)
    for a, b in zip(sam, look):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_k2_reuses_the_stored_sharpness_direction():
    rho, alpha, lr = 0.1, 0.7, 0.1
    x, y, _ = data()
    ones = np.ones(len(x), "float32")
    net = mlp()
    w = [v.numpy().astype("float64") for v in net.trainable_variables]
    # step 0: full SAM; store g_v = g_s - <g, g_s>/|g|^2 g
    _, g = ref_loss_and_grad(net, w, x, y, ones, 0.0)
    eps = ref_epsilon(g, w, rho, adaptive=False)
    _, gs = ref_loss_and_grad(net, [a + e for a, e in zip(w, eps)], x, y, ones, 0.0)
    proj = sum(np.sum(a * b) for a, b in zip(g, gs)) / sum(np.sum(a * a) for a in g)
    g_v = [b - proj * a for a, b in zip(g, gs)]
    w1 = [a - lr * b for a, b in zip(w, gs)]
    # step 1: one pass; g + alpha |g|/|g_v| g_v
    _, g1 = ref_loss_and_grad(net, w1, x, y, ones, 0.0)
    factor = alpha * np.sqrt(sum(np.sum(a * a) for a in g1)) / np.sqrt(sum(np.sum(v * v) for v in g_v))
    w2 = [a - lr * (b + factor * v) for a, b, v in zip(w1, g1, g_v)]
    got = fit_steps(LookSAM, 2, x, y, lr=lr, rho=rho, k=2, alpha=alpha)
    assert_step_matches(w1, w2, got)


@pytest.mark.parametrize("kwargs", [dict(k=0), dict(k=1.5), dict(alpha=-1.0), dict(m=4)])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match=r"^LookSAM argument '(k|alpha|m)' has value "):
        LookSAM(mlp(), **kwargs)
