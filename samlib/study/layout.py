"""The study's on-disk contract, in one place: where everything lives, the names of its files, the
status words, when a run is complete or measured, and study.json (the plan) written and read back.
The rows of results.csv and snapshots.csv are `samlib.study.tables`'.

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
`COLLAPSED` for a run that says ``ok`` but learned nothing (`tables.run_status`, `rundir.is_collapsed`). A cell's
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
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from samlib import io
from samlib.config import Config
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
SNAPSHOTS = "snapshots.csv"  # one row per (run, milestone): `tables.snapshot_records`
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


def fmt_value(value: Any) -> str:
    """A grid value as a run folder name spells it: 0.05, none, sam (other characters become _)."""
    text = "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def run_dirname(point: Mapping[str, Any], seed: int) -> str:
    """Folder name of one run from its grid values, e.g. ``m=32,rho=0.05,seed=0``."""
    return ",".join([f"{k}={fmt_value(point[k])}" for k in sorted(point)] + [f"seed={seed}"])


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


# ---------------------------------------------------------------------- paths in records
def in_study(path: str | Path, study_dir: str | Path | None) -> str:
    """A path as the study's records (study.json, status.json, results.csv) name it: relative to the
    study folder (posix) when it lies inside it (``runs/baseline/32/baseline.ipynb``), else as given."""
    if study_dir is not None:
        try:
            return Path(path).resolve().relative_to(Path(study_dir).resolve()).as_posix()
        except ValueError:
            pass
    return str(path)
