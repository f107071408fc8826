"""Test set-up per Keras backend (`KERAS_BACKEND`, read once per process).

TensorFlow: split the CPU into two logical devices before TensorFlow starts, so multi-replica code
(tf.distribute.MirroredStrategy) is tested on this GPU-less machine. Single-device code still runs
on /CPU:0 as before. Tests marked ``tensorflow_only`` are skipped on other backends (CI runs the
backend-neutral files again with ``KERAS_BACKEND=jax``: see the Makefile's ``test-jax``)."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def pytest_configure(config):
    config.addinivalue_line("markers", "tensorflow_only: needs the TensorFlow backend (tf.distribute, tf.data)")


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow only; this process runs Keras on {keras.backend.backend()}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)
