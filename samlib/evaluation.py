"""The exact mean loss of a network over fixed batches, in inference mode."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def make_loss() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Evaluator:
    """The exact mean loss and accuracy of the bare network on one split, in inference mode.

    f = (1/N) Σ_b n_b · mean-loss(batch b) + Σ model.losses (regularization), dropout off: the value
    `metrics.json` reports as ``train_loss`` / ``val_loss`` / ``test_loss`` and the loss-target check
    compares with. A compiled forward pass over constant batches (no Keras `evaluate` loop), so a check
    costs about a quarter of an epoch of training. `split(x, y)` gives another split sharing the
    compiled functions (traced once per batch shape, not once per split).
    """

    def __init__(self, network: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int,
                 _functions: tuple | None = None) -> None:
        self.network, self.batch_size = network, batch_size
        self.n = len(x)
        self.batches = [(tf.constant(x[i : i + batch_size]), tf.constant(y[i : i + batch_size]))
                        for i in range(0, self.n, batch_size)]
        self._sums, self._reg = _functions or self._compile(network)

    @staticmethod
    def _compile(network: keras.Model) -> tuple:
        loss = make_loss()

        def batch_sums(xb, yb):
            logits = tf.cast(network(xb, training=False), "float32")
            n = tf.cast(tf.shape(yb)[0], "float32")
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=yb.dtype), yb), "float32"))
            return loss(yb, logits) * n, correct

        def regularization():
            return tf.add_n([tf.cast(v, "float32") for v in network.losses]) if network.losses else tf.zeros(())

        return (tf.function(batch_sums, jit_compile=False, reduce_retracing=True),
                tf.function(regularization, jit_compile=False))

    def split(self, x: np.ndarray, y: np.ndarray) -> "Evaluator":
        return Evaluator(self.network, x, y, self.batch_size, (self._sums, self._reg))

    def __call__(self) -> tuple[float, float]:
        """(loss, accuracy) at the network's current weights."""
        total, correct = 0.0, 0.0
        for xb, yb in self.batches:
            s, c = self._sums(xb, yb)
            total, correct = total + float(s), correct + float(c)
        return total / self.n + float(self._reg()), correct / self.n
