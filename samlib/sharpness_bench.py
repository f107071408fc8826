"""Wall-clock seconds of the sharpness measures on the study's CNN over the mnist5k training set.

``python -m samlib.sharpness_bench [--n 4000] [--epochs 1] ...``: trains the CNN briefly (SGD), then
times Keskar sharpness (ε = 1e-3, `max_iter` = 10, full space) and λ_max (power iteration, iters = 100,
tol = 1e-4), each from a fresh call (tracing of the compiled functions included). Targets on a 2-core
CPU: Keskar ≤ 15 s, λ_max ≤ 30 s. The numbers are printed, not asserted (machines differ, and other
processes on a shared machine slow them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

TARGETS = {"keskar": 15.0, "lambda_max": 30.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samlib.sharpness_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="training images measured on")
    parser.add_argument("--epochs", type=int, default=1, help="SGD epochs before measuring")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--train-batch-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1000, help="evaluation batch of the measures")
    parser.add_argument("--epsilon", type=float, default=1e-3)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    import keras

    from samlib import sharpness
    from samlib.data import load
    from samlib.models import build_cnn

    data = load("mnist5k")
    x, y = data.x_train[: args.n], data.y_train[: args.n]
    keras.utils.set_random_seed(args.seed)
    model = build_cnn(data.input_shape, data.num_classes)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(args.lr), loss=loss, metrics=["accuracy"], jit_compile=False)
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.train_batch_size, epochs=args.epochs, verbose=0)
    train_s = time.perf_counter() - start
    print(f"CNN ({model.count_params()} parameters), {len(x)} mnist5k training images, {os.cpu_count()} CPUs; "
          f"trained {args.epochs} epoch(s) SGD lr={args.lr} batch {args.train_batch_size} in {train_s:.1f} s")

    start = time.perf_counter()
    keskar = sharpness.keskar_sharpness(
        model, loss, x, y, epsilon=args.epsilon, max_iter=args.max_iter, seed=args.seed, batch_size=args.batch_size
    )
    keskar_s = time.perf_counter() - start
    print(f"keskar      {keskar_s:7.2f} s (target <= {TARGETS['keskar']:.0f} s)  value {keskar:.4g}  "
          f"[epsilon={args.epsilon:g}, max_iter={args.max_iter}, full space, batch {args.batch_size}]")

    start = time.perf_counter()
    objective = sharpness._Objective(model, loss, x, y, args.batch_size)
    lam, steps = sharpness._power_iteration(objective, args.iters, args.tol, args.seed)
    lam_s = time.perf_counter() - start
    print(f"lambda_max  {lam_s:7.2f} s (target <= {TARGETS['lambda_max']:.0f} s)  value {lam:.4g}  "
          f"[{steps} Hessian-vector products, iters={args.iters}, tol={args.tol:g}, batch {args.batch_size}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
