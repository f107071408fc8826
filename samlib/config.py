"""One frozen, validated run configuration.

A `Config` is built from a dict (or a YAML file) with `Config.from_dict`, or directly; every key is
checked (by the checkers of `samlib.validate`, one per field) and a bad one raises a single
`ConfigError` that names the key, the value and what is allowed. `check_data` checks a config against
its data set (readable, batch size at most its training images) without loading it.
`SharpnessSettings` are checked the same way.

Learning-rate scaling (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): the effective learning rate
is ``lr * k`` with ``k = B / B0`` (``linear``), ``sqrt(B / B0)`` (``sqrt``) or ``1`` (``none``), where
``B`` is `batch_size` and ``B0`` is `base_batch_size`; it is reached by a linear warm-up from `lr` over
`warmup_epochs` epochs, or from 0 over `warmup_steps` optimizer steps when that is set.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

import yaml

from samlib import measures as registry
from samlib.optimizers import OPTIMIZERS, SAM_MODES  # the registries' names (`samlib.optimizers`)
from samlib.references import Reference
from samlib.validate import (
    Checker, ConfigError, boolean, check_instance, check_keys, check_values, checked, checks_of, choice, integer,
    invalid, list_of, number, text,
)

LR_SCALINGS = ("none", "linear", "sqrt")
STRATEGIES = ("auto", "none", "mirrored")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
DATASET_RE = r"mnist5k|mnist|fashion_mnist|cifar10|idx:.+"
DATASETS = "mnist5k, mnist, fashion_mnist, cifar10 or idx:<folder with the four IDX .gz files>"
LABEL = "config key"  # how a Config error names its key
MODELS = ("cnn", "resnet8")  #: the built-in networks (`samlib.models.BUILDERS`)
#: keys that `to_dict` leaves out while they hold their default, so the config.json of every run made
#: before they existed (and of every run that does not set them) stays as it was
OMITTED_AT_DEFAULT = ("model", "data")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one training run depends on; each field's checker says what it allows. Building one
    (directly, with `from_dict`, `replace` or `dataclasses.replace`) validates it: a bad value raises
    one `ConfigError` naming the key, the value and what is allowed. Nothing is read from disk here;
    `check_data` checks a config against its data set."""

    dataset: str = checked("mnist5k", text(DATASET_RE, DATASETS))  #: mnist5k | mnist | fashion_mnist | cifar10 | idx:<folder>
    data_dir: str | None = checked(None, text().or_none())  #: folder with the four IDX .gz files (overrides the download)
    batch_size: int = checked(128, integer(1))
    epochs: int = checked(5, integer(1))  #: upper bound on epochs (see `steps`, `target_loss`)
    steps: int | None = checked(None, integer(1).or_none())  #: step budget: stop after exactly this many optimizer steps
    target_loss: float | None = checked(None, number(0).or_none())  #: stop once the inference-mode train loss is <= this (see train)
    check_every: int | None = checked(None, integer(1).or_none())  #: steps between loss-target checks near the target (None: 1/4 epoch)
    #: checks the loss's rate of fall is estimated over when scheduling the next one (`monitor.CheckSchedule`;
    #: 2: the last two; a wider window is steadier where the loss is noisy near a plateau)
    check_window: int = checked(2, integer(2))
    #: check every step once the loss is within a factor exp(match_tolerance) of the next loss milestone, so that
    #: its snapshot is at the first step whose loss is <= it (`monitor.CheckSchedule`); each loss snapshot then
    #: records ``check_before`` and ``mismatch``; one step per compiled call (None: checks as `check_every` and
    #: `check_window` say)
    match_tolerance: float | None = checked(None, number(0, lo_open=True).or_none())
    #: snapshot the weights when the inference-mode train loss first is <= each of these, train on to the smallest
    loss_milestones: tuple[float, ...] = checked((), list_of(number(0, lo_open=True), non_empty=False, distinct=True))
    #: snapshot the weights after exactly this many epochs each (at most `epochs`)
    epoch_milestones: tuple[int, ...] = checked((), list_of(integer(1), non_empty=False, distinct=True))
    #: snapshot the weights once the run has spent this many gradient evaluations each (`samlib.cost`: SAM
    #: spends two a step), to compare methods at the same compute; one step per compiled call when set
    evals_milestones: tuple[int, ...] = checked((), list_of(integer(1), non_empty=False, distinct=True))
    optimizer: str = checked("sgd", choice(OPTIMIZERS))  #: sgd | momentum | adam | adamw | lars | lamb
    lr: float = checked(0.01, number(0, lo_open=True))  #: learning rate at `base_batch_size` (before scaling)
    momentum: float = checked(0.9, number(0, 1, hi_open=True))  #: used by `momentum` and `lars`
    #: the optimizer's own for adamw, lars and lamb (`samlib.optimizers`), L2 on the kernels otherwise
    weight_decay: float = checked(0.0, number(0))
    lars_eta: float = checked(0.001, number(0, lo_open=True))  #: LARS: trust coefficient η (You et al. 2017)
    lr_scaling: str = checked("none", choice(LR_SCALINGS))  #: none | linear | sqrt
    #: the lr was chosen on validation for this method at this batch size (a study's `tuned` lr rule, set by
    #: the planner from a tuning study: `samlib.study.tuning`); a label, it changes nothing in training
    lr_tuned: bool = checked(False, boolean())
    base_batch_size: int = checked(128, integer(1))
    warmup_epochs: float = checked(0.0, number(0))
    #: linear warm-up from 0 over this many optimizer steps: the lr of step s (0-based) is
    #: scaled_lr·min(1, (s + 1)/warmup_steps), then constant; 0: none. When set, `warmup_epochs` is ignored
    #: (None: the warm-up of `warmup_epochs`, from `lr`)
    warmup_steps: int | None = checked(None, integer(0).or_none())
    sam: str = checked("none", choice(SAM_MODES))  #: none | sam | asam | looksam
    rho: float = checked(0.05, number(0))
    asam_eta: float = checked(0.01, number(0))  #: ASAM: T_w = |w| + eta (Kwon et al. 2021)
    m: int | None = checked(None, integer(1).or_none())  #: micro-batch size for m-sharpness (None: the whole batch)
    sync_perturbation: bool = checked(False, boolean())  #: data-parallel: all-reduce the ascent gradient
    looksam_k: int = checked(5, integer(1))  #: LookSAM: a full SAM step every k steps
    looksam_alpha: float = checked(0.7, number(0))  #: LookSAM: weight of the reused sharpness direction
    seed: int = checked(0, integer(0))
    val_fraction: float = checked(0.125, number(0, 1, hi_open=True))  #: share of the training images held out for validation (0: none)
    #: use only N training images, drawn per class in proportion, seeded by a fixed split seed, applied BEFORE the
    #: validation split (`samlib.data.subset_train`); the test set is never cut (None: all)
    train_subset: int | None = checked(None, integer(1).or_none())
    dropout: float = checked(0.5, number(0, 1, hi_open=True))
    strategy: str = checked("auto", choice(STRATEGIES))  #: auto | none | mirrored
    precision: str = checked("float32", choice(PRECISIONS))  #: float32 | mixed_float16 | mixed_bfloat16
    jit_compile: bool | None = checked(None, boolean().or_none())  #: None: on for GPUs, off on CPU (XLA is 4-8x slower there)
    eval_batch_size: int = checked(1000, integer(1))
    #: every snapshot and the final metrics record which test images are classified correctly (``test_correct``,
    #: packed bits: `samlib.rundir.decode_correct`)
    record_predictions: bool = checked(False, boolean())
    steps_per_execution: int = checked(1, integer(1))  #: optimizer steps per compiled call (Keras); callbacks see every k-th
    verbose: int = checked(1, integer(0, 2))  #: Keras progress output: 0 silent, 1 bar, 2 one line per epoch
    run_dir: str | None = checked(None, text().or_none())
    #: the network: cnn (the study's CNN, `samlib.models.build_cnn`), resnet8 (`samlib.models.build_resnet8`) or
    #: "package.module:function", called as ``function(input_shape, num_classes, config)`` and returning an
    #: uncompiled `keras.Model` whose outputs are logits (imported when the config is built)
    model: str = checked("cnn", Reference(MODELS, "a model builder"))
    #: the data: None for `dataset`, or "package.module:function", called with no arguments and returning a
    #: `samlib.data.Data` or ``(x_train, y_train, x_test, y_test)``; `train_subset` and `val_fraction` apply
    #: to it as to a named data set, `dataset` and `data_dir` are not read (imported when the config is built)
    data: str | None = checked(None, Reference((), "a data loader").or_none())

    def __post_init__(self) -> None:
        check_instance(self, LABEL)  # frozen: normalised values (int -> float) are set with object.__setattr__
        if self.epoch_milestones and max(self.epoch_milestones) > self.epochs:
            raise invalid("epoch_milestones", list(self.epoch_milestones), f"integers <= epochs ({self.epochs})", LABEL,
                          why="a milestone past the cap is never reached")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> "Config":
        """Build and validate a config; unknown keys are an error."""
        merged = dict(values or {})
        merged.update(overrides)
        check_keys(merged, sorted(CHECKS), label=LABEL)
        return cls(**merged)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "Config":
        return cls.from_dict(load_yaml_mapping(path), **overrides)

    def replace(self, **changes: Any) -> "Config":
        """A validated copy with some fields changed."""
        return Config.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-stable: lists for the tuple fields (the milestones), as config.json holds them; ``model`` and
        ``data`` only when they are set (`OMITTED_AT_DEFAULT`)."""
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        for key in OMITTED_AT_DEFAULT:
            if values[key] == _DEFAULTS[key]:
                del values[key]
        return values

    def validate(self) -> None:
        """Check every field again (construction already has)."""
        check_instance(self, LABEL)

    # ------------------------------------------------------------------ derived values
    @property
    def lr_scale(self) -> float:
        """The factor k by which `lr` is multiplied at this batch size (Goyal et al.)."""
        ratio = self.batch_size / self.base_batch_size
        return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[self.lr_scaling]

    @property
    def scaled_lr(self) -> float:
        """The effective learning rate ``lr * lr_scale``, reached after the warm-up."""
        return self.lr * self.lr_scale


CHECKS = checks_of(Config)  #: Config key -> its Checker (a study params file checks its Config values with them)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)}


def check_data(config: Config, keys: Mapping[str, str] | None = None, label: str = LABEL,
               sizes: dict | None = None) -> int:
    """Check `config` against its data set without loading it, and return its number of training images
    after the validation split (`samlib.data.train_size`: a named data set reads no file, an IDX folder
    only its train-labels file). A data set that cannot be read (an IDX folder that does not exist or
    lacks some of the four files, a data_dir the data set takes none of), a `train_subset` above its
    training images, or a `batch_size` above that number raises one `ConfigError` naming the key. `keys`:
    the key path that set each of ``dataset``, ``data_dir``, ``train_subset`` and ``batch_size``
    (default: their names); `sizes`: a cache of the sizes by (dataset, data_dir, val_fraction,
    train_subset), for many configs of one study."""
    from samlib import data

    keys = {"dataset": "dataset", "data_dir": "data_dir", "train_subset": "train_subset", "batch_size": "batch_size",
            **(keys or {})}
    if config.data is not None:  # a loader of its own: loaded once per loader (the images are needed)
        return _check_loader(config, keys, label, {} if sizes is None else sizes)
    whole = (config.dataset, config.data_dir, 0.0, None)  # all training images, no subset, no split
    source = (config.dataset, config.data_dir, config.val_fraction, config.train_subset)
    sizes = {} if sizes is None else sizes
    if whole not in sizes:
        try:
            sizes[whole] = data.train_size(*whole)
        except data.DataError as err:
            uses_dir = config.data_dir is not None and not config.dataset.startswith("idx:")
            field = "data_dir" if uses_dir else "dataset"
            raise ConfigError(f"{label} {keys[field]!r} has value {getattr(config, field)!r}: {err}") from None
    if config.train_subset is not None and config.train_subset > sizes[whole]:
        raise invalid(keys["train_subset"], config.train_subset, f"an integer >= 1 and <= {sizes[whole]}", label,
                      why=f"{config.dataset!r} has {sizes[whole]} training images")
    if source not in sizes:
        sizes[source] = data.train_size(*source)  # the folder was readable above
    n = sizes[source]
    if config.batch_size > n:
        subset = f", train_subset {config.train_subset}" if config.train_subset is not None else ""
        raise invalid(keys["batch_size"], config.batch_size, f"an integer >= 1 and <= {n}", label,
                      why=f"{config.dataset!r} has {n} training images with val_fraction {config.val_fraction:g}{subset}")
    return n


def _check_loader(config: Config, keys: Mapping[str, str], label: str, sizes: dict) -> int:
    """`check_data` for a config whose ``data`` names a loader: its class counts, by calling it once."""
    import numpy as np

    from samlib import data

    key = ("data", config.data)
    if key not in sizes:
        try:
            sizes[key] = np.unique(data.load_reference(config.data).y_train, return_counts=True)[1]
        except data.DataError as err:
            raise ConfigError(f"{label} {keys.get('data', 'data')!r} has value {config.data!r}: {err}") from None
    counts = sizes[key]
    if config.train_subset is not None:
        if config.train_subset > int(sum(counts)):
            raise invalid(keys["train_subset"], config.train_subset, f"an integer >= 1 and <= {int(sum(counts))}",
                          label, why=f"data {config.data!r} has {int(sum(counts))} training examples")
        counts = data.subset_counts(counts, config.train_subset)
    n = int(sum(c - int(round(config.val_fraction * c)) for c in counts))
    if config.batch_size > n:
        raise invalid(keys["batch_size"], config.batch_size, f"an integer >= 1 and <= {n}", label,
                      why=f"data {config.data!r} has {n} training examples with val_fraction {config.val_fraction:g}")
    return n


class _DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping that gives one key twice (plain YAML keeps the last silently)."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(problem=f"key {key!r} is given twice")
        self.key, self.first, self.again = key, first, again


class UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that raises on a key given twice in one mapping, at any depth (a merge key
    ``<<`` may still be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], key_node.start_mark)
            except TypeError:  # unhashable: SafeLoader says so below
                continue
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file. A key given twice in one
    mapping, at any depth, is an error naming the key and its lines (plain YAML keeps the last)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except _DuplicateKey as err:
        raise ConfigError(
            f"params file {str(path)!r}: key {err.key!r} is given twice, on line {err.first.line + 1} and "
            f"line {err.again.line + 1}; allowed: each key once per mapping (YAML would keep the last silently)"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"params file {str(path)!r} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"params file {str(path)!r} must hold a mapping of keys to values")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``--set key=value``; the value is read as YAML (so 0.1 is a float, null is None)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


# ---------------------------------------------------------------------- sharpness settings
MEASURES = registry.NAMES  #: the measures of `samlib.sharpness.measure` (the registry, `samlib.measures`)


class _MilestoneMeasures(Checker):
    """None, or a mapping from milestone names (``loss=0.1``, ``epochs=10``: `samlib.milestones`) to
    lists of measure names; stored as {normalised name: tuple of measures}."""

    def __init__(self) -> None:
        super().__init__("null or a mapping of milestone names (loss=<value>, epochs=<count>) to lists of "
                         f"measures from {', '.join(MEASURES)}", (dict,))
        self.optional = True
        self.measures = list_of(choice(MEASURES), non_empty=False)

    def __call__(self, key: str, value: Any, label: str = "key") -> Any:
        from samlib.milestones import Milestone

        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise invalid(key, value, self.allowed, label, of_type=True)
        out = {}
        for name, measures in value.items():
            try:
                milestone = Milestone.parse(str(name))
            except ValueError:
                raise invalid(f"{key}.{name}", measures, self.allowed, label, why=f"{name!r} is no milestone") from None
            out[milestone.name] = self.measures(f"{key}.{name}", measures, label)
        return out


@dataclasses.dataclass(frozen=True)
class SharpnessSettings:
    """How the sharpness of a trained network is measured: the one source of these settings for
    `samlib.sharpness.measure`'s defaults, a study's ``sharpness:`` params, a study cell and
    ``python -m samlib sharpness``. Building one validates it (lists become tuples, ints floats).

    `to_dict` is the JSON form that metrics.json records as ``sharpness_settings``; a run is measured
    again exactly when that record differs from the settings asked for.
    """

    subset: int = checked(1000, integer(0))  #: training examples measured on, a seeded draw (0: all of them)
    seed: int = checked(0, integer(0))  #: the subset draw and the measures' random draws
    measures: tuple[str, ...] = checked(registry.DEFAULT_MEASURES, list_of(choice(MEASURES), non_empty=False))  #: from MEASURES
    epsilons: tuple[float, ...] = checked((1e-3,), list_of(number(0, lo_open=True)))  #: Keskar box sizes ε
    max_iter: int = checked(10, integer(1))  #: L-BFGS-B iterations of Keskar's maximisation
    iters: int = checked(100, integer(1))  #: power iterations for λ_max
    tol: float = checked(1e-3, number(0, lo_open=True))  #: relative tolerance of the power iteration
    samples: int = checked(20, integer(1))  #: Hutchinson samples for the Hessian trace
    subspace_dim: int | None = checked(None, integer(1).or_none())  #: Keskar in a random subspace of this dimension (None: full space)
    rho: float = checked(0.05, number(0))  #: radius of the SAM sharpness
    batch_size: int = checked(1000, integer(1))  #: evaluation batch of the measures
    #: cheaper sets at some milestones of a run, {milestone: measures} (e.g. {"loss=0.1": [sam]});
    #: every other snapshot, and the final weights, get `measures`
    milestones: dict[str, tuple[str, ...]] | None = checked(None, _MilestoneMeasures())

    def __post_init__(self) -> None:
        check_instance(self)

    def at_milestone(self, name: str | None) -> "SharpnessSettings":
        """The settings a snapshot at milestone `name` is measured with (None: the final weights)."""
        measures = (self.milestones or {}).get(name, self.measures) if name is not None else self.measures
        return dataclasses.replace(self, measures=measures, milestones=None)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, where: str = "sharpness") -> "SharpnessSettings":
        """The defaults updated with `values`. An unknown key, an unknown measure or a value of the wrong
        kind raises one `ConfigError` naming the key path (``<where>.<key>``), the value and what is
        allowed."""
        return cls(**check_values(dict(values or {}), SHARPNESS_CHECKS, where))

    def replace(self, **changes: Any) -> "SharpnessSettings":
        """A checked copy with some settings changed."""
        return SharpnessSettings.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-stable: lists for the tuples, floats for the real-valued settings."""
        values = dataclasses.asdict(self)
        values["measures"] = list(self.measures)
        values["epsilons"] = [float(e) for e in self.epsilons]
        values["tol"], values["rho"] = float(self.tol), float(self.rho)
        if self.milestones is None:  # absent, not null: records made before this setting stay equal
            del values["milestones"]
        else:
            values["milestones"] = {k: list(v) for k, v in self.milestones.items()}
        return values


SHARPNESS_CHECKS = checks_of(SharpnessSettings)  #: SharpnessSettings key -> its Checker
