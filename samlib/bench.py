"""``python -m samlib bench``: training throughput of SGD and the SAM variants on the CNN.

Random 28×28×1 data; for each (method, batch size) the model is compiled and warmed up (tracing),
then timed over several rounds that interleave the methods, so that every ratio is measured in one
run under the same machine load. Reported: wall-clock samples/s (median over rounds) and the cost
relative to SGD in CPU seconds per sample (median over rounds of the ratio within each round; plain
SAM's floor is ≈2: two forward/backward passes). The cost uses process CPU time because wall time
on these shared 2-core machines swings by up to 60 % between identical consecutive fits (measured:
SGD 6,000 → 10,300 samples/s wall while CPU-time throughput stayed at 6,300 ± 5 %).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

METHODS: dict[str, dict[str, Any]] = {
    "sgd": {},
    "sam": {"sam": "sam"},
    "asam": {"sam": "asam", "rho": 0.5},
    "msam": {"sam": "sam", "m": 32},
    "looksam": {"sam": "looksam", "looksam_k": 5},
}


def split_cpu(replicas: int) -> None:
    """Split the CPU into `replicas` logical devices (must run before TensorFlow touches devices)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)


def _model(method: str, batch_size: int, strategy: str):
    import keras

    from samlib import devices
    from samlib.config import Config
    from samlib.models import build_cnn
    from samlib.evaluation import make_loss
    from samlib.optimizers import make_optimizer, wrap

    config = Config.from_dict({"batch_size": batch_size, "strategy": strategy, "verbose": 0, **METHODS[method]})
    keras.utils.set_random_seed(0)
    with devices.make_strategy(config).scope():
        model = wrap(config, build_cnn((28, 28, 1), 10))
        model.compile(optimizer=make_optimizer(config, 1), loss=make_loss(), jit_compile=devices.resolve_jit(config))
    return model


def _time_fit(model, x, y, batch_size: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one epoch over x."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - wall, time.process_time() - cpu


def run(
    methods: list[str], batch_sizes: list[int], rounds: int, samples: int, replicas: list[int]
) -> list[dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for n_rep in replicas:
        strategy = "none" if n_rep == 1 else "mirrored"
        for batch_size in batch_sizes:
            n = max(samples, 4 * batch_size) // batch_size * batch_size
            x = rng.random((n, 28, 28, 1), dtype=np.float32)
            y = rng.integers(0, 10, n).astype("int32")
            models = {}
            for method in methods:
                models[method] = _model(method, batch_size, strategy)
                models[method].fit(x[: 2 * batch_size], y[: 2 * batch_size], batch_size=batch_size, verbose=0)
            times: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
            for _ in range(rounds):  # interleaved: each round times every method once
                for method in methods:
                    times[method].append(_time_fit(models[method], x, y, batch_size))
            for method in methods:
                walls = [w for w, _ in times[method]]
                ratios = [c / s for (_, c), (_, s) in zip(times[method], times.get("sgd", times[method]))]
                rows.append(
                    {"method": method, "batch_size": batch_size, "replicas": n_rep,
                     "samples_per_s": round(n / statistics.median(walls), 1),
                     "cost_vs_sgd": round(statistics.median(ratios), 3) if "sgd" in times else None}
                )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'method':<9}{'batch':>7}{'replicas':>10}{'samples/s':>12}{'cost vs SGD (CPU s)':>21}"]
    for r in rows:
        lines.append(
            f"{r['method']:<9}{r['batch_size']:>7}{r['replicas']:>10}{r['samples_per_s']:>12.0f}{r['cost_vs_sgd']:>20.2f}x"
        )
    return "\n".join(lines)
