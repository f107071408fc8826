"""LARS (`samlib.lars`) and Keras' LAMB against numpy references written here from the papers' update
rules (You et al. 2017; Keras' `Lamb` as its source reads), on keras.Variables with fixed gradients;
both built from a Config (`samlib.optimizers`) and trained under SAM."""

from __future__ import annotations

import types

import keras
import numpy as np
import pytest

from samlib.config import Config
from samlib.lars import LARS
from samlib.models import build_network
from samlib.optimizers import make_optimizer, wrap
from samlib.sam import SAM
from samlib.validate import ConfigError

RTOL = 1e-5


# ---------------------------------------------------------------------- numpy references
def lars_ref(ws, grads, lr, mu, beta, eta, eps, adapts, nesterov=False):
    """You et al. 2017, Alg. 1, in float64: the weights after each step's gradients of `grads`."""
    ws, vs = [np.array(w, "float64") for w in ws], [np.zeros(np.shape(w)) for w in ws]
    for step in grads:
        for i, g in enumerate(step):
            w, g = ws[i], np.array(g, "float64")
            if adapts[i]:
                wn, gn, b = np.linalg.norm(w), np.linalg.norm(g), beta
                lam = eta * wn / (gn + b * wn + eps) if wn > 0 and gn > 0 else 1.0
            else:
                lam, b = 1.0, 0.0  # plain momentum SGD
            d = lr * lam * (g + b * w)
            vs[i] = mu * vs[i] + d
            ws[i] = w - (mu * vs[i] + d if nesterov else vs[i])
    return ws


def lamb_ref(ws, grads, lr, wd=0.0, b1=0.9, b2=0.999, eps=1e-7, coupled=False):
    """Keras' Lamb (keras/src/optimizers/lamb.py with the base class's decoupled decay), in float64:
    w ← w − lr·wd·w on every variable, then Adam moments with bias correction, r = m̂/(√v̂ + ε) and
    w ← w − lr·(‖w‖/‖r‖)·r (ratio 1 where a norm is 0). `coupled`: You et al. 2020 instead, r += wd·w
    before the trust ratio and no separate decay."""
    ws = [np.array(w, "float64") for w in ws]
    ms, vs = [np.zeros_like(w) for w in ws], [np.zeros_like(w) for w in ws]
    for t, step in enumerate(grads, start=1):
        for i, g in enumerate(step):
            if not coupled:
                ws[i] = ws[i] - lr * wd * ws[i]  # decoupled, before the step
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * np.square(g)
            r = (ms[i] / (1 - b1**t)) / (np.sqrt(vs[i] / (1 - b2**t)) + eps)
            if coupled:
                r = r + wd * ws[i]
            wn, rn = np.linalg.norm(ws[i]), np.linalg.norm(r)
            ratio = wn / rn if wn > 0 and rn > 0 else 1.0
            ws[i] = ws[i] - lr * ratio * r
    return ws


# ---------------------------------------------------------------------- running the optimizers
def problem(steps, seed=0):
    """A kernel, a bias, a zero kernel and a kernel whose gradient is always 0; `steps` gradient sets."""
    rng = np.random.default_rng(seed)
    ws = [rng.normal(size=(3, 4)), rng.normal(size=4), np.zeros((2, 3)), rng.normal(size=(2, 2))]
    grads = [[rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=(2, 3)), np.zeros((2, 2))]
             for _ in range(steps)]
    cast = lambda a: np.asarray(a, "float32")  # noqa: E731
    return [cast(w) for w in ws], [[cast(g) for g in step] for step in grads]


def run(optimizer, ws, grads, graph=False, names=None, before_build=None):
    variables = [keras.Variable(w, name=n) for w, n in zip(ws, names or [f"w{i}" for i in range(len(ws))])]
    if before_build:
        before_build(optimizer, variables)
    optimizer.build(variables)
    apply = lambda gs: optimizer.apply(gs, variables)  # noqa: E731
    if graph:  # as `fit` runs it on TensorFlow
        import tensorflow as tf

        apply = tf.function(apply)
    for step in grads:
        apply([keras.ops.convert_to_tensor(g) for g in step])
    return [keras.ops.convert_to_numpy(v) for v in variables]


def assert_moves_match(w0, got, ref):
    """The step from `w0` (not the weights: a wrong small step would hide in them) agrees with the
    reference; a variable the reference leaves where it was stays exactly there."""
    for i, (a, b, c) in enumerate(zip(w0, got, ref)):
        moved = np.asarray(c) - a
        if not np.any(moved):
            np.testing.assert_array_equal(b, a, err_msg=str(i))
            continue
        assert np.max(np.abs(moved)) > 1e-3, i  # a step big enough for float32 to show its error
        np.testing.assert_allclose(b - a, moved, rtol=RTOL, atol=RTOL * np.max(np.abs(moved)), err_msg=str(i))


ADAPTS = [True, False, True, True]  # the bias (rank 1) gets plain momentum


# ---------------------------------------------------------------------- LARS
@pytest.mark.parametrize("steps, graph", [(1, False), (5, False), pytest.param(5, True, marks=pytest.mark.tensorflow_only)],
                         ids=["1-step", "5-steps", "5-graph"])
@pytest.mark.parametrize("beta", [0.0, 0.01], ids=["no-decay", "decay"])
def test_lars_matches_the_reference(steps, graph, beta):
    ws, grads = problem(steps)
    hyper = dict(lr=0.5, mu=0.9, beta=beta, eta=0.05, eps=1e-9)
    got = run(LARS(0.5, momentum=0.9, weight_decay=beta, eta=0.05), ws, grads, graph=graph)
    assert_moves_match(ws, got, lars_ref(ws, grads, adapts=ADAPTS, **hyper))


def test_lars_nesterov_matches_the_reference():
    ws, grads = problem(4, seed=1)
    got = run(LARS(0.3, momentum=0.8, weight_decay=0.02, eta=0.1, nesterov=True), ws, grads)
    ref = lars_ref(ws, grads, lr=0.3, mu=0.8, beta=0.02, eta=0.1, eps=1e-9, adapts=ADAPTS, nesterov=True)
    assert_moves_match(ws, got, ref)
    plain = lars_ref(ws, grads, lr=0.3, mu=0.8, beta=0.02, eta=0.1, eps=1e-9, adapts=ADAPTS)
    assert not np.allclose(plain[0], ref[0], rtol=1e-3)  # the test tells nesterov from plain momentum


def test_zero_weight_or_zero_gradient_takes_lambda_one():
    # first step, w = 0: w ← −lr·g (λ = 1); g = 0 with decay: w ← w − lr·β·w (λ = 1, not η/β)
    ws, grads = problem(1)
    lr, beta = 0.5, 0.01
    got = run(LARS(lr, momentum=0.9, weight_decay=beta, eta=0.05), ws, grads)
    np.testing.assert_allclose(got[2], -lr * grads[0][2], rtol=RTOL)
    np.testing.assert_allclose(got[3] - ws[3], -lr * beta * ws[3], rtol=RTOL)
    assert got[3].dtype == np.float32 and np.all(np.isfinite(got[3]))


def test_the_trust_ratio_path_differs_from_plain_momentum():
    # a reference that treated every variable as the bias is (plain momentum SGD) would fail the tests above
    ws, grads = problem(1)
    adapted = lars_ref(ws, grads, lr=0.5, mu=0.9, beta=0.0, eta=0.05, eps=1e-9, adapts=ADAPTS)
    plain = lars_ref(ws, grads, lr=0.5, mu=0.9, beta=0.0, eta=0.05, eps=1e-9, adapts=[False] * 4)
    assert not np.allclose(adapted[0], plain[0], rtol=1e-2)


def test_excluded_variables_get_plain_momentum_and_excluded_decay_keeps_lambda():
    ws, grads = problem(3)
    names = ["conv_kernel", "bias", "skip_kernel", "other"]

    def exclude(optimizer, variables):
        optimizer.exclude_from_layer_adaptation(var_names=["skip"])
        optimizer.exclude_from_weight_decay(var_list=[variables[3]])

    got = run(LARS(0.5, momentum=0.9, weight_decay=0.01, eta=0.05), ws, grads, names=names, before_build=exclude)
    hyper = dict(lr=0.5, mu=0.9, eta=0.05, eps=1e-9)
    ref = lars_ref(ws, grads, beta=0.01, adapts=[True, False, False, True], **hyper)
    ref[3] = lars_ref(ws[3:], [s[3:] for s in grads], beta=0.0, adapts=[True], **hyper)[0]
    assert_moves_match(ws[:3], got[:3], ref[:3])
    np.testing.assert_allclose(got[3], ref[3], rtol=RTOL)  # g = 0, β = 0: this one does not move
    np.testing.assert_array_equal(got[3], ws[3])
    with pytest.raises(ValueError, match="before the optimizer is built"):
        built = LARS()
        built.build([keras.Variable(np.ones((2, 2), "float32"))])
        built.exclude_from_layer_adaptation(var_names=["x"])


def test_lars_config_round_trips_and_bad_arguments_are_named():
    optimizer = LARS(0.2, momentum=0.5, weight_decay=1e-4, eta=0.01, epsilon=1e-8, nesterov=True)
    config = optimizer.get_config()
    assert {k: config[k] for k in ("momentum", "weight_decay", "eta", "epsilon", "nesterov")} == dict(
        momentum=0.5, weight_decay=1e-4, eta=0.01, epsilon=1e-8, nesterov=True)
    assert LARS.from_config(config).get_config() == config
    assert keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)).get_config() == config
    for bad in (dict(momentum=1.0), dict(eta=0.0), dict(weight_decay=-1.0), dict(epsilon=-1.0)):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            LARS(**bad)


# ---------------------------------------------------------------------- Keras' LAMB
@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_keras_lamb_matches_the_reference(steps, wd):
    ws, grads = problem(steps, seed=2)
    ws[2] = ws[2] + 1.0  # LAMB's step is lr·‖w‖: a zero variable would not move
    got = run(keras.optimizers.Lamb(0.05, weight_decay=wd or None), ws, grads)
    moving = [0, 1, 2]  # the kernel with g = 0 moves only by the decay
    ref = lamb_ref(ws, grads, lr=0.05, wd=wd)
    assert_moves_match([ws[i] for i in moving], [got[i] for i in moving], [ref[i] for i in moving])
    np.testing.assert_allclose(got[3], ref[3], rtol=RTOL)  # = w·(1 − lr·wd)^steps
    if wd:
        coupled = lamb_ref(ws, grads, lr=0.05, wd=wd, coupled=True)
        assert not np.allclose(coupled[0], ref[0], rtol=1e-3)  # the decay's placement is tested


# ---------------------------------------------------------------------- from a Config, under SAM
def test_make_optimizer_builds_lars_and_lamb_from_the_config():
    config = Config(optimizer="lars", lr=0.2, momentum=0.8, weight_decay=1e-4, lars_eta=0.002)
    lars = make_optimizer(config, steps_per_epoch=10)
    assert type(lars) is LARS and float(lars.learning_rate) == pytest.approx(0.2)
    assert (lars.momentum, lars.weight_decay, lars.eta, lars.nesterov) == (0.8, 1e-4, 0.002, False)
    lamb = make_optimizer(config.replace(optimizer="lamb"), steps_per_epoch=10)
    assert type(lamb) is keras.optimizers.Lamb and lamb.weight_decay == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="lars_eta"):
        Config(lars_eta=0.0)


@pytest.mark.parametrize("name, l2", [("lars", False), ("lamb", False), ("adamw", False), ("momentum", True)])
def test_the_network_has_an_l2_term_only_for_optimizers_without_their_own_decay(name, l2):
    data = types.SimpleNamespace(input_shape=(28, 28, 1), num_classes=10)
    net = build_network(Config(optimizer=name, weight_decay=1e-3), data)
    assert (len(net.losses) > 0) == l2


@pytest.mark.parametrize("name", ["lars", "lamb"])
def test_sam_over_lars_and_lamb_trains(name):
    keras.utils.set_random_seed(0)
    config = Config(optimizer=name, sam="sam", lr=0.1, weight_decay=1e-4, rho=0.05)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model = wrap(config, net)
    assert type(model) is SAM
    model.compile(optimizer=make_optimizer(config, steps_per_epoch=2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.integers(0, 3, 16)
    before = [w.copy() for w in net.get_weights()]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations) == 2 and np.isfinite(history.history["loss"][0])
    after = net.get_weights()
    assert all(np.all(np.isfinite(w)) for w in after)
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))  # every weight moved
