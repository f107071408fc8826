"""Where a run executes: device detection, the tf.distribute strategy, XLA, the precision policy, and
`environment` (the software versions and hardware a run's metrics.json records).

On TensorFlow the devices are TensorFlow's and a ``mirrored`` strategy is `tf.distribute`'s. On JAX
the devices are `jax.devices()`, a run is always on one device (``strategy: none``; ``auto`` resolves to
it), and Keras compiles every step with `jax.jit` (``jit_compile`` false would run it op by op)."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from typing import Any, Iterator

import keras
import numpy as np

from samlib import backends
from samlib.config import Config


def gpus() -> list:
    """The GPUs the backend sees (TensorFlow's logical GPUs, or JAX's GPU devices)."""
    if backends.is_tensorflow():
        import tensorflow as tf

        return tf.config.list_logical_devices("GPU")
    import jax

    return [d for d in jax.devices() if d.platform == "gpu"]


def _cpus() -> list:
    if backends.is_tensorflow():
        import tensorflow as tf

        return tf.config.list_logical_devices("CPU")
    import jax

    return jax.devices("cpu")


def describe() -> str:
    """One line: what the backend sees (for logs and metrics.json)."""
    gpu = gpus()
    return f"{len(gpu)} GPU(s)" if gpu else f"CPU ({len(_cpus())} logical device(s))"


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
    """The names of the GPUs the backend sees (e.g. 'NVIDIA H100 80GB HBM3'; [] without one)."""
    if not backends.is_tensorflow():
        return [str(d.device_kind) for d in gpus()]
    import tensorflow as tf

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
    default), which change a run's numbers in the last digits. Off TensorFlow, ``tensorflow`` is null and
    ``keras_backend`` and its version (e.g. ``jax``) say what ran."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "keras": keras.__version__,
        "numpy": np.__version__,
        "os": platform.platform(),
        "processor": processor(),
        "cpu_count": len(cores) if cores is not None else os.cpu_count(),
        "gpus": gpu_names(),
        "tf_threads": {"intra_op": _int_or_none(os.environ.get("TF_NUM_INTRAOP_THREADS")),
                       "inter_op": _int_or_none(os.environ.get("TF_NUM_INTEROP_THREADS"))},
    } | ({} if backends.is_tensorflow() else {"keras_backend": backends.name(), backends.name(): _version(backends.name())})


def _version(module: str) -> str | None:
    """The module's version if the running backend is it (None: not imported, as TensorFlow on JAX)."""
    if module != backends.name():
        return None
    return __import__(module).__version__


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def resolve_jit(config: Config) -> bool:
    """TensorFlow: XLA on for GPUs, off on CPU, where it makes this CNN 4-8x slower (measured). JAX:
    on (`jax.jit`; off runs every op eagerly). Explicit wins."""
    if config.jit_compile is None:
        return bool(gpus()) or not backends.is_tensorflow()
    return config.jit_compile


def make_strategy(config: Config) -> Any:
    """`none`: the default (one device). `mirrored`: all GPUs, or all logical CPUs when there are no
    GPUs (tests split the CPU with `tf.config.set_logical_device_configuration`). `auto`: mirrored
    when more than one GPU is visible, else none."""
    gpu = gpus()
    if not backends.is_tensorflow():
        if config.strategy == "mirrored":
            raise ValueError("strategy 'mirrored' is TensorFlow's tf.distribute; on JAX a run uses one device "
                             "(strategy: none or auto)")
        return _OneDevice()
    import tensorflow as tf

    if config.strategy == "none" or (config.strategy == "auto" and len(gpu) < 2):
        return tf.distribute.get_strategy()
    devices = [d.name for d in gpu] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return _mirrored(tuple(devices))


class _OneDevice:
    """What a run needs of a strategy, off TensorFlow: a scope that does nothing, one replica."""

    num_replicas_in_sync = 1

    def scope(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


@functools.lru_cache(maxsize=None)
def _mirrored(devices: tuple[str, ...]) -> Any:
    import tensorflow as tf

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
