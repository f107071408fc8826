"""The study's tables, in one place: run folders → results.csv rows (`run_record`, one per run) and
snapshots.csv rows (`snapshot_records`, one per (run, milestone)); `collect` and `collect_snapshots`
gather them for a whole study folder, planned runs that were never written included.

Where the files are and what the status words mean is `samlib.study.layout`'s (and a run folder's,
`samlib.rundir`'s); how a method is labelled is `samlib.study.selections.method_label`'s. Missing or
unreadable files never raise: a column a run did not record is NaN / None.

No TensorFlow here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from samlib import data, io, measures, milestones
from samlib.config import Config, ConfigError
from samlib.io import number, present
from samlib.study import layout
from samlib.rundir import final_status
from samlib.study.layout import (
    INCOMPLETE,
    MISSING,
    OK,
    RUNNING,
    cell_of,
    in_study,
    read_config,
    read_metrics,
    seed_of,
)
from samlib.study.selections import method_label

is_measure = measures.is_measure  #: a results column holding a sharpness value


def _known_train_size(dataset: Any) -> int | None:
    """The training images of a named data set (`samlib.data.train_size`: its known class counts, or for
    fashion_mnist the labels file of Debian's folder when installed); None for an IDX folder or anything
    unknown. Only a run without metrics.json needs it: a run records its own ``n_train``."""
    if dataset not in data.KERAS_NAMES + ("mnist5k",):
        return None
    return data.train_size(dataset)


# ---------------------------------------------------------------------- results.csv
COLUMNS = [
    "notebook", "run", "method", "optimizer", "sam", "rho", "m", "looksam_k", "batch_size", "lr", "lr_base",
    "lr_scaling", "lr_tuned", "base_batch_size", "warmup_epochs", "warmup_steps", "seed", "epochs", "steps",
    "steps_budget", "epochs_max", "milestones", "stop_rule", "stop_reason", "converged", "status", "train_loss",
    "test_loss", "train_accuracy", "test_accuracy", "loss_gap", "accuracy_gap", "val_loss", "val_accuracy",
    "grad_norm", "weight_norm",
]  # then the sharpness measures, then TAIL
TAIL = [
    "wall_seconds", "train_seconds", "step_seconds", "seconds_per_epoch", "samples_per_second",
    "sharpness_seconds", "sharpness_subset", "dataset", "train_subset", "n_train", "n_test", "error", "run_dir",
]


def stop_rule(config: Mapping[str, Any]) -> str:
    """How a run was told to stop: 'milestones loss=0.1 loss=0.03 epochs=10 (cap 150 epochs)' (it
    trains until every milestone is reached, or its cap), 'target_loss=0.5 (cap 64 steps)', 'steps=64',
    'epochs=5'."""
    steps, target, epochs = config.get("steps"), config.get("target_loss"), config.get("epochs")
    cap = f"cap {int(steps)} steps" if present(steps) else f"cap {epochs} epochs"
    if config.get("loss_milestones") or config.get("epoch_milestones") or config.get("evals_milestones"):
        return f"milestones {' '.join(m.name for m in _config_milestones(config))} ({cap})"
    if present(target):
        return f"target_loss={float(target):g} ({cap})"
    if present(steps):
        return f"steps={int(steps)}"
    return f"epochs={epochs}"


def _stop_reason(metrics: Mapping[str, Any], rule: str | None) -> Any:
    """metrics.json's stop reason, except that a milestone run which stopped with every milestone
    reached says ``milestones`` (runs recorded before that word say ``target_loss`` or ``epochs``)."""
    reason = metrics.get("stop_reason")
    done = not metrics.get("milestones_missing") and metrics.get("status") == OK
    return "milestones" if done and reason in ("target_loss", "epochs") and str(rule).startswith("milestones") \
        else reason


def _step_seconds(metrics: Mapping[str, Any]) -> float:
    """Seconds per optimizer step: metrics' steady-state ``step_seconds``; where that is NaN (the run
    was one compiled call, so there is no steady state), the whole training time over the steps."""
    if present(metrics.get("step_seconds")):
        return number(metrics["step_seconds"])
    seconds, steps = number(metrics.get("train_seconds")), number(metrics.get("steps"))
    return seconds / steps if steps and steps > 0 else math.nan


def _scaled_lr(config: Mapping[str, Any]) -> float:
    try:
        return Config.from_dict(config).scaled_lr
    except (ConfigError, TypeError):
        return math.nan


def run_status(metrics: Mapping[str, Any], batch_size: Any = None, n_train: Any = None) -> str:
    """A run's status word in results.csv from its metrics.json: `MISSING` without one, `INCOMPLETE`
    while it still says `RUNNING`, else `rundir.final_status` of what it says (an `OK` run at chance
    after the collapse patience is `COLLAPSED`, as training decides it; steps per epoch from
    `batch_size` and `n_train` when known)."""
    if not metrics:
        return MISSING
    status = metrics.get("status")
    if status == RUNNING:
        return INCOMPLETE
    per_epoch = math.ceil(number(n_train) / number(batch_size)) if present(n_train) and present(batch_size) else 0
    return final_status(status, metrics.get("train_loss"), metrics.get("train_accuracy"), metrics.get("num_classes"),
                        metrics.get("steps"), per_epoch)


_CONFIG_COLUMNS = {"optimizer": "optimizer", "sam": "sam", "rho": "rho", "m": "m", "looksam_k": "looksam_k", "lr_base": "lr",
                   "lr_scaling": "lr_scaling", "lr_tuned": "lr_tuned", "base_batch_size": "base_batch_size",
                   "warmup_epochs": "warmup_epochs", "warmup_steps": "warmup_steps",
                   "steps_budget": "steps", "epochs_max": "epochs",
                   "dataset": "dataset", "train_subset": "train_subset"}  #: results column -> Config key
_NUMBERS = ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "val_loss", "val_accuracy", "grad_norm",
            "weight_norm", "wall_seconds", "train_seconds", "samples_per_second", "sharpness_seconds")


def _what_ran(run_dir: Path, config: Mapping[str, Any], metrics: Mapping[str, Any], batch_size: Any) -> dict[str, Any]:
    """The columns that say what the run was: its method, its config's settings, the effective lr, the
    seed and the stop rule."""
    lr_eff = metrics.get("lr_effective")
    if not present(lr_eff):
        lr_eff = _scaled_lr(config) if config else math.nan
    row = {column: config.get(key) for column, key in _CONFIG_COLUMNS.items()}
    row.update(method=method_label(config.get("optimizer", "?"), config.get("sam", "none"), config.get("m")),
               batch_size=config.get("batch_size", batch_size), lr=lr_eff,
               seed=config.get("seed", seed_of(run_dir.name)), stop_rule=stop_rule(config) if config else None,
               milestones=" ".join(m.name for m in _config_milestones(config)) or None)
    return row


def _what_it_did(metrics: Mapping[str, Any], batch_size: Any, n_train: Any) -> dict[str, Any]:
    """The columns that say how the run went: status, steps and epochs, its final numbers and gaps, its
    timing and throughput, and the sharpness measures it holds."""
    converged = metrics.get("converged")
    step_s = _step_seconds(metrics)
    row: dict[str, Any] = {k: number(metrics.get(k)) for k in _NUMBERS}
    row.update(status=run_status(metrics, batch_size, n_train), epochs=metrics.get("epochs_run"),
               steps=metrics.get("steps"), stop_reason=metrics.get("stop_reason"),
               converged=converged if isinstance(converged, bool) else None, step_seconds=step_s,
               seconds_per_epoch=step_s * math.ceil(n_train / batch_size)
               if n_train and batch_size and math.isfinite(step_s) else math.nan,
               sharpness_subset=metrics.get("sharpness_subset"), n_train=n_train, n_test=metrics.get("n_test"),
               error=metrics.get("error") or metrics.get("sharpness_error"))
    row["loss_gap"] = row["test_loss"] - row["train_loss"]
    row["accuracy_gap"] = row["train_accuracy"] - row["test_accuracy"]
    row.update({key: number(value) for key, value in metrics.items() if is_measure(key)})
    return row


def run_record(
    run_dir: str | Path,
    notebook: str | None = None,
    batch_size: int | None = None,
    config: Mapping[str, Any] | None = None,
    study_dir: str | Path | None = None,
) -> dict[str, Any]:
    """One run folder as a flat dict of the `COLUMNS`, the sharpness measures it holds, and `TAIL`.

    `config`: the run's planned config, used when the folder has no config.json. Missing or unreadable
    files never raise: the status is `run_status` (a folder without metrics.json is `MISSING`, one whose
    metrics still say `RUNNING` is `INCOMPLETE`, a collapsed one `COLLAPSED`); columns a run did not
    record are NaN / None. ``run_dir`` is the folder relative to `study_dir` when it lies inside it (a
    results.csv names no machine's paths), else as given.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir) or dict(config or {})
    metrics = read_metrics(run_dir)
    if notebook is None or batch_size is None:
        nb, bs = cell_of(run_dir)
        notebook, batch_size = notebook if notebook is not None else nb, batch_size if batch_size is not None else bs
    row = {"notebook": notebook, "run": run_dir.name, **_what_ran(run_dir, config, metrics, batch_size)}
    n_train = metrics.get("n_train") or _known_train_size(row["dataset"])
    row.update(_what_it_did(metrics, row["batch_size"], n_train))
    row["stop_reason"] = _stop_reason(metrics, row["stop_rule"])
    row["run_dir"] = in_study(run_dir, study_dir)
    return {**{k: row[k] for k in COLUMNS}, **{k: v for k, v in row.items() if is_measure(k)},
            **{k: row[k] for k in TAIL}}


# ---------------------------------------------------------------------- snapshots.csv
SNAPSHOT_IDENTITY = [
    "notebook", "run", "method", "optimizer", "sam", "m", "looksam_k", "rho", "batch_size", "lr", "lr_base",
    "lr_scaling", "lr_tuned", "base_batch_size", "warmup_epochs", "warmup_steps", "seed", "dataset", "n_train",
    "status", "step_seconds", "run_dir",
]  # a run's columns, as in its `run_record`
SNAPSHOT_COLUMNS = SNAPSHOT_IDENTITY + [
    "milestone", "kind", "at", "reached", "step", "epoch", "train_loss", "train_accuracy", "train_error",
    "val_loss", "val_accuracy", "val_error", "test_loss", "test_accuracy", "test_error", "weight_norm",
    "subset_loss", "grad_norm", "mismatch",
]  # then the sharpness measures the snapshots hold (`samlib.measures.order`)
_SNAPSHOT_NUMBERS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                     "weight_norm", "mismatch", *measures.CONTEXT)
#: a snapshot's per-test-image record (``record_predictions``): in the table for the answer's two-way
#: bootstrap, left out of snapshots.csv (the run's metrics.json keeps it)
PREDICTIONS = ("test_correct", "n_test")


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
            return str(name), kind, number(at)
    return str(name), str(kind), number(at)


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
                               "step": number(snap.get("step")), "epoch": number(snap.get("epoch"))}
        row.update({k: number(snap.get(k)) for k in _SNAPSHOT_NUMBERS})
        for split in ("train", "val", "test"):
            row[f"{split}_error"] = 1.0 - row[f"{split}_accuracy"]
        row.update({k: number(v) for k, v in snap.items() if is_measure(k)})
        row.update(test_correct=snap.get("test_correct"), n_test=snap.get("n_test"))
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


# ---------------------------------------------------------------------- a whole study
def _runs(study_dir: Path) -> list[tuple[dict[str, Any], Path, str | None, int | None, dict | None]]:
    """(its `run_record`, folder, notebook, batch size, planned config) of every run folder, then
    of every run study.json planned that has no folder."""
    out: list[tuple[dict[str, Any], Path, str | None, int | None, dict | None]] = []
    seen: set[str] = set()
    for run in layout.run_dirs(study_dir):
        out.append((run_record(run, study_dir=study_dir), run, None, None, None))
        seen.add(str(run.resolve()))
    for planned in layout.planned_runs(study_dir):
        if str(planned.run_dir.resolve()) not in seen:
            row = run_record(planned.run_dir, planned.notebook, planned.batch_size, planned.config,
                                    study_dir=study_dir)
            if row["seed"] is None:
                row["seed"] = planned.seed
            out.append((row, planned.run_dir, planned.notebook, planned.batch_size, planned.config))
    return out


def collect(study_dir: str | Path) -> pd.DataFrame:
    """One row per run of the study: `COLUMNS`, then the sharpness measures, then `TAIL`.

    Runs that study.json planned but that have no folder get a row with status `layout.MISSING`; every
    row also has ``cell_status`` (the runner's status.json of its cell: ok / failed / running).
    ``run_dir`` is relative to `study_dir` (``runs/<notebook>/<batch_size>/<run>``).
    """
    study_dir = Path(study_dir)
    rows = [row for row, *_ in _runs(study_dir)]
    keys = measures.order({k for r in rows for k in r if measures.is_measure(k)})
    columns = COLUMNS + keys + TAIL
    df = pd.DataFrame(rows, columns=columns + ["cell_status"])
    df["cell_status"] = [io.read_json_dict(layout.cell_status((study_dir / r).parent)).get("status")
                         for r in df["run_dir"]]
    if len(df):
        df = df.sort_values(["notebook", "batch_size", "run"], kind="stable").reset_index(drop=True)
    return df


def collect_snapshots(study_dir: str | Path) -> pd.DataFrame:
    """One row per (run, milestone) of the study (`snapshot_records`; snapshots.csv): the run's
    identity columns, the milestone, whether it was reached, and the snapshot's numbers; then the
    sharpness measures. Planned runs without a folder count with every milestone of their config not
    reached; runs without snapshot records (they predate them) have no rows."""
    study_dir = Path(study_dir)
    rows = []
    for record, run, notebook, batch_size, config in _runs(study_dir):
        rows += snapshot_records(run, notebook, batch_size, config, study_dir=study_dir, record=record)
    keys = measures.order({k for r in rows for k in r if measures.is_measure(k)})
    df = pd.DataFrame(rows, columns=SNAPSHOT_COLUMNS + keys + list(PREDICTIONS))
    if len(df):
        df = df.sort_values(["notebook", "batch_size", "run"], kind="stable").reset_index(drop=True)
    return df
