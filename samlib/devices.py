"""Where a run executes: device detection, the tf.distribute strategy, XLA, the precision policy, and
`environment` (the software versions and hardware a run's metrics.json records)."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from typing import Any, Iterator

import keras
import numpy as np
import tensorflow as tf

from samlib.config import Config


def gpus() -> list:
    return tf.config.list_logical_devices("GPU")


def describe() -> str:
    """One line: what TensorFlow sees (for logs and metrics.json)."""
    gpu = gpus()
    cpus = tf.config.list_logical_devices("CPU")
    return f"{len(gpu)} GPU(s)" if gpu else f"CPU ({len(cpus)} logical device(s))"


def processor() -> str:
    """The CPU's model name: /proc/cpuinfo's "model name" (Linux), else `platform.processor()`, else
    the machine type (e.g. 'arm64')."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """The names of the GPUs TensorFlow sees (e.g. 'NVIDIA H100 80GB HBM3'; [] without one)."""
    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (RuntimeError, ValueError):
            details = {}
        names.append(str(details.get("device_name", gpu.name)))
    return names


def environment() -> dict[str, Any]:
    """Where a run ran, as metrics.json records it under ``environment``: the versions of Python,
    TensorFlow, Keras and numpy, the operating system, the processor (`processor`), the CPU cores
    this process may use, the GPUs (`gpu_names`), and TensorFlow's intra-/inter-op threads when set
    (``tf_threads``: the TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS variables; null: TensorFlow's
    default), which change a run's numbers in the last digits."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "os": platform.platform(),
        "processor": processor(),
        "cpu_count": len(cores) if cores is not None else os.cpu_count(),
        "gpus": gpu_names(),
        "tf_threads": {"intra_op": _int_or_none(os.environ.get("TF_NUM_INTRAOP_THREADS")),
                       "inter_op": _int_or_none(os.environ.get("TF_NUM_INTEROP_THREADS"))},
    }


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


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
