"""``python -m samlib COMMAND ...``: every command's arguments, in one place; the work is done by the
modules each command names (imported only when that command runs, so ``study`` never loads TensorFlow,
and no library command's handler imports the study machinery, `samlib.study`).

    train            one run from a params file and --set overrides       (samlib.train)
    bench            samples/s of SGD vs the SAM variants on the CNN      (samlib.bench)
    sharpness        measure the sharpness of a finished run              (samlib.rundir.measure_run)
    sharpness-bench  seconds of the Keskar and λ_max measures on the CNN  (samlib.sharpness_bench)
    study            a study grid of notebooks with papermill, then the summary (samlib.study.runner)
    report           results.csv, findings, figures and report.html of a study folder, from its runs
                     as they are: nothing is trained or measured (samlib.study.report.make_report)

Exit codes: 0 done, 1 a study cell failed, 2 bad arguments or input (one message on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Callable

from samlib.config import MEASURES, Config, SharpnessSettings, load_yaml_mapping, parse_override

PROG = "python -m samlib"


def _fail(command: str, message: Any) -> int:
    """Bad arguments or input: one line on stderr, ``python -m samlib <command>: error: <message>`` (as
    argparse writes its own), and exit code 2."""
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    from samlib.config import ConfigError, check_data
    from samlib.data import DataError
    from samlib.train import train_and_evaluate

    try:
        config = config_from_args(args.params, args.overrides)
        check_data(config)  # before anything runs: the data set is readable, the batch fits in it
        result = train_and_evaluate(config)
    except (ConfigError, DataError) as err:
        return _fail("train", err)
    m = result.metrics
    print(
        f"{m['status']}: train loss {m['train_loss']:.4f} acc {m['train_accuracy']:.4f} | "
        f"test loss {m['test_loss']:.4f} acc {m['test_accuracy']:.4f} | {m['steps']} steps "
        f"({m['stop_reason']}), {m['wall_seconds']:.1f} s, {m['samples_per_second']:.0f} samples/s"
        + (f"\nrun directory: {result.run_dir}" if result.run_dir else "")
    )
    return 0


def config_from_args(params: str | None, overrides: list[str]) -> Config:
    """The run's `Config`: the params file's keys (none without one), each ``--set key=value`` over them."""
    values = load_yaml_mapping(params) if params else {}
    values.update(parse_override(text) for text in overrides)
    return Config.from_dict(values)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one run from a params file and --set overrides",
                       description="Train one run.")
    p.add_argument("params", nargs="?", help="YAML file of Config keys")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(handler=_train)


# ---------------------------------------------------------------------- bench
def _bench(args: argparse.Namespace) -> int:
    import json

    from samlib import bench

    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in bench.METHODS]
    if unknown:
        return _fail("bench", f"--methods has value {unknown[0]!r}; allowed: {', '.join(bench.METHODS)}")
    replicas = [int(r) for r in args.replicas.split(",")]
    if max(replicas) > 1:
        bench.split_cpu(max(replicas))
    rows = bench.run(methods, [int(b) for b in args.batch_sizes.split(",")], args.rounds, args.samples, replicas)
    print(json.dumps(rows, indent=1) if args.json else bench.format_table(rows))
    return 0


def _add_bench(sub) -> None:
    from samlib.bench import METHODS  # no TensorFlow at import

    p = sub.add_parser("bench", help="samples/s of SGD vs SAM variants on the CNN",
                       description="Training throughput of SGD and the SAM variants on the CNN.")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS))
    p.add_argument("--batch-sizes", default="128,2048")
    p.add_argument("--replicas", default="1,2", help="comma list; >1 uses MirroredStrategy over logical CPUs")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--samples", type=int, default=8192, help="samples per timed round (≥ 4 batches)")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(handler=_bench)


# ---------------------------------------------------------------------- sharpness
_SETTING_HELP = {
    "subset": "training examples measured on (0: all)",
    "seed": "subset choice and the measures' random draws",
    "measures": "measures to take",
    "epsilons": "Keskar box sizes",
    "max_iter": "L-BFGS-B iterations for Keskar",
    "iters": "power iterations for λ_max",
    "tol": "relative tolerance for λ_max",
    "samples": "Hutchinson samples for the trace",
    "subspace_dim": "Keskar in a random subspace of this size",
    "rho": "SAM radius",
    "batch_size": "evaluation batch of the measures",
    "milestones": "cheaper measure sets at some snapshots, as YAML, e.g. '{loss=0.1: [sam]}'",
}


def _sharpness(args: argparse.Namespace) -> int:
    from pathlib import Path

    from samlib import io
    from samlib.config import Config, ConfigError
    from samlib.measures import is_measure
    from samlib.rundir import CONFIG, METRICS, measure_run

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        return _fail("sharpness", f"run folder {str(run_dir)!r} does not exist or is not a folder")
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(SharpnessSettings)
             if getattr(args, f.name) is not None}
    try:
        settings = SharpnessSettings.from_dict(given, where="")
    except ConfigError as err:
        return _fail("sharpness", err)
    try:
        from samlib.data import load_data
        from samlib.rundir import load_run

        config = Config.from_dict(io.read_json(run_dir / CONFIG))
        data = load_data(config)
        _, model = load_run(run_dir, data)  # the data set is loaded once, for both
    except (FileNotFoundError, ValueError, OSError) as err:  # missing files, bad config.json, DataError
        return _fail("sharpness", f"cannot load run {str(run_dir)!r}: {err}")
    values = measure_run(run_dir, settings, data=data, model=model)
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            print(f"{key:28s} {value:.6g}")
    print(f"{'sharpness_status':28s} {values['sharpness_status']}")
    for snap in values.get("snapshots", []):
        print(f"snapshot {snap['milestone']:19s} " + " ".join(
            f"{k}={snap[k]:.4g}" for k in snap if is_measure(k) and isinstance(snap[k], float)))
    print(f"merged {len(values)} values into {run_dir / METRICS}")
    return 0


def _add_sharpness(sub) -> None:
    p = sub.add_parser(
        "sharpness", help="measure the sharpness of a finished run",
        description="Measure the sharpness of a finished run on a seeded subset of its training split and "
        "merge the numbers into RUN_DIR/metrics.json with the settings used (sharpness_settings), exactly "
        "as a study cell does: a study with the same settings does not measure the run again.",
    )
    p.add_argument("run_dir", help="a finished run: config.json, model.weights.h5, metrics.json")
    defaults = SharpnessSettings()
    for field in dataclasses.fields(SharpnessSettings):
        default = getattr(defaults, field.name)
        option = "--" + field.name.replace("_", "-")
        doc = f"{_SETTING_HELP[field.name]} (default: {default if not isinstance(default, tuple) else ' '.join(map(str, default))})"
        if field.name == "measures":
            p.add_argument(option, nargs="+", choices=MEASURES, help=doc)
        elif field.name == "epsilons":
            p.add_argument(option, nargs="+", type=float, help=doc)
        elif field.name == "milestones":
            import yaml

            p.add_argument(option, type=yaml.safe_load, help=doc)
        else:
            kind = float if isinstance(default, float) else int
            p.add_argument(option, type=kind, help=doc)
    p.set_defaults(handler=_sharpness)


# ---------------------------------------------------------------------- sharpness-bench
def _sharpness_bench(args: argparse.Namespace) -> int:
    from samlib import sharpness_bench

    sharpness_bench.run(**{k: v for k, v in vars(args).items() if k not in ("handler", "command")})
    return 0


def _add_sharpness_bench(sub) -> None:
    p = sub.add_parser("sharpness-bench", help="seconds of the Keskar and λ_max measures on the CNN",
                       description="Wall-clock seconds of the sharpness measures on the study's CNN (mnist5k); "
                       "the measures' settings default to the sharpness settings' (SharpnessSettings).")
    p.add_argument("--n", type=int, default=4000, help="training images measured on")
    p.add_argument("--epochs", type=int, default=1, help="SGD epochs before measuring")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--train-batch-size", type=int, default=32)
    settings = SharpnessSettings()  # the one source of the measures' defaults
    p.add_argument("--batch-size", type=int, default=settings.batch_size,
                   help=f"{_SETTING_HELP['batch_size']} (default: %(default)s)")
    p.add_argument("--epsilon", type=float, default=settings.epsilons[0],
                   help="Keskar box size (default: %(default)s, the settings' first)")
    for name in ("max_iter", "iters", "tol"):
        default = getattr(settings, name)
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                       help=f"{_SETTING_HELP[name]} (default: %(default)s)")
    p.add_argument("--seed", type=int, default=settings.seed,
                   help="the CNN's initialisation and the measures' random draws (default: %(default)s)")
    p.set_defaults(handler=_sharpness_bench)


# ---------------------------------------------------------------------- study
def _study(args: argparse.Namespace) -> int:
    from samlib.study.params import ParamsError
    from samlib.study.runner import run_study

    if args.scheduler and args.executor != "dask":
        return _fail("study", "--scheduler needs --executor dask")
    try:
        report = run_study(
            args.params, out=args.out, jobs=args.jobs, threads=args.threads, shard=args.shard, only=args.only, dry_run=args.dry_run,
            executor=args.executor, scheduler=args.scheduler, notebooks_dir=args.notebooks,
            summary=not args.no_summary, progress=not args.no_progress,
        )
    except ParamsError as err:
        return _fail("study", err)
    except KeyboardInterrupt:
        print(f"\n{PROG} study: interrupted; run the same command again to resume", file=sys.stderr, flush=True)
        os._exit(130)  # do not wait for cells still executing in threads; their kernels exit by themselves
    return report.exit_code


def _add_study(sub) -> None:
    from samlib.study.runner import EXECUTORS, default_jobs

    p = sub.add_parser(
        "study", help="run a study grid of notebooks with papermill, then the summary",
        description="Run a study grid of notebooks with papermill (resumable), then the summary notebook.",
    )
    p.add_argument("params", help="study params YAML, e.g. params/quick.yaml")
    p.add_argument("--out", default="outputs", help="output root; the study goes to OUT/<study> (default: outputs)")
    p.add_argument("--jobs", type=int, default=None,
                   help=f"cells executing at once (local threads / dask workers; default: the usable cores, "
                   f"{default_jobs()} here)")
    p.add_argument("--threads", type=int, default=None,
                   help="TensorFlow intra-/inter-op threads per cell (default: TensorFlow's own, as the committed "
                   "studies ran; 1 with --jobs 2 was 18 %% faster on params/fashion_untuned.yaml's runs here, with other "
                   "numbers in the last digits)")
    p.add_argument("--shard", metavar="I/N", help="run every N-th cell starting at I (0-based); no summary if N > 1")
    p.add_argument("--only", action="append", metavar="NOTEBOOK", help="only these notebooks (repeatable, or a,b)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; execute and write nothing")
    p.add_argument("--executor", choices=EXECUTORS, default="local")
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask scheduler address (default: a LocalCluster)")
    p.add_argument("--notebooks", metavar="DIR", help="folder of the notebooks (default: ./notebooks)")
    p.add_argument("--no-summary", action="store_true", help="do not run the summary notebook")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per cell still)")
    p.set_defaults(handler=_study)


# ---------------------------------------------------------------------- report
def _report(args: argparse.Namespace) -> int:
    from samlib.study import layout
    from samlib.study.report import make_report

    if not layout.holds_study(args.study_dir):
        return _fail("report", f"{args.study_dir!r} holds no study (no study.json and no run folders)")
    rep = make_report(args.study_dir)
    print(rep.headline, f"written in {args.study_dir}:", *(f"  {f}" for f in rep.files), sep="\n")
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report", help="rewrite a study's results.csv, findings, figures and report.html from its runs",
        description="Rewrite results.csv, findings.json, figures/ and report.html of a study folder from the "
                    "runs' config.json and metrics.json as they are (e.g. a fresh clone's docs/results/cpu, "
                    "which has no weights): nothing is trained or measured.",
    )
    p.add_argument("study_dir", help="a study folder, e.g. docs/results/cpu or outputs/quick")
    p.set_defaults(handler=_report)


# ---------------------------------------------------------------------- main
_COMMANDS: tuple[Callable[[Any], None], ...] = (_add_train, _add_bench, _add_sharpness, _add_sharpness_bench,
                                                _add_study, _add_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="samlib: does SAM rescue large-batch training?")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return int(args.handler(args) or 0)
