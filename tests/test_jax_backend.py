"""On Keras' JAX backend, `python -m samlib train` trains a SAM run and `python -m samlib sharpness`
measures it without importing TensorFlow: a fresh interpreter with ``KERAS_BACKEND=jax`` (Keras picks
its backend when imported), which checks `sys.modules` at the end."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                reason="jax is not installed (pip install -e '.[jax]')")

SCRIPT = """
import sys
import keras
from samlib.cli import main

run = sys.argv[1]
assert keras.backend.backend() == "jax", keras.backend.backend()
assert main(["train", "--set", "sam=sam", "--set", "m=8", "--set", "steps=3", "--set", "batch_size=16",
             "--set", "weight_decay=0.0005", "--set", "verbose=0", "--set", f"run_dir={run}"]) == 0
assert main(["sharpness", run, "--subset", "64", "--measures", "keskar", "lambda_max", "trace", "sam",
             "noise_scale", "--iters", "3", "--samples", "2", "--max-iter", "2", "--batch-size", "32"]) == 0
loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
assert not loaded, loaded[:5]
print("no tensorflow")
"""


def test_train_and_sharpness_on_jax_import_no_tensorflow(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(run)], capture_output=True, text=True, timeout=900,
                          env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "no tensorflow" in done.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps"] == 3
    assert metrics["environment"]["keras_backend"] == "jax" and metrics["environment"]["tensorflow"] is None
    for key in ("train_loss", "keskar_1e-03", "lambda_max", "hessian_trace", "sam_sharpness", "b_simple"):
        assert math.isfinite(metrics[key]), key
    assert (run / "history.csv").read_text().splitlines()[0].count("grad_norm") == 1


DATA_PARALLEL = """
import os, sys
sys.path.insert(0, sys.argv[1])
import jax, keras
from reference import assert_step_matches, data, mlp, ref_sam_step
from samlib.sam import SAM

assert len(jax.devices()) == 2, jax.devices()
x, y, _ = data(n=12)
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
for m in (None, 3):
    w0, w_ref, _ = ref_sam_step(mlp(), x, y, rho=0.1, m=m)  # one device, the global batch
    net = mlp()
    model = SAM(net, rho=0.1, m=m)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=12, epochs=1, verbose=0, shuffle=False)
    assert_step_matches(w0, w_ref, net.get_weights())
print("data parallel ok")
"""


def test_keras_data_parallel_on_jax_takes_the_global_batch_sam_step():
    """`keras.distribution.DataParallel` over two (CPU) devices: the batch is sharded, and XLA computes
    the step of the global batch, so SAM's ε̂ comes from the global gradient (what `sync_perturbation`
    gives under tf.distribute) and m-SAM's micro-batches are those of one device."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    tests = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run([sys.executable, "-c", DATA_PARALLEL, tests], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "data parallel ok" in done.stdout
