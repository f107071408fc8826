"""A single run's folder: its file names, the run status words, when it is complete or measured,
`load_run` (a finished run's network back from its folder) and `measure_run` (measuring a finished run
and recording the numbers in its metrics.json).

A run folder holds (each file written atomically, `samlib.io`)::

    config.json         the validated `Config`
    metrics.json        the run's status and results (`samlib.train`), then its sharpness (`measure_run`)
    history.csv         per-epoch training history
    model.weights.h5    the trained network's weights
    snapshots/          the weights at each milestone the run reached (`snapshot_weights`)

Status words of a run (``metrics.json["status"]``): `RUNNING` while it trains, then `OK`, `DIVERGED` or
`COLLAPSED` (all `COMPLETE`: a diverged or collapsed run is a result) or `FAILED` (its training raised).
`final_status` decides collapse, once, for training and for reading a run back: an ok run whose final
training loss and accuracy are at chance (`is_collapsed`) after `collapse_patience` steps. Its sharpness status
(``metrics.json["sharpness_status"]``): `SHARPNESS_OK`, or `SHARPNESS_SKIPPED` for a diverged run,
whose weights are not finite.

`encode_correct` and `decode_correct` write and read which test images a network classifies correctly
(metrics.json ``test_correct``, recorded with `Config.record_predictions`).

This is the library's half of the on-disk contract; `samlib.train` writes run folders with these
names, and the study's half (cells, study.json, results.csv, the status words of cells and plans) is
`samlib.study.layout`, which re-exports them. Recorded values are read leniently (`samlib.io.number`,
`samlib.io.present`: a missing or unreadable number is NaN, not an error). No TensorFlow at import
(`load_run` and `measure_run` load it when called), so the study runner stays light.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from samlib import io
from samlib.config import Config, ConfigError, SharpnessSettings
from samlib.io import number, present

if TYPE_CHECKING:
    import keras

    from samlib.data import Data

# ---------------------------------------------------------------------- file names
CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
WEIGHTS = "model.weights.h5"
RUN_FILES = (CONFIG, METRICS, HISTORY)  # a folder holding any of these is a run
SNAPSHOTS = "snapshots"  # snapshots/<milestone>.weights.h5: the weights at each milestone reached
#: what training records of a snapshot (metrics.json "snapshots"); `measure_run` adds the measures
SNAPSHOT_FIELDS = ("milestone", "kind", "at", "step", "epoch", "epochs_done", "train_loss", "train_accuracy",
                   "val_loss", "val_accuracy", "test_loss", "test_accuracy", "weight_norm")
#: what training records after them when the config asks (``match_tolerance``: a loss snapshot's
#: ``check_before`` and ``mismatch``; ``record_predictions``: ``test_correct``, ``n_test``)
SNAPSHOT_EXTRAS = ("check_before", "mismatch", "test_correct", "n_test")

# ---------------------------------------------------------------------- status words
RUNNING = "running"
OK = "ok"
DIVERGED = "diverged"
FAILED = "failed"
COLLAPSED = "collapsed"  # finished, but learned nothing: `is_collapsed` (shown, never averaged)
COMPLETE = (OK, DIVERGED, COLLAPSED)  # a finished run (a diverged or collapsed run is a result, not a crash)
COLLAPSE_LOSS_TOLERANCE = 0.05  # a training loss within 5 % of ln K is the loss of a uniform guess
COLLAPSE_ACCURACY_FACTOR = 1.5  # a training accuracy <= 1.5 / K is at chance
STUCK_LOSS_TOLERANCE = 0.01  # in training, a loss within 1 % of ln K is stuck there (`is_stuck`)
DEFAULT_NUM_CLASSES = 10  # the study's data sets (MNIST, Fashion-MNIST, CIFAR-10)
SHARPNESS_OK = OK
SHARPNESS_SKIPPED = f"skipped: {DIVERGED}"  # a diverged run's weights are not finite: not measured
_IGNORED_FOR_RESUME = ("run_dir", "verbose")  # Config fields that do not change a run's result


def snapshot_weights(run_dir: str | Path, milestone: str) -> Path:
    """``<run_dir>/snapshots/<milestone>.weights.h5``: the weights of the snapshot at `milestone`
    (a `samlib.milestones.Milestone` name such as ``loss=0.03``)."""
    return Path(run_dir) / SNAPSHOTS / f"{milestone}.weights.h5"


# ---------------------------------------------------------------------- one run's state
def _chance(loss: Any, accuracy: Any, num_classes: Any) -> tuple[float, float, bool] | None:
    """What both collapse rules read: (the loss as a number, ln K, whether the accuracy is at chance:
    at most `COLLAPSE_ACCURACY_FACTOR` / K), K = `num_classes` (`DEFAULT_NUM_CLASSES` when not given);
    None for K < 2. A missing (None / NaN) accuracy is not at chance."""
    k = int(num_classes) if present(num_classes) else DEFAULT_NUM_CLASSES
    if k < 2:
        return None
    accuracy = number(accuracy)
    return number(loss), math.log(k), math.isfinite(accuracy) and accuracy <= COLLAPSE_ACCURACY_FACTOR / k


def is_collapsed(loss: Any, accuracy: Any, num_classes: Any = None) -> bool:
    """The one collapse rule: a run whose (inference-mode) training loss is within
    `COLLAPSE_LOSS_TOLERANCE` (5 %) of ln K, the loss of predicting every class with probability 1/K,
    or whose training accuracy is at most `COLLAPSE_ACCURACY_FACTOR` / K (chance), K = `num_classes`
    (`DEFAULT_NUM_CLASSES` when not given). Such a run finished, but learned nothing: it is shown,
    never averaged. A missing (None / NaN) loss or accuracy is not evidence of collapse."""
    chance = _chance(loss, accuracy, num_classes)
    if chance is None:
        return False
    loss, chance_loss, at_chance = chance
    return (math.isfinite(loss) and abs(loss - chance_loss) <= COLLAPSE_LOSS_TOLERANCE * chance_loss) or at_chance


def is_stuck(loss: Any, accuracy: Any, num_classes: Any = None) -> bool:
    """The in-training stop rule (`samlib.monitor`), stricter than `is_collapsed`, so that a slow start is
    not stopped: the loss within `STUCK_LOSS_TOLERANCE` (1 %) of ln K (a dead network sits on it; a slow
    start moves away), or the accuracy at chance (`is_collapsed`'s 1.5 / K) with the loss at or above ln K
    (a run that diverged to a large finite loss: no worse than a uniform guess would be learning;
    Fashion-MNIST's LookSAM at lr 0.316 sat at loss 350-700 and 10 % accuracy for 800 steps). Missing
    numbers are not evidence."""
    chance = _chance(loss, accuracy, num_classes)
    if chance is None or not math.isfinite(chance[0]):
        return False
    loss, chance_loss, at_chance = chance
    return abs(loss - chance_loss) <= STUCK_LOSS_TOLERANCE * chance_loss or (at_chance and loss >= chance_loss)


def collapse_patience(steps_per_epoch: int) -> int:
    """Steps before a run at chance counts as collapsed: two epochs and at least 100 steps (a slow
    start, or a smoke-test run of a few steps, is not a collapse)."""
    return max(2 * int(steps_per_epoch), 100)


def final_status(status: str, loss: Any, accuracy: Any, num_classes: Any = None, steps: Any = None,
                 steps_per_epoch: int = 0) -> str:
    """The status a finished run is recorded (`samlib.train`) and read back (`samlib.study.tables`) with:
    `status` as given, except that `OK` becomes `COLLAPSED` when the final training `loss` and `accuracy`
    are at chance (`is_collapsed`, K = `num_classes`) and the run took at least
    `collapse_patience(steps_per_epoch)` steps (0: unknown, so at least 100). `steps` unknown (None,
    NaN): past the patience. Lenient: the numbers may be as metrics.json holds them (`samlib.io.number`)."""
    if status != OK or not is_collapsed(loss, accuracy, num_classes):
        return status
    steps = number(steps)
    return COLLAPSED if not math.isfinite(steps) or steps >= collapse_patience(steps_per_epoch) else status


def encode_correct(correct: Any) -> str:
    """Which examples a network classifies correctly, compactly (metrics.json ``test_correct``): the bools
    packed 8 to a byte, the first example in the lowest bit (``np.packbits(..., bitorder="little")``),
    in base64 text. `decode_correct` reads it back, given the number of examples."""
    packed = np.packbits(np.asarray(correct, dtype=bool), bitorder="little")
    return base64.b64encode(packed.tobytes()).decode("ascii")


def decode_correct(text: str, n: int) -> np.ndarray:
    """The `n` bools that `encode_correct` wrote as `text` (the padding bits of the last byte dropped)."""
    packed = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    if len(packed) != (int(n) + 7) // 8:
        raise ValueError(f"{len(packed)} bytes hold {8 * len(packed)} bits, not the {n} examples asked for")
    return np.unpackbits(packed, count=int(n), bitorder="little").astype(bool)


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """metrics.json of a run ({} when absent or unreadable)."""
    return io.read_json_dict(Path(run_dir) / METRICS)


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """config.json of a run ({} when absent or unreadable)."""
    return io.read_json_dict(Path(run_dir) / CONFIG)


def is_complete(run_dir: str | Path, config: Config) -> bool:
    """True if `run_dir` holds a finished run (ok or diverged, weights saved) of the same parameters."""
    run_dir = Path(run_dir)
    metrics, saved = read_metrics(run_dir), read_config(run_dir)
    if metrics.get("status") not in COMPLETE or not saved or not (run_dir / WEIGHTS).exists():
        return False
    try:  # the saved config as a Config would hold it: keys added since it was written take their defaults
        saved = Config.from_dict(saved).to_dict()
    except ConfigError:
        return False
    mine = config.to_dict()
    return all(saved[k] == mine[k] for k in mine if k not in _IGNORED_FOR_RESUME)


def is_measured(run_dir: str | Path, settings: SharpnessSettings) -> bool:
    """metrics.json holds a sharpness measurement (or a recorded skip) made with exactly `settings`,
    and so does each of its snapshots (with `settings.at_milestone` of its milestone)."""
    metrics = read_metrics(run_dir)
    if "sharpness_status" not in metrics or metrics.get("sharpness_settings") != settings.to_dict():
        return False
    return all(snap.get("sharpness_settings") == settings.at_milestone(snap["milestone"]).to_dict()
               for snap in metrics.get("snapshots") or [])


# ---------------------------------------------------------------------- a finished run
def load_run(run_dir: str | Path, data: Data | None = None) -> tuple[Config, keras.Model]:
    """Rebuild the network of a finished run and load its weights (`data`: its data set, if at hand;
    else `samlib.data.load_data` of its config)."""
    from samlib.data import load_data
    from samlib.models import build_network

    run_dir = Path(run_dir)
    for name in (CONFIG, WEIGHTS):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished run: {name} is missing")
    config = Config.from_dict(io.read_json(run_dir / CONFIG))
    data = data if data is not None else load_data(config)
    network = build_network(config, data)
    network.load_weights(run_dir / WEIGHTS)
    return config, network


# ---------------------------------------------------------------------- sharpness of a run
def settings_of(sharpness: SharpnessSettings | Mapping[str, Any] | None) -> SharpnessSettings:
    """`sharpness` as checked settings (a mapping is read with `SharpnessSettings.from_dict`)."""
    return sharpness if isinstance(sharpness, SharpnessSettings) else SharpnessSettings.from_dict(sharpness)


def measure_run(run_dir: str | Path, sharpness: SharpnessSettings | Mapping[str, Any] | None = None,
                data=None, model=None) -> dict[str, Any]:
    """Measure one finished run and merge the numbers into its metrics.json; returns what was merged:
    the values of `samlib.sharpness.measure`, ``sharpness_settings`` (`SharpnessSettings.to_dict`),
    ``sharpness_status``, ``sharpness_subset`` (examples measured on), ``sharpness_seed``,
    ``sharpness_seconds`` and ``n_train``; and ``snapshots``, each snapshot measured at its own weights
    (``snapshots/<milestone>.weights.h5``) with `SharpnessSettings.at_milestone`, unless it already was.
    A snapshot at the run's last step with the final weights' settings shares their numbers.

    `model`: the trained network if at hand (else loaded from the folder); `data`: the run's data set
    (else `samlib.data.load_data` of its config). A diverged or collapsed run (or one whose train or test
    loss is not finite) is not measured: its sharpness keys are written as null with `SHARPNESS_SKIPPED`.
    """
    from samlib import sharpness as sharp
    from samlib.data import load_data

    run_dir = Path(run_dir)
    settings = settings_of(sharpness)
    metrics = read_metrics(run_dir)
    config = Config.from_dict(io.read_json(run_dir / CONFIG))
    data = data if data is not None else load_data(config)
    extra = {"sharpness_settings": settings.to_dict(), "n_train": int(len(data.x_train))}
    if not _measurable(metrics):
        keys = sharp.measure_keys(settings.measures, settings.epsilons, settings.subspace_dim)
        values = {**{k: None for k in keys}, **extra, "sharpness_status": f"skipped: {metrics.get('status')}"}
        io.update_json(run_dir / METRICS, **values)
        return values
    model = model if model is not None else load_run(run_dir, data)[1]
    x, y = sharp.subset(data.x_train, data.y_train, settings.subset, settings.seed)
    values, snapshots = _measure_weights(run_dir, metrics, settings, model, lambda s: _measured(model, x, y, s))
    values.update(extra)  # the settings asked for, which `is_measured` compares
    if snapshots:
        values["snapshots"] = snapshots
    io.update_json(run_dir / METRICS, **values)
    return values


def _measurable(metrics: Mapping[str, Any]) -> bool:
    """Whether a finished run's weights are worth measuring: not diverged or collapsed, and its train and
    test losses (where recorded) finite."""
    non_finite = any(k in metrics and not present(metrics[k]) for k in ("train_loss", "test_loss"))
    return metrics.get("status") not in (DIVERGED, COLLAPSED) and not non_finite


def _measured(model: keras.Model, x: Any, y: Any, settings: SharpnessSettings) -> dict[str, Any]:
    """`samlib.sharpness.measure` of `model`'s current weights on (x, y) with `settings`, and how it was
    measured: the settings, the subset's size and seed, the seconds it took, `SHARPNESS_OK`."""
    from samlib import sharpness as sharp
    from samlib.evaluation import make_loss

    start = time.perf_counter()
    found: dict[str, Any] = sharp.measure(model, make_loss(), x, y, settings=settings)
    found.update(sharpness_settings=settings.to_dict(), sharpness_subset=int(len(x)),
                 sharpness_seed=settings.seed, sharpness_seconds=time.perf_counter() - start,
                 sharpness_status=SHARPNESS_OK)
    return found


def _measure_weights(run_dir: Path, metrics: Mapping[str, Any], settings: SharpnessSettings, model: keras.Model,
                     measured: Callable[[SharpnessSettings], dict[str, Any]]) -> tuple[dict[str, Any], list[dict]]:
    """(the final weights' values, the run's snapshot records with theirs): each snapshot not yet measured
    with its settings is measured at its own weights (`measured` of the model as it stands), and the
    model is left at its final weights. The final weights are those of the snapshot taken at the run's
    last step, if any: measured once, with that milestone's settings."""
    final_weights = model.get_weights()
    snapshots, shared = [dict(snap) for snap in metrics.get("snapshots") or []], None
    last = [snap["milestone"] for snap in snapshots if snap.get("step") == metrics.get("steps")]
    final = settings.at_milestone(last[-1] if last else None)
    for snap in snapshots:
        wanted = settings.at_milestone(snap["milestone"])
        if snap.get("sharpness_settings") == wanted.to_dict():
            continue
        path = snapshot_weights(run_dir, snap["milestone"])
        recorded = SNAPSHOT_FIELDS + SNAPSHOT_EXTRAS  # what training recorded stays
        for key in [k for k in snap if k not in recorded]:  # a measurement with other settings goes
            del snap[key]
        if snap.get("step") == metrics.get("steps") and wanted == final:
            model.set_weights(final_weights)
            shared = shared or measured(final)
            snap.update(shared)
        elif path.is_file():
            model.load_weights(path)
            snap.update(measured(wanted))
        else:  # e.g. a committed run without weights: nothing to measure
            snap.update(sharpness_status="skipped: no weights", sharpness_settings=wanted.to_dict())
    model.set_weights(final_weights)
    return (dict(shared) if shared is not None else measured(final)), snapshots
