"""What a finished run directory is (no TensorFlow import: the study runner checks runs cheaply)."""

from __future__ import annotations

from pathlib import Path

from samlib import io
from samlib.config import Config

WEIGHTS = "model.weights.h5"
COMPLETE = ("ok", "diverged")  # statuses of a finished run (a diverged run is a result, not a crash)
_IGNORED_FOR_RESUME = ("run_dir", "verbose")  # fields that do not change a run's result


def is_complete(run_dir: str | Path, config: Config) -> bool:
    """True if `run_dir` holds a finished run (ok or diverged) of the same parameters."""
    run_dir = Path(run_dir)
    try:
        metrics = io.read_json(run_dir / "metrics.json")
        saved = io.read_json(run_dir / "config.json")
    except (OSError, ValueError):
        return False
    if metrics.get("status") not in COMPLETE or not (run_dir / WEIGHTS).exists():
        return False
    mine = config.to_dict()
    return all(saved.get(k) == mine[k] for k in mine if k not in _IGNORED_FOR_RESUME)
