"""The study's on-disk contract, in one place: where everything lives, the status words, when a run
is complete or measured, how a study is read back, and the results.csv row of one run.

Folder layout (a *study folder* is ``<out>/<study>/``)::

    study.json                          the params and every cell's planned runs with their full configs
    runs/<notebook>/<batch_size>/       one cell: <notebook>.ipynb (executed), status.json, kernel.log
    runs/<notebook>/<batch_size>/<run>/ one run: config.json, metrics.json, history.csv, model.weights.h5
    summary.ipynb, summary.status.json, summary.kernel.log
    results.csv, snapshots.csv, findings.json, report.html, figures/

``<run>`` is `run_dirname` of the run's grid values and seed, e.g. ``m=32,rho=0.05,seed=0``.

Status words: a run's metrics.json says `RUNNING` while it trains, then `OK`, `DIVERGED` or `COLLAPSED`
(complete: a diverged or collapsed run is a result) or `FAILED` (its training raised); results.csv adds
`MISSING` (planned, never written), `INCOMPLETE` (still ``running``: killed, or training now) and
`COLLAPSED` for a run that says ``ok`` but learned nothing (`run_status`, `rundir.is_collapsed`). A cell's
status.json says `RUNNING`, `OK` or `FAILED`; the runner reports a cell it did not execute as
`SKIPPED`.

A single run's folder (its file names, the run status words, `is_complete`, `is_measured`,
`read_metrics`, `read_config`) is the library's `samlib.rundir`; this module re-exports those names,
and spells the study's own: the folders above the runs and the status words of results.csv, cells and
plans (`MISSING`, `INCOMPLETE`, `SKIPPED`, `TO_RUN`).

No TensorFlow and no pandas here: the study runner plans, skips and dry-runs cheaply.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from samlib import io, measures, milestones
from samlib.config import Config, ConfigError
from samlib.rundir import (  # noqa: F401  (a run folder's names, part of the layout's API)
    COLLAPSED,
    COMPLETE,
    CONFIG,
    DIVERGED,
    FAILED,
    HISTORY,
    METRICS,
    OK,
    RUN_FILES,
    RUNNING,
    SHARPNESS_OK,
    SHARPNESS_SKIPPED,
    WEIGHTS,
    collapse_patience,
    is_collapsed,
    is_complete,
    is_measured,
    read_config,
    read_metrics,
)

# ---------------------------------------------------------------------- names (a run's: samlib.rundir)
STUDY = "study.json"
RUNS = "runs"
CELL_STATUS = "status.json"
KERNEL_LOG = "kernel.log"
SUMMARY = "summary"  # summary.ipynb, summary.status.json, summary.kernel.log in the study folder
RESULTS = "results.csv"
SNAPSHOTS = "snapshots.csv"  # one row per (run, milestone): `snapshot_records`
FINDINGS = "findings.json"
REPORT = "report.html"
FIGURES = "figures"

# ---------------------------------------------------------------------- status words (a run's: samlib.rundir)
MISSING = "missing"
INCOMPLETE = "incomplete"
SKIPPED = "skipped"
TO_RUN = "run"  # a dry run's plan: this cell would be executed
TARGET_NOT_REACHED = "target not reached"  # how figures mark a loss-target run that stopped at its cap


# ---------------------------------------------------------------------- paths
def cell_dir(study_dir: str | Path, notebook: str, batch_size: int) -> Path:
    """``<study_dir>/runs/<notebook>/<batch_size>``: the folder of one cell."""
    return Path(study_dir) / RUNS / notebook / str(batch_size)


def executed_notebook(cell: str | Path, notebook: str) -> Path:
    return Path(cell) / f"{notebook}.ipynb"


def cell_status(cell: str | Path) -> Path:
    return Path(cell) / CELL_STATUS


def kernel_log(cell: str | Path) -> Path:
    return Path(cell) / KERNEL_LOG


def summary_files(study_dir: str | Path) -> tuple[Path, Path, Path]:
    """(executed summary notebook, its status.json, its kernel log)."""
    d = Path(study_dir)
    return d / f"{SUMMARY}.ipynb", d / f"{SUMMARY}.{CELL_STATUS}", d / f"{SUMMARY}.{KERNEL_LOG}"


def _fmt(value: Any) -> str:
    text = "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def run_dirname(point: Mapping[str, Any], seed: int) -> str:
    """Folder name of one run from its grid values, e.g. ``m=32,rho=0.05,seed=0``."""
    return ",".join([f"{k}={_fmt(point[k])}" for k in sorted(point)] + [f"seed={seed}"])


def point_label(run_name: str) -> str:
    """The grid values of a run folder name (``m=32,seed=0`` → ``m=32``; no grid → ``(base)``)."""
    return re.sub(r",?seed=\d+$", "", run_name) or "(base)"


def seed_of(run_name: str) -> int | None:
    match = re.search(r"seed=(\d+)$", run_name)
    return int(match.group(1)) if match else None


def cell_of(run_dir: str | Path) -> tuple[str, int | None]:
    """(notebook, batch size) of a run folder ``.../runs/<notebook>/<batch_size>/<run>``."""
    run_dir = Path(run_dir).resolve()
    bs = run_dir.parent.name
    return run_dir.parent.parent.name, int(bs) if bs.isdigit() else None


def notebook_of(cell: str | Path) -> str:
    """The notebook of a cell folder ``.../runs/<notebook>/<batch_size>``."""
    return Path(cell).resolve().parent.name


def run_dirs(study_dir: str | Path) -> list[Path]:
    """Every run folder under ``study_dir/runs/<notebook>/<batch_size>/`` holding any run file."""
    root = Path(study_dir) / RUNS
    if not root.is_dir():
        return []
    found = []
    for nb in sorted(p for p in root.iterdir() if p.is_dir()):
        for cell in sorted(p for p in nb.iterdir() if p.is_dir()):
            for run in sorted(p for p in cell.iterdir() if p.is_dir()):
                if any((run / f).exists() for f in RUN_FILES):
                    found.append(run)
    return found


# ---------------------------------------------------------------------- one run's state
# read_metrics, read_config, is_complete, is_measured: samlib.rundir (imported above)


# ---------------------------------------------------------------------- study.json
@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run as the planner wrote it into study.json, located under the study folder as it is now."""

    notebook: str
    batch_size: int
    run_dir: Path
    seed: int | None
    point: dict[str, Any]
    config: dict[str, Any] | None  # the full validated Config dict (None: unreadable)


def cell_record(notebook: str, batch_size: int, cell: Path, runs: Iterable[tuple[Mapping, int, Config]]) -> dict:
    """study.json's entry for one cell: its files and each run's grid point, seed and full config.

    Every path in it (the cell's folder, executed notebook and status.json, each run's folder, also as
    the config's ``run_dir``) is relative to the study folder, ``<study>/runs/<notebook>/<batch_size>``
    being the cell, so a study.json names no machine's folders and travels with the study."""
    cell = Path(cell)
    study = cell.parent.parent.parent  # <study>/runs/<notebook>/<batch_size>

    def rel(path: str | Path) -> str:
        return in_study(path, study)

    return {
        "notebook": notebook,
        "batch_size": batch_size,
        "run_root": rel(cell),
        "executed_notebook": rel(executed_notebook(cell, notebook)),
        "status": rel(cell_status(cell)),
        "runs": [{"run_dir": rel(c.run_dir), "seed": seed, "point": dict(point),
                  "config": {**c.to_dict(), "run_dir": rel(c.run_dir)}}
                 for point, seed, c in runs],
    }


def write_study(study_dir: str | Path, header: Mapping[str, Any], cells: Iterable[Mapping]) -> Path:
    """Write ``study.json``: `header` (the params) and the `cell_record` of every cell."""
    return io.write_json(Path(study_dir) / STUDY, {**header, "cells": list(cells)})


def read_study(study_dir: str | Path) -> dict[str, Any]:
    """``study.json`` as the runner wrote it ({} when absent, e.g. for a notebook's own runs)."""
    return io.read_json_dict(Path(study_dir) / STUDY)


def holds_study(study_dir: str | Path) -> bool:
    """True if `study_dir` holds a study: its study.json or any run folder."""
    return bool(read_study(study_dir) or run_dirs(study_dir))


def planned_runs(study_dir: str | Path) -> list[PlannedRun]:
    """Every run that study.json plans, at its place under `study_dir` (the folder may have moved
    since study.json was written), with the full config the planner recorded."""
    study_dir = Path(study_dir)
    study = read_study(study_dir)
    out = []
    for cell in study.get("cells", []):
        nb, bs = cell["notebook"], int(cell["batch_size"])
        for run in cell.get("runs", []):
            config = run.get("config")
            path = cell_dir(study_dir, nb, bs) / Path(run["run_dir"]).name
            out.append(PlannedRun(nb, bs, path, run.get("seed"), dict(run.get("point", {})), config))
    return out


# ---------------------------------------------------------------------- results.csv row
COLUMNS = [
    "notebook", "run", "method", "optimizer", "sam", "rho", "m", "batch_size", "lr", "lr_base",
    "lr_scaling", "base_batch_size", "warmup_epochs", "seed", "epochs", "steps", "steps_budget",
    "epochs_max", "target_loss", "stop_rule", "stop_reason", "converged", "status", "train_loss",
    "test_loss", "train_accuracy", "test_accuracy", "loss_gap", "accuracy_gap", "val_loss", "val_accuracy",
    "grad_norm", "weight_norm",
]  # then the sharpness measures, then TAIL
TAIL = [
    "wall_seconds", "train_seconds", "step_seconds", "seconds_per_epoch", "samples_per_second",
    "sharpness_seconds", "sharpness_subset", "dataset", "train_subset", "n_train", "n_test", "error", "run_dir",
]
N_TRAIN = {"mnist5k": 4000, "mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000}  # before a val split
OPTIMIZER_LABELS = {"sgd": "SGD", "momentum": "SGD+momentum", "adam": "Adam", "adamw": "AdamW"}
SAM_LABELS = {"sam": "SAM", "asam": "ASAM", "looksam": "LookSAM"}


def present(value: Any) -> bool:
    """A value results.csv treats as given: not None and not NaN."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def is_measure(key: str) -> bool:
    """A results column holding a sharpness value (`samlib.measures.is_measure`: not a timing, an
    iteration count or the context of a measurement)."""
    return measures.is_measure(key)


def method_label(optimizer: str, sam: Any, m: Any = None) -> str:
    """The display label of a method: 'SGD', 'SGD+SAM', 'SGD+momentum+SAM (m=32)', 'Adam+ASAM', ...
    (m as configured; None = whole batch). Made for figures and text only: the study selects and orders
    methods by their fields (`samlib.study.selections.Method`), never by this label."""
    label = OPTIMIZER_LABELS.get(optimizer, str(optimizer))
    if sam in (None, "none") or (isinstance(sam, float) and math.isnan(sam)):
        return label
    label += "+" + SAM_LABELS.get(sam, str(sam))
    if present(m):
        label += f" (m={int(m)})"
    return label


def stop_rule(config: Mapping[str, Any]) -> str:
    """How a run was told to stop: 'steps=64', 'target_loss=0.5 (cap 64 steps)', 'epochs=5'."""
    steps, target, epochs = config.get("steps"), config.get("target_loss"), config.get("epochs")
    if present(target):
        cap = f"cap {int(steps)} steps" if present(steps) else f"cap {int(epochs)} epochs"
        return f"target_loss={float(target):g} ({cap})"
    if present(steps):
        return f"steps={int(steps)}"
    return f"epochs={epochs}"


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _step_seconds(metrics: Mapping[str, Any]) -> float:
    """Seconds per optimizer step: metrics' steady-state ``step_seconds``; where that is NaN (the run
    was one compiled call, so there is no steady state), the whole training time over the steps."""
    if present(metrics.get("step_seconds")):
        return _num(metrics["step_seconds"])
    seconds, steps = _num(metrics.get("train_seconds")), _num(metrics.get("steps"))
    return seconds / steps if steps and steps > 0 else math.nan


def _relative(path: Path, root: str | Path | None) -> str:
    """`path` relative to `root` (posix) when it lies inside it, else as given."""
    if root is not None:
        try:
            return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def in_study(path: str | Path, study_dir: str | Path) -> str:
    """A path as the study's records (study.json, status.json, results.csv) name it: relative to the
    study folder when it lies inside it (``runs/baseline/32/baseline.ipynb``), else as given."""
    return _relative(Path(path), study_dir)


def _scaled_lr(config: Mapping[str, Any]) -> float:
    try:
        return Config.from_dict(config).scaled_lr
    except (ConfigError, TypeError):
        return math.nan


def run_status(metrics: Mapping[str, Any], batch_size: Any = None, n_train: Any = None) -> str:
    """A run's status word in results.csv from its metrics.json: `MISSING` without one, `INCOMPLETE`
    while it still says `RUNNING`, `COLLAPSED` for a run that says `OK` but whose final training loss
    and accuracy `rundir.is_collapsed` calls collapsed (K: metrics' ``num_classes``, else 10) after at
    least `rundir.collapse_patience` steps (as training decides it; steps per epoch from `batch_size`
    and `n_train` when known), else what it says."""
    if not metrics:
        return MISSING
    status = metrics.get("status")
    if status == RUNNING:
        return INCOMPLETE
    if status == OK and is_collapsed(metrics.get("train_loss"), metrics.get("train_accuracy"),
                                     metrics.get("num_classes")):
        steps = _num(metrics.get("steps"))
        per_epoch = math.ceil(_num(n_train) / _num(batch_size)) if present(n_train) and present(batch_size) else 0
        if not math.isfinite(steps) or steps >= collapse_patience(per_epoch):
            return COLLAPSED
    return status


def run_record(
    run_dir: str | Path,
    notebook: str | None = None,
    batch_size: int | None = None,
    config: Mapping[str, Any] | None = None,
    study_dir: str | Path | None = None,
) -> dict[str, Any]:
    """One run folder as a flat dict of the `COLUMNS`, the sharpness measures it holds, and `TAIL`.

    `config`: the run's planned config, used when the folder has no config.json. Missing or unreadable
    files never raise: the status is `run_status` (a folder without metrics.json is `MISSING`, one
    whose metrics still say `RUNNING` is `INCOMPLETE`, a collapsed one `COLLAPSED`); columns a run did not record are NaN / None. ``run_dir`` is the folder
    relative to `study_dir` when it lies inside it (a results.csv names no machine's paths), else as
    given.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir) or dict(config or {})
    metrics = read_metrics(run_dir)
    if notebook is None or batch_size is None:
        nb, bs = cell_of(run_dir)
        notebook, batch_size = notebook if notebook is not None else nb, batch_size if batch_size is not None else bs
    bs = config.get("batch_size", batch_size)
    lr_eff = metrics.get("lr_effective")
    if not present(lr_eff):
        lr_eff = _scaled_lr(config) if config else math.nan
    dataset = config.get("dataset")
    n_train = metrics.get("n_train") or N_TRAIN.get(dataset)
    status = run_status(metrics, bs, n_train)
    step_s = _step_seconds(metrics)
    per_epoch = step_s * math.ceil(n_train / bs) if n_train and bs and math.isfinite(step_s) else math.nan
    converged = metrics.get("converged")
    row: dict[str, Any] = {
        "notebook": notebook,
        "run": run_dir.name,
        "method": method_label(config.get("optimizer", "?"), config.get("sam", "none"), config.get("m")),
        "optimizer": config.get("optimizer"),
        "sam": config.get("sam"),
        "rho": config.get("rho"),
        "m": config.get("m"),
        "batch_size": bs,
        "lr": lr_eff,
        "lr_base": config.get("lr"),
        "lr_scaling": config.get("lr_scaling"),
        "base_batch_size": config.get("base_batch_size"),
        "warmup_epochs": config.get("warmup_epochs"),
        "seed": config.get("seed", seed_of(run_dir.name)),
        "epochs": metrics.get("epochs_run"),
        "steps": metrics.get("steps"),
        "steps_budget": config.get("steps"),
        "epochs_max": config.get("epochs"),
        "target_loss": config.get("target_loss"),
        "stop_rule": stop_rule(config) if config else None,
        "stop_reason": metrics.get("stop_reason"),
        "converged": converged if isinstance(converged, bool) else None,
        "status": status,
        "train_loss": _num(metrics.get("train_loss")),
        "test_loss": _num(metrics.get("test_loss")),
        "train_accuracy": _num(metrics.get("train_accuracy")),
        "test_accuracy": _num(metrics.get("test_accuracy")),
        "val_loss": _num(metrics.get("val_loss")),
        "val_accuracy": _num(metrics.get("val_accuracy")),
        "grad_norm": _num(metrics.get("grad_norm")),
        "weight_norm": _num(metrics.get("weight_norm")),
        "wall_seconds": _num(metrics.get("wall_seconds")),
        "train_seconds": _num(metrics.get("train_seconds")),
        "step_seconds": step_s,
        "seconds_per_epoch": per_epoch,
        "samples_per_second": _num(metrics.get("samples_per_second")),
        "sharpness_seconds": _num(metrics.get("sharpness_seconds")),
        "sharpness_subset": metrics.get("sharpness_subset"),
        "dataset": dataset,
        "train_subset": config.get("train_subset"),
        "n_train": n_train,
        "n_test": metrics.get("n_test"),
        "error": metrics.get("error") or metrics.get("sharpness_error"),
        "run_dir": _relative(run_dir, study_dir),
    }
    row["loss_gap"] = row["test_loss"] - row["train_loss"]
    row["accuracy_gap"] = row["train_accuracy"] - row["test_accuracy"]
    for key, value in metrics.items():
        if is_measure(key):
            row[key] = _num(value)
    return row


# ---------------------------------------------------------------------- snapshots.csv rows
SNAPSHOT_IDENTITY = [
    "notebook", "run", "method", "optimizer", "sam", "m", "rho", "batch_size", "lr", "lr_base", "lr_scaling",
    "base_batch_size", "warmup_epochs", "seed", "dataset", "n_train", "status", "run_dir",
]  # a run's columns, as in its `run_record`
SNAPSHOT_COLUMNS = SNAPSHOT_IDENTITY + [
    "milestone", "kind", "at", "reached", "step", "epoch", "train_loss", "train_accuracy", "train_error",
    "val_loss", "val_accuracy", "val_error", "test_loss", "test_accuracy", "test_error", "weight_norm",
    "subset_loss", "grad_norm",
]  # then the sharpness measures the snapshots hold (`samlib.measures.order`)
_SNAPSHOT_NUMBERS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                     "weight_norm", *measures.CONTEXT)


def _config_milestones(config: Mapping[str, Any]) -> list[milestones.Milestone]:
    try:
        return milestones.of_config(Config.from_dict(config))
    except (ConfigError, TypeError, ValueError):
        return []


def _milestone(name: Any, kind: Any = None, at: Any = None) -> tuple[str, str | None, float]:
    """(name, kind, at) of a milestone named `name` (kind and at as recorded, else parsed from it)."""
    if kind is None or not present(at):
        try:
            parsed = milestones.Milestone.parse(str(name))
            kind, at = parsed.kind, parsed.at
        except ValueError:
            return str(name), kind, _num(at)
    return str(name), str(kind), _num(at)


def snapshot_records(
    run_dir: str | Path,
    notebook: str | None = None,
    batch_size: int | None = None,
    config: Mapping[str, Any] | None = None,
    study_dir: str | Path | None = None,
    record: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per (run, milestone) of one run folder: `SNAPSHOT_IDENTITY` (the run's, from its
    `run_record`; pass `record` if at hand), then the milestone (``milestone`` 'loss=0.03' /
    'epochs=10', ``kind``, ``at``), ``reached``, and the numbers of its snapshot in metrics.json
    (``snapshots``): ``step``, ``epoch`` (steps / steps per epoch), the losses and accuracies, the errors
    (1 − accuracy), ``weight_norm``, and after the sharpness step ``subset_loss``, ``grad_norm`` and the
    measures. A milestone the run never reached (metrics' ``milestones_missing``) is a row with
    ``reached`` False and NaN numbers; so is every milestone of the run's config when the run has no
    snapshot record and did not finish ok (missing, incomplete, failed, diverged or collapsed before
    recording any). A run that finished ok without snapshot records (it predates them) has no rows."""
    run_dir = Path(run_dir)
    config = read_config(run_dir) or dict(config or {})
    metrics = read_metrics(run_dir)
    record = record if record is not None else run_record(run_dir, notebook, batch_size, config, study_dir)
    ident = {k: record.get(k) for k in SNAPSHOT_IDENTITY}
    snapshots = metrics.get("snapshots")
    snapshots = [s for s in snapshots if isinstance(s, Mapping)] if isinstance(snapshots, list) else []
    missing = metrics.get("milestones_missing")
    missing = list(missing) if isinstance(missing, list) else []
    if not snapshots and not missing and "snapshots" not in metrics and record.get("status") != OK:
        missing = [m.name for m in _config_milestones(config)]
    rows = []
    for snap in snapshots:
        name, kind, at = _milestone(snap.get("milestone"), snap.get("kind"), snap.get("at"))
        row: dict[str, Any] = {**ident, "milestone": name, "kind": kind, "at": at, "reached": True,
                               "step": _num(snap.get("step")), "epoch": _num(snap.get("epoch"))}
        row.update({k: _num(snap.get(k)) for k in _SNAPSHOT_NUMBERS})
        for split in ("train", "val", "test"):
            row[f"{split}_error"] = 1.0 - row[f"{split}_accuracy"]
        row.update({k: _num(v) for k, v in snap.items() if is_measure(k)})
        rows.append(row)
    seen = {r["milestone"] for r in rows}
    for name in missing:
        name, kind, at = _milestone(name)
        if name in seen:
            continue
        seen.add(name)
        row = {**ident, "milestone": name, "kind": kind, "at": at, "reached": False, "step": math.nan,
               "epoch": math.nan}
        row.update({k: math.nan for k in SNAPSHOT_COLUMNS if k not in row})
        rows.append(row)
    return rows
