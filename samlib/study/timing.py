"""Where a study's time went: the split of its cells' seconds between training steps, loss checks,
snapshots, validation (and Keras' own per-epoch work), sharpness measurement and start-up, from what
the runs and cells recorded (metrics.json, status.json). No TensorFlow here.

- ``training``: Σ ``train_seconds`` (optimizer steps, measured with checks, snapshots and validation
  paused); ``loss_checks``: Σ ``check_seconds``; ``snapshots``: Σ ``snapshot_seconds`` (the validation
  and test passes at milestones); ``validation_and_fit_overhead``: Σ (``wall_seconds`` − the three
  above): the per-epoch validation pass and what Keras' fit does besides; ``sharpness``: the seconds
  of every measurement made (the final weights' and each snapshot's, once each); ``startup_and_other``:
  the cells' own seconds (status.json) not spent in any run: kernel start, imports, data loading, the
  notebook's tables and plots. ``total`` is Σ of the cells' seconds (with several cells at once this is
  more than the study's wall clock); ``summary`` the summary notebook's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from samlib import io
from samlib.io import is_finite, number
from samlib.rundir import METRICS
from samlib.study import layout

PARTS = ("training", "loss_checks", "snapshots", "validation_and_fit_overhead", "sharpness", "startup_and_other")


def _num(value: Any) -> float:
    """Seconds from a record: 0 where missing or not finite (a part a run did not time took no time)."""
    return number(value) if is_finite(value) else 0.0


def run_seconds(metrics: Mapping[str, Any]) -> dict[str, float]:
    """One run's seconds by `PARTS` (without start-up, which belongs to its cell)."""
    wall, train = _num(metrics.get("wall_seconds")), _num(metrics.get("train_seconds"))
    checks, snaps = _num(metrics.get("check_seconds")), _num(metrics.get("snapshot_seconds"))
    sharpness = _num(metrics.get("sharpness_seconds"))  # the final weights'
    shared = {round(sharpness, 9)}  # a snapshot that shares the final weights' numbers has their seconds
    for snap in metrics.get("snapshots") or []:
        seconds = _num(snap.get("sharpness_seconds"))
        if round(seconds, 9) not in shared:
            sharpness += seconds
    return {"training": train, "loss_checks": checks, "snapshots": snaps,
            "validation_and_fit_overhead": max(wall - train - checks - snaps, 0.0), "sharpness": sharpness}


def split(runs: Iterable[Mapping[str, Any]], cell_seconds: float, summary_seconds: float = 0.0) -> dict[str, Any]:
    """The study's split (module doc) from its runs' metrics and its cells' total seconds."""
    parts = dict.fromkeys(PARTS, 0.0)
    for metrics in runs:
        for key, value in run_seconds(metrics).items():
            parts[key] += value
    parts["startup_and_other"] = max(cell_seconds - sum(parts.values()), 0.0)
    total = sum(parts.values())
    share = {k: (v / total if total else math.nan) for k, v in parts.items()}
    return {"seconds": parts, "share": share, "total": total, "summary": summary_seconds,
            "checks_and_validation_share": share["loss_checks"] + share["validation_and_fit_overhead"]}


def study_split(study_dir: str | Path) -> dict[str, Any]:
    """`split` of a study folder: every run folder's metrics.json and every cell's status.json."""
    study_dir = Path(study_dir)
    runs = [io.read_json_dict(run / METRICS) for run in layout.run_dirs(study_dir)]
    cells = [io.read_json_dict(p) for p in (study_dir / layout.RUNS).glob(f"*/*/{layout.CELL_STATUS}")]
    summary = io.read_json_dict(layout.summary_files(study_dir)[1])
    return split(runs, sum(_num(c.get("seconds")) for c in cells), _num(summary.get("seconds")))


def sentence(split_: Mapping[str, Any]) -> str:
    """The split in words, for the report: 'Cell time 4,210 s: training steps 61 %, loss checks 6 %, …'."""
    if not split_.get("total"):
        return "Cell time: not recorded."
    names = {"training": "training steps", "loss_checks": "loss checks", "snapshots": "snapshots",
             "validation_and_fit_overhead": "validation and fit overhead", "sharpness": "sharpness",
             "startup_and_other": "start-up and notebook work"}
    parts = ", ".join(f"{names[k]} {100 * split_['share'][k]:.0f} %" for k in PARTS)
    return (f"Cell time {split_['total']:,.0f} s (summed over cells running at once): {parts}; loss checks and "
            f"validation together {100 * split_['checks_and_validation_share']:.0f} %.")
