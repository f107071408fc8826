"""Split the CPU into two logical devices before TensorFlow starts, so multi-replica code
(tf.distribute.MirroredStrategy) is tested on this GPU-less machine. Single-device code still runs
on /CPU:0 as before."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
