"""``python -m samlib sharpness RUN_DIR``: measure the sharpness of a finished run.

Loads the run (`samlib.train.load_run`) and its data set, measures on a seeded subset of the training
set (`samlib.sharpness.measure`), prints the numbers and merges them into ``RUN_DIR/metrics.json``
under the keys of `measure` (``keskar_1e-03``, ``lambda_max``, ``hessian_trace``, ``sam_sharpness``,
their ``*_seconds``), plus ``sharpness_subset`` and ``sharpness_seed`` saying what they were measured on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from samlib import data as data_lib
from samlib import io, sharpness, train
from samlib.config import Config
from samlib.sharpness import MEASURES


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m samlib sharpness", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished run: config.json, model.weights.h5, metrics.json")
    parser.add_argument("--measures", nargs="+", default=list(MEASURES), choices=MEASURES)
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1e-3, 5e-4], help="Keskar box sizes")
    parser.add_argument("--subspace-dim", type=int, default=None, help="Keskar in a random subspace of this size")
    parser.add_argument("--max-iter", type=int, default=10, help="L-BFGS-B iterations for Keskar")
    parser.add_argument("--iters", type=int, default=100, help="power iterations for lambda_max")
    parser.add_argument("--tol", type=float, default=1e-4, help="relative tolerance for lambda_max")
    parser.add_argument("--samples", type=int, default=100, help="Hutchinson samples for the trace")
    parser.add_argument("--rho", type=float, default=0.05, help="SAM radius")
    parser.add_argument("--subset", type=int, default=4000, help="training examples used (0: all)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="subset choice and the measures' random draws")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        print(f"samlib sharpness: run folder {str(run_dir)!r} does not exist or is not a folder", file=sys.stderr)
        return 2
    if args.subset < 0:
        print(f"samlib sharpness: --subset must be >= 0, got {args.subset}", file=sys.stderr)
        return 2
    try:
        config = Config.from_dict(io.read_json(run_dir / "config.json"))
        data = data_lib.load(config.dataset, config.data_dir)
        _, model = train.load_run(run_dir, data)  # the data set is loaded once, for both
    except (FileNotFoundError, ValueError, OSError) as err:  # missing files, bad config.json, DataError
        print(f"samlib sharpness: cannot load run {str(run_dir)!r}: {err}", file=sys.stderr)
        return 2
    x, y = sharpness.subset(data.x_train, data.y_train, args.subset, args.seed)
    results = sharpness.measure(
        model, train.make_loss(), x, y, measures=args.measures, epsilons=tuple(args.epsilons),
        subspace_dim=args.subspace_dim, max_iter=args.max_iter, iters=args.iters, tol=args.tol,
        samples=args.samples, rho=args.rho, seed=args.seed, batch_size=args.batch_size,
    )
    results.update(sharpness_subset=len(x), sharpness_seed=args.seed)
    for key, value in results.items():
        print(f"{key:28s} {value:.6g}")
    io.update_json(run_dir / "metrics.json", **results)
    print(f"merged {len(results)} values into {run_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
