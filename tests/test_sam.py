"""SAM's one step against a reference written here with the backend's plain autodiff + numpy (on
TensorFlow and, in CI's second pass, on JAX: ``KERAS_BACKEND=jax``).

The reference uses its own copy of the network only as a differentiable function: it sets weights by
assignment, computes the loss by hand (softmax cross-entropy, sample weights, L2 terms), builds ε̂ in
numpy and applies SGD/Adam in numpy. Agreement is required to 1e-5 of the step size.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from reference import LAM, TOL, assert_step_matches, data, make_optimizer, mlp, ref_epsilon, ref_loss_and_grad
from reference import ref_sam_step, sam_step, value_and_grad, xent
from samlib.models import build_cnn
from samlib.sam import SAM


# ---------------------------------------------------------------------- one step vs reference
@pytest.mark.parametrize(
    "opt, kwargs",
    [
        ("sgd", dict(rho=0.05)),
        ("adam", dict(rho=0.05)),
        ("sgd", dict(rho=0.5, adaptive=True)),
        ("sgd", dict(rho=0.05, m=5)),  # micro-batches of 5, 5, 2: size-weighted mean
        ("sgd", dict(rho=0.05, m=4)),
    ],
    ids=["sam-sgd", "sam-adam", "asam", "msam-uneven", "msam-even"],
)
def test_one_step_matches_reference(opt, kwargs):
    x, y, _ = data()
    w0, w_ref, _ = ref_sam_step(mlp(), x, y, opt=opt, **kwargs)
    w_got, _ = sam_step(mlp, x, y, opt=opt, **kwargs)
    assert_step_matches(w0, w_ref, w_got)


def test_sample_weights_and_regularizer_count_in_both_passes():
    x, y, sw = data()
    w0, w_ref, _ = ref_sam_step(mlp(reg=LAM), x, y, sw=sw, rho=0.1, reg=LAM)
    w_got, _ = sam_step(lambda: mlp(reg=LAM), x, y, sw=sw, rho=0.1)
    assert_step_matches(w0, w_ref, w_got)
    # and a regularizer left out of the perturbed pass would be detectably different:
    _, w_wrong, _ = ref_sam_step(mlp(reg=LAM), x, y, sw=sw, rho=0.1, reg=0.0)
    assert max(np.max(np.abs(a - b)) for a, b in zip(w_wrong, w_ref)) > 100 * TOL * np.max(np.abs(w_ref[0] - w0[0]))


@pytest.mark.parametrize("m", [None, 5])
def test_batchnorm_statistics_updated_once_by_the_unperturbed_pass(m):
    x, y, _ = data()
    w0, w_ref, s_ref = ref_sam_step(mlp(bn=True), x, y, rho=0.2, m=m)
    w_got, s_got = sam_step(lambda: mlp(bn=True), x, y, rho=0.2, m=m)
    assert_step_matches(w0, w_ref, w_got)
    for expected, got in zip(s_ref, s_got):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # a moving mean that had seen the perturbed pass (or two passes) would differ from this
    assert not np.allclose(s_ref[0], 0.0)


@pytest.mark.parametrize("eta", [0.01, 0.5])
def test_asam_scales_kernels_and_gamma_by_abs_w_plus_eta_and_leaves_biases(eta):
    """Kwon et al.'s T_w = |w| + η on kernels and BN γ, 1 on biases and BN β (their code)."""
    x, y, _ = data()
    w0, w_ref, _ = ref_sam_step(mlp(bn=True), x, y, rho=0.5, adaptive=True, eta=eta)
    w_got, _ = sam_step(lambda: mlp(bn=True), x, y, rho=0.5, adaptive=True, eta=eta)
    assert_step_matches(w0, w_ref, w_got)


def test_train_step_logs_gradient_and_perturbation_norms():
    """‖∇L(w)‖₂ of the batch (by hand here) and ‖ε̂‖₂ = ρ for SAM; ρ T²g/‖Tg‖ has its own norm for ASAM."""
    x, y, _ = data()
    net = mlp()
    w0 = [v.numpy().astype("float64") for v in net.trainable_variables]
    _, g = ref_loss_and_grad(net, w0, x, y, np.ones(len(x), "float32"), 0.0)
    for adaptive, rho in ((False, 0.05), (True, 0.5)):
        model = SAM(net, rho=rho, adaptive=adaptive)
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        logs = model.train_on_batch(x, y, return_dict=True)
        assert logs["grad_norm"] == pytest.approx(np.sqrt(sum(np.sum(gi**2) for gi in g)), rel=1e-5)
        mask = [v.path.endswith(("kernel", "gamma")) for v in net.trainable_variables]
        eps = ref_epsilon(g, w0, rho, adaptive, mask)
        assert logs["perturbation_norm"] == pytest.approx(np.sqrt(sum(np.sum(e**2) for e in eps)), rel=1e-5)
        if not adaptive:
            assert logs["perturbation_norm"] == pytest.approx(rho, rel=1e-5)


def test_cnn_one_step_matches_reference():
    x, y, _ = data(n=8, classes=10, shape=(28, 28, 1))
    builder = lambda: (keras.utils.set_random_seed(3), build_cnn(dropout=0.0))[1]  # noqa: E731
    w0, w_ref, _ = ref_sam_step(builder(), x, y, rho=0.05)
    w_got, _ = sam_step(builder, x, y, rho=0.05)
    assert_step_matches(w0, w_ref, w_got)


# ---------------------------------------------------------------------- rho = 0 is the base optimizer
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_rho_zero_reproduces_base_optimizer_over_several_steps_with_dropout(opt):
    x, y, _ = data(n=24)
    plain = mlp(dropout=0.5, seed=7)
    plain.compile(optimizer=make_optimizer(opt), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net = mlp(dropout=0.5, seed=7)
    model = SAM(net, rho=0.0)
    model.compile(optimizer=make_optimizer(opt), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for _ in range(3):  # same dropout masks step after step: the RNG advances exactly as in plain Keras
        plain.train_on_batch(x, y)
        model.train_on_batch(x, y)
    for a, b in zip(plain.get_weights(), net.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- dropout: same mask in both passes
def test_second_pass_uses_the_first_pass_dropout_mask():
    rate, rho, lr = 0.5, 0.3, 0.1
    x, y, _ = data()
    net = mlp(dropout=rate, seed=11)
    # the mask Keras' Dropout layer will draw: same seed state, same shape, same stateless op
    dropout_layer = next(layer for layer in net.layers if isinstance(layer, keras.layers.Dropout))
    sg = keras.random.SeedGenerator(0)
    sg.state.assign(dropout_layer.seed_generator.state.numpy())
    mask = ops.convert_to_numpy(keras.random.dropout(np.ones((len(x), 16), "float32"), rate, seed=sg)) * (1 - rate)

    # reference network: the same weights with the mask applied by hand instead of a Dropout layer
    d1, d2 = (layer for layer in net.layers if isinstance(layer, keras.layers.Dense))
    w0 = [w.astype("float64") for w in net.get_weights()]

    def loss(wt):
        h = ops.tanh(ops.matmul(x, wt[0]) + wt[1]) * mask / (1 - rate)
        return ops.mean(xent(ops.matmul(h, wt[2]) + wt[3], y)), None

    def loss_grad(w):
        return value_and_grad(loss, w)[2]

    g = loss_grad(w0)
    eps = ref_epsilon(g, w0, rho, adaptive=False)
    g2 = loss_grad([a + e for a, e in zip(w0, eps)])
    w_ref = [a - lr * b for a, b in zip(w0, g2)]

    model = SAM(net, rho=rho)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, y)
    assert d1.kernel is net.trainable_variables[0] and d2.kernel is net.trainable_variables[2]
    assert_step_matches(w0, w_ref, net.get_weights())


# ---------------------------------------------------------------------- the Keras API
def test_fit_evaluate_predict_and_weights_restored_exactly():
    x, y, _ = data(n=40)
    net = mlp()
    model = SAM(net, rho=0.05)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    before = [w.copy() for w in net.get_weights()]
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "grad_norm", "perturbation_norm"}
    assert len(history.history["loss"]) == 2
    assert any(not np.array_equal(a, b) for a, b in zip(before, net.get_weights()))
    # evaluate takes no SAM step: it reports the compiled loss and metrics only, never the norms as 0
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == {"loss", "accuracy"}
    loss, acc = model.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(
        loss, float(ops.mean(xent(net(x), y))), rtol=1e-5
    )
    np.testing.assert_allclose(model.predict(x, verbose=0), ops.convert_to_numpy(net(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(rho=-0.1), dict(rho=float("nan")), dict(m=0), dict(m=2.5)])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError, match=r"^SAM argument '(rho|m)' has value "):
        SAM(mlp(), **kwargs)


# ---------------------------------------------------------------------- gradient accumulation
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_gradient_accumulation_is_m_sam_over_the_accumulated_batch(opt):
    """Base optimizer with gradient_accumulation_steps = k: each micro-batch's train step perturbs with its
    own ε̂ (from its own gradient, at the unchanged w) and the update after k of them is the base step on
    the mean of their SAM gradients: m-SAM on the k micro-batches together, m = the micro-batch size."""
    x, y, _ = data(n=12)
    w0, w_ref, _ = ref_sam_step(mlp(), x, y, rho=0.1, m=4, opt=opt)  # numpy: mean of 3 per-micro-batch SAM grads
    net = mlp()
    model = SAM(net, rho=0.1)
    base = (keras.optimizers.SGD if opt == "sgd" else keras.optimizers.Adam)(0.1, gradient_accumulation_steps=3)
    model.compile(optimizer=base, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for i in range(3):
        model.train_on_batch(x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4])
        if i < 2:  # accumulating: the weights stay at w, where the next micro-batch perturbs from
            for a, b in zip(w0, net.get_weights()):
                np.testing.assert_array_equal(b, a.astype("float32"))
    # Adam's first step is g/(|g| + 1e-7): the float32 sum of 3 micro-batch gradients moves its tiny
    # components by ~1e-5 of the step (SGD: < 1e-6); 1e-4 of the step is the bound we promise
    assert_step_matches(w0, w_ref, net.get_weights(), tol=1e-4 if opt == "adam" else TOL)
    assert int(ops.convert_to_numpy(model.optimizer.iterations)) == 1
