"""The seed CNN: layer stack, parameter count worked out by hand, logits out."""

import keras
import numpy as np

from samlib.models import build_cnn


def test_parameter_count_matches_the_hand_count():
    # conv 3x3x1x32 + 32; conv 3x3x32x64 + 64; 28 -> 26 -> 13 -> 11 -> 5: dense 5*5*64*10 + 10
    expected = (3 * 3 * 1 * 32 + 32) + (3 * 3 * 32 * 64 + 64) + (5 * 5 * 64 * 10 + 10)
    assert expected == 34_826
    assert build_cnn().count_params() == expected
    # CIFAR-10 shape: 32 -> 30 -> 15 -> 13 -> 6
    assert build_cnn((32, 32, 3)).count_params() == (3 * 3 * 3 * 32 + 32) + (3 * 3 * 32 * 64 + 64) + (6 * 6 * 64 * 10 + 10)


def test_layer_stack_and_logits():
    model = build_cnn(dropout=0.3)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dropout", "Dense"]
    assert model.layers[5].rate == 0.3 and model.layers[-1].activation is keras.activations.linear
    out = model(np.zeros((2, 28, 28, 1), "float32")).numpy()
    assert out.shape == (2, 10)


def test_weight_decay_adds_l2_on_kernels_only():
    model = build_cnn(weight_decay=0.2)
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    expected = sum(0.1 * np.sum(k.numpy() ** 2) for k in kernels)  # weight_decay/2 * ||W||^2
    assert np.isclose(float(sum(model.losses)), expected, rtol=1e-5)
