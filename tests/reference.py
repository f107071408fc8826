"""Reference SAM written with the backend's plain autodiff (`tf.GradientTape` or `jax.grad`) + numpy,
shared by the SAM tests, on whichever Keras backend the test process runs (``KERAS_BACKEND``).

It uses its own copy of the network only as a differentiable function (`stateless_call` at given
weights), computes the loss by hand (softmax cross-entropy, sample weights, L2 terms), builds ε̂ in
numpy and applies SGD/Adam in numpy.
"""

from __future__ import annotations

import os

import keras
import numpy as np
from keras import ops

from samlib.sam import SAM

TOL = 1e-5
LAM = 0.01  # L2 coefficient of the regularized model


def mlp(bn: bool = False, reg: float = 0.0, dropout: float = 0.0, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    r = keras.regularizers.L2(reg) if reg else None
    layers = [keras.Input((6,)), keras.layers.Dense(16, kernel_regularizer=r)]
    if bn:
        layers.append(keras.layers.BatchNormalization(momentum=0.9))
    layers.append(keras.layers.Activation("tanh"))
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(3, kernel_regularizer=r))
    return keras.Sequential(layers)


def data(n: int = 12, seed: int = 1, classes: int = 3, shape=(6,)):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = rng.integers(0, classes, size=n).astype("int32")
    sw = rng.uniform(0.2, 2.0, size=n).astype("float32")
    return x, y, sw


# ---------------------------------------------------------------------- the reference
def value_and_grad(f, w):
    """(f(w), aux, ∇f(w)) for ``value, aux = f(w)``, `w` a list of float32 arrays: the backend's autodiff."""
    w = [ops.convert_to_tensor(np.asarray(a, "float32")) for a in w]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(w)
            value, aux = f(w)
        grads = tape.gradient(value, w)
    else:
        import jax

        (value, aux), grads = jax.value_and_grad(f, has_aux=True)(w)
    return float(value), aux, [np.asarray(g).astype("float64") for g in grads]


def xent(logits, y):
    """Per-example softmax cross-entropy of integer labels `y`, by hand."""
    picked = ops.take_along_axis(logits, ops.expand_dims(ops.convert_to_tensor(y, "int32"), 1), axis=1)[:, 0]
    return ops.logsumexp(logits, axis=1) - picked


def ref_loss_and_grad(net, w, x, y, sw, reg):
    """Mean weighted cross-entropy (+ Σ reg·‖kernel‖²) and its gradient at weights w, by hand; the
    network's non-trainable variables (BN statistics) are left as that training-mode pass updates them."""
    for v, value in zip(net.trainable_variables, w):
        v.assign(value)
    states = [v.value for v in net.non_trainable_variables]

    def loss_of(wt):
        logits, new_states = net.stateless_call(wt, states, x, training=True)
        loss = ops.sum(xent(logits, y) * sw) / len(x)
        if reg:
            loss += sum(reg * ops.sum(ops.square(a)) for a, v in zip(wt, net.trainable_variables) if "kernel" in v.path)
        return loss, new_states

    loss, new_states, grads = value_and_grad(loss_of, w)
    for v, value in zip(net.non_trainable_variables, new_states):
        v.assign(value)
    return loss, grads


def ref_epsilon(g, w, rho, adaptive, weight_mask=None, eta=0.01):
    """SAM: ρ g/‖g‖. ASAM (Kwon et al. 2021, their reference code): T = |w| + η for parameters that
    PyTorch names 'weight' (here: kernels and BN γ, `weight_mask`), T = 1 for biases; ρ T² g / ‖T g‖."""
    if adaptive:
        mask = weight_mask if weight_mask is not None else [True] * len(w)
        t = [np.abs(wi) + eta if is_weight else np.ones_like(wi) for wi, is_weight in zip(w, mask)]
        norm = np.sqrt(sum(np.sum((ti * gi) ** 2) for ti, gi in zip(t, g)))
        return [rho * ti**2 * gi / (norm + 1e-12) for ti, gi in zip(t, g)]
    norm = np.sqrt(sum(np.sum(gi**2) for gi in g))
    return [rho * gi / (norm + 1e-12) for gi in g]


def ref_sam_step(net, x, y, sw=None, rho=0.05, adaptive=False, m=None, reg=0.0, opt="sgd", lr=0.1, eta=0.01):
    """Expected (weights, non-trainable states) after one SAM step; `net` is the reference copy."""
    sw = np.ones(len(x), "float32") if sw is None else sw
    w0 = [v.numpy().astype("float64") for v in net.trainable_variables]
    s0 = [v.numpy() for v in net.non_trainable_variables]
    m = m or len(x)
    g_sum = [np.zeros_like(wi) for wi in w0]
    s_sum = [np.zeros(s.shape, "float64") for s in s0]
    for start in range(0, len(x), m):
        sl = slice(start, start + m)
        n_i = len(x[sl])
        for v, s in zip(net.non_trainable_variables, s0):
            v.assign(s)  # each micro-batch's first pass starts from the step's BN statistics
        _, g = ref_loss_and_grad(net, w0, x[sl], y[sl], sw[sl], reg)
        s_after = [v.numpy() for v in net.non_trainable_variables]  # BN stats after the w pass
        weight_mask = [v.path.endswith(("kernel", "gamma")) for v in net.trainable_variables]
        eps = ref_epsilon(g, w0, rho, adaptive, weight_mask, eta)
        _, g2 = ref_loss_and_grad(net, [wi + ei for wi, ei in zip(w0, eps)], x[sl], y[sl], sw[sl], reg)
        g_sum = [a + n_i * b for a, b in zip(g_sum, g2)]
        s_sum = [a + n_i * b for a, b in zip(s_sum, s_after)]
    g = [a / len(x) for a in g_sum]
    if opt == "sgd":
        w1 = [wi - lr * gi for wi, gi in zip(w0, g)]
    else:  # Keras' Adam, first step (t = 1), written out
        b1, b2, eps_hat = 0.9, 0.999, 1e-7
        alpha = lr * np.sqrt(1 - b2) / (1 - b1)
        w1 = [wi - alpha * ((1 - b1) * gi) / (np.sqrt((1 - b2) * gi**2) + eps_hat) for wi, gi in zip(w0, g)]
    return w0, w1, [a / len(x) for a in s_sum]


def make_optimizer(opt, lr=0.1):
    return keras.optimizers.SGD(lr) if opt == "sgd" else keras.optimizers.Adam(lr)


def sam_step(builder, x, y, sw=None, opt="sgd", **sam_kwargs):
    """One SAM step with samlib on a fresh model; returns its weights and non-trainable states."""
    net = builder()
    model = SAM(net, **sam_kwargs)
    model.compile(optimizer=make_optimizer(opt), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, y, sample_weight=sw)
    return [v.numpy() for v in net.trainable_variables], [v.numpy() for v in net.non_trainable_variables]


def assert_step_matches(w0, w_expected, w_got, tol=TOL):
    step = max(np.max(np.abs(e - a)) for e, a in zip(w_expected, w0))
    err = max(np.max(np.abs(e - g)) for e, g in zip(w_expected, w_got))
    if os.environ.get("SAMLIB_STEP_ERRORS"):  # a file to log err / step to (the worst error per backend)
        with open(os.environ["SAMLIB_STEP_ERRORS"], "a") as f:
            f.write(f"{keras.backend.backend()} {err / step:.3e}\n")
    assert step > 0
    assert err <= tol * step, f"max error {err:.3g} vs step {step:.3g}"
