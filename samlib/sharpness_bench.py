"""Wall-clock seconds of the sharpness measures on the study's CNN over the mnist5k training set.

``python -m samlib sharpness-bench [--n 4000] [--epochs 1] ...`` (`run`): trains the CNN briefly (SGD), then
times Keskar sharpness (full space) and λ_max (power iteration), each from a fresh call (tracing of the
compiled functions included), with the settings of `samlib.config.SharpnessSettings()` (ε = its first
ε, `max_iter`, `iters`, `tol`, `batch_size`, `seed`) unless given. Targets on a 2-core CPU: Keskar
≤ 15 s, λ_max ≤ 30 s. The numbers are printed, not asserted (machines differ, and other processes on a
shared machine slow them).
"""

from __future__ import annotations

import os
import time

from samlib import measures as M
from samlib.config import SharpnessSettings

_DEFAULTS = SharpnessSettings()
TARGETS = {M.KESKAR: 15.0, M.LAMBDA_MAX: 30.0}  #: seconds, by registry name


def run(n: int = 4000, epochs: int = 1, lr: float = 0.1, train_batch_size: int = 32,
        batch_size: int = _DEFAULTS.batch_size, epsilon: float = _DEFAULTS.epsilons[0],
        max_iter: int = _DEFAULTS.max_iter, iters: int = _DEFAULTS.iters, tol: float = _DEFAULTS.tol,
        seed: int = _DEFAULTS.seed) -> dict:
    """Train the CNN briefly, then time Keskar and λ_max (module doc); prints the seconds and returns them
    as ``<key>_seconds`` under the keys `samlib.sharpness.measure` gives these values."""
    import keras

    from samlib import sharpness
    from samlib.data import load
    from samlib.evaluation import make_loss
    from samlib.models import build_cnn
    from samlib.objective import Objective

    data = load("mnist5k")
    x, y = data.x_train[: n], data.y_train[: n]
    keras.utils.set_random_seed(seed)
    model = build_cnn(data.input_shape, data.num_classes)
    loss = make_loss()
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss, metrics=["accuracy"], jit_compile=False)
    start = time.perf_counter()
    model.fit(x, y, batch_size=train_batch_size, epochs=epochs, verbose=0)
    train_s = time.perf_counter() - start
    print(f"CNN ({model.count_params()} parameters), {len(x)} mnist5k training images, {os.cpu_count()} CPUs; "
          f"trained {epochs} epoch(s) SGD lr={lr} batch {train_batch_size} in {train_s:.1f} s")
    keskar_key, (lambda_key,) = M.keskar_key(epsilon), M.REGISTRY[M.LAMBDA_MAX].keys(_DEFAULTS)

    start = time.perf_counter()
    keskar = sharpness.keskar_sharpness(
        model, loss, x, y, epsilon=epsilon, max_iter=max_iter, seed=seed, batch_size=batch_size
    )
    keskar_s = time.perf_counter() - start
    print(f"{M.KESKAR:11s} {keskar_s:7.2f} s (target <= {TARGETS[M.KESKAR]:.0f} s)  value {keskar:.4g}  "
          f"[epsilon={epsilon:g}, max_iter={max_iter}, full space, batch {batch_size}]")

    start = time.perf_counter()
    objective = Objective(model, loss, x, y, batch_size)
    lam, steps = sharpness._power_iteration(objective, iters, tol, seed)
    lam_s = time.perf_counter() - start
    print(f"{M.LAMBDA_MAX:11s} {lam_s:7.2f} s (target <= {TARGETS[M.LAMBDA_MAX]:.0f} s)  value {lam:.4g}  "
          f"[{steps} Hessian-vector products, iters={iters}, tol={tol:g}, batch {batch_size}]")
    return {f"{keskar_key}_seconds": keskar_s, f"{lambda_key}_seconds": lam_s}
