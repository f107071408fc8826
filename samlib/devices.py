"""Where a run executes: device detection, the tf.distribute strategy, XLA and the precision policy."""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import keras
import tensorflow as tf

from samlib.config import Config


def gpus() -> list:
    return tf.config.list_logical_devices("GPU")


def describe() -> str:
    """One line: what TensorFlow sees (for logs and metrics.json)."""
    gpu = gpus()
    cpus = tf.config.list_logical_devices("CPU")
    return f"{len(gpu)} GPU(s)" if gpu else f"CPU ({len(cpus)} logical device(s))"


def resolve_jit(config: Config) -> bool:
    """XLA on for GPUs, off on CPU, where it makes this CNN 4-8x slower (measured); explicit wins."""
    return bool(gpus()) if config.jit_compile is None else config.jit_compile


def make_strategy(config: Config) -> tf.distribute.Strategy:
    """`none`: the default (one device). `mirrored`: all GPUs, or all logical CPUs when there are no
    GPUs (tests split the CPU with `tf.config.set_logical_device_configuration`). `auto`: mirrored
    when more than one GPU is visible, else none."""
    gpu = gpus()
    if config.strategy == "none" or (config.strategy == "auto" and len(gpu) < 2):
        return tf.distribute.get_strategy()
    devices = [d.name for d in gpu] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return _mirrored(tuple(devices))


@functools.lru_cache(maxsize=None)
def _mirrored(devices: tuple[str, ...]) -> tf.distribute.MirroredStrategy:
    # one strategy per device set and process: separate MirroredStrategy objects over the same
    # devices reuse collective instance keys and abort each other's all-reduces
    return tf.distribute.MirroredStrategy(list(devices))


@contextlib.contextmanager
def precision(policy: str) -> Iterator[None]:
    """Set Keras' global dtype policy for the duration of a run, then put the old one back."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
