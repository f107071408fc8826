"""One frozen, validated run configuration.

A `Config` is built from a dict (or a YAML file) with `Config.from_dict`; every key is checked and a
bad one raises a single `ConfigError` that names the key, the value and what is allowed.

Learning-rate scaling (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): the effective learning rate
is ``lr * k`` with ``k = B / B0`` (``linear``), ``sqrt(B / B0)`` (``sqrt``) or ``1`` (``none``), where
``B`` is `batch_size` and ``B0`` is `base_batch_size`; it is reached by a linear warm-up over
`warmup_epochs` epochs.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
LR_SCALINGS = ("none", "linear", "sqrt")
SAM_MODES = ("none", "sam", "asam", "looksam")
STRATEGIES = ("auto", "none", "mirrored")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one training run depends on. Field docs give the allowed values."""

    dataset: str = "mnist5k"  #: mnist5k | mnist | fashion_mnist | cifar10 | idx:<folder>
    data_dir: str | None = None  #: folder with the four IDX .gz files (overrides the download)
    batch_size: int = 128
    epochs: int = 5  #: upper bound on epochs (see `steps`, `target_loss`)
    steps: int | None = None  #: step budget: stop after exactly this many optimizer steps
    target_loss: float | None = None  #: stop once the inference-mode train loss is <= this (see train)
    check_every: int | None = None  #: steps between loss-target checks near the target (None: 1/4 epoch)
    optimizer: str = "sgd"  #: sgd | momentum | adam | adamw
    lr: float = 0.01  #: learning rate at `base_batch_size` (before scaling)
    momentum: float = 0.9  #: used by `momentum` only
    weight_decay: float = 0.0  #: decoupled for adamw, L2 on the kernels otherwise
    lr_scaling: str = "none"  #: none | linear | sqrt
    base_batch_size: int = 128
    warmup_epochs: float = 0.0
    sam: str = "none"  #: none | sam | asam | looksam
    rho: float = 0.05
    asam_eta: float = 0.01  #: ASAM: T_w = |w| + eta (Kwon et al. 2021)
    m: int | None = None  #: micro-batch size for m-sharpness (None: the whole batch)
    sync_perturbation: bool = False  #: data-parallel: all-reduce the ascent gradient
    looksam_k: int = 5  #: LookSAM: a full SAM step every k steps
    looksam_alpha: float = 0.7  #: LookSAM: weight of the reused sharpness direction
    seed: int = 0
    val_fraction: float = 0.125  #: share of the training images held out for validation (0: none)
    dropout: float = 0.5
    strategy: str = "auto"  #: auto | none | mirrored
    precision: str = "float32"  #: float32 | mixed_float16 | mixed_bfloat16
    jit_compile: bool | None = None  #: None: on for GPUs, off on CPU (XLA is 4-8x slower there)
    eval_batch_size: int = 1000
    steps_per_execution: int = 1  #: optimizer steps per compiled call (Keras); callbacks see every k-th
    verbose: int = 1  #: Keras progress output: 0 silent, 1 bar, 2 one line per epoch
    run_dir: str | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> "Config":
        """Build and validate a config; unknown keys are an error."""
        merged = dict(values or {})
        merged.update(overrides)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ConfigError(
                f"unknown config key {unknown[0]!r} (value {merged[unknown[0]]!r}); "
                f"allowed keys: {', '.join(sorted(known))}"
            )
        coerced = {k: _coerce(k, v) for k, v in merged.items()}
        config = cls(**coerced)
        config.validate()
        return config

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "Config":
        return cls.from_dict(load_yaml_mapping(path), **overrides)

    def replace(self, **changes: Any) -> "Config":
        """A validated copy with some fields changed."""
        return Config.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_scaling", self.lr_scaling, LR_SCALINGS)
        _choice("sam", self.sam, SAM_MODES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)
        if not re.fullmatch(r"mnist5k|mnist|fashion_mnist|cifar10|idx:.+", self.dataset):
            raise ConfigError(
                f"config key 'dataset' has value {self.dataset!r}; allowed: mnist5k, mnist, "
                "fashion_mnist, cifar10 or idx:<folder with the four IDX .gz files>"
            )
        _range("batch_size", self.batch_size, lo=1)
        _range("epochs", self.epochs, lo=1)
        _range("steps", self.steps, lo=1)
        _range("target_loss", self.target_loss, lo=0.0)
        _range("lr", self.lr, lo=0.0, lo_open=True)
        _range("momentum", self.momentum, lo=0.0, hi=1.0, hi_open=True)
        _range("weight_decay", self.weight_decay, lo=0.0)
        _range("base_batch_size", self.base_batch_size, lo=1)
        _range("warmup_epochs", self.warmup_epochs, lo=0.0)
        _range("rho", self.rho, lo=0.0)
        _range("asam_eta", self.asam_eta, lo=0.0)
        _range("check_every", self.check_every, lo=1)
        _range("val_fraction", self.val_fraction, lo=0.0, hi=1.0, hi_open=True)
        _range("steps_per_execution", self.steps_per_execution, lo=1)
        _range("m", self.m, lo=1)
        _range("looksam_k", self.looksam_k, lo=1)
        _range("looksam_alpha", self.looksam_alpha, lo=0.0)
        _range("dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        _range("eval_batch_size", self.eval_batch_size, lo=1)
        _range("verbose", self.verbose, lo=0, hi=2)
        if self.seed < 0:
            raise ConfigError(f"config key 'seed' has value {self.seed!r}; allowed: an integer >= 0")

    # ------------------------------------------------------------------ derived values
    @property
    def lr_scale(self) -> float:
        """The factor k by which `lr` is multiplied at this batch size (Goyal et al.)."""
        ratio = self.batch_size / self.base_batch_size
        return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[self.lr_scaling]

    @property
    def scaled_lr(self) -> float:
        return self.lr * self.lr_scale

    def run_name(self) -> str:
        """A folder name made from the parameters that distinguish runs in a study."""
        parts = [self.optimizer, f"bs{self.batch_size}", f"lr{self.scaled_lr:g}"]
        if self.sam != "none":
            parts += [self.sam, f"rho{self.rho:g}"] + ([f"m{self.m}"] if self.m else [])
        return "-".join(parts + [f"seed{self.seed}"])


# ---------------------------------------------------------------------- helpers
_TYPES: dict[str, type] = {
    f.name: f.type for f in dataclasses.fields(Config)  # type: ignore[misc]
}


def _coerce(key: str, value: Any) -> Any:
    """Check one value's type against the field's annotation; allow int -> float."""
    spec = str(_TYPES[key])
    optional = "None" in spec
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key {key!r} has value None; allowed: {spec.replace(' | None', '')}")
    base = spec.split(" | ")[0]
    ok: bool
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif base == "str":
        ok = isinstance(value, str)
    else:  # pragma: no cover - every field has one of the types above
        ok = True
    if not ok:
        raise ConfigError(
            f"config key {key!r} has value {value!r} of type {type(value).__name__}; allowed: {spec}"
        )
    return value


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config key {key!r} has value {value!r}; allowed: {', '.join(allowed)}")


def _range(key, value, lo=None, hi=None, lo_open=False, hi_open=False) -> None:
    if value is None:
        return
    bad = (lo is not None and (value < lo or (lo_open and value == lo))) or (
        hi is not None and (value > hi or (hi_open and value == hi))
    )
    if bad or (isinstance(value, float) and not math.isfinite(value)):
        left = "" if lo is None else ("> " if lo_open else ">= ") + str(lo)
        right = "" if hi is None else ("< " if hi_open else "<= ") + str(hi)
        raise ConfigError(
            f"config key {key!r} has value {value!r}; allowed: a number {' and '.join(filter(None, [left, right]))}"
        )


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
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
MEASURES = ("keskar", "lambda_max", "trace", "sam")  #: the measures of `samlib.sharpness.measure`


@dataclasses.dataclass(frozen=True)
class SharpnessSettings:
    """How the sharpness of a trained network is measured: the one source of these settings for
    `samlib.sharpness.measure`'s defaults, a study's ``sharpness:`` params, a study cell and
    ``python -m samlib sharpness``.

    `to_dict` is the JSON form that metrics.json records as ``sharpness_settings``; a run is measured
    again exactly when that record differs from the settings asked for.
    """

    subset: int = 1000  #: training examples measured on, a seeded draw (0: all of them)
    seed: int = 0  #: the subset draw and the measures' random draws
    measures: tuple[str, ...] = ("keskar", "lambda_max", "sam")  #: from MEASURES
    epsilons: tuple[float, ...] = (1e-3,)  #: Keskar box sizes ε
    max_iter: int = 10  #: L-BFGS-B iterations of Keskar's maximisation
    iters: int = 100  #: power iterations for λ_max
    tol: float = 1e-3  #: relative tolerance of the power iteration
    samples: int = 20  #: Hutchinson samples for the Hessian trace
    subspace_dim: int | None = None  #: Keskar in a random subspace of this dimension (None: full space)
    rho: float = 0.05  #: radius of the SAM sharpness
    batch_size: int = 1000  #: evaluation batch of the measures

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, where: str = "sharpness") -> "SharpnessSettings":
        """The defaults updated with `values`. An unknown key, an unknown measure or a value of the wrong
        kind raises one `ConfigError` naming the key path (``<where>.<key>``), the value and what is
        allowed."""
        values = dict(values or {})
        known = [f.name for f in dataclasses.fields(cls)]
        for key, value in values.items():
            if key not in known:
                raise ConfigError(
                    f"unknown key {_path(where, key)!r} (value {value!r}); allowed keys"
                    + (f" under {where!r}" if where else "") + f": {', '.join(known)}"
                )
        return cls(**{key: _SHARPNESS_KINDS[key](_path(where, key), value) for key, value in values.items()})

    def replace(self, **changes: Any) -> "SharpnessSettings":
        """A checked copy with some settings changed."""
        return SharpnessSettings.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-stable: lists for the tuples, floats for the real-valued settings."""
        values = dataclasses.asdict(self)
        values["measures"] = list(self.measures)
        values["epsilons"] = [float(e) for e in self.epsilons]
        values["tol"], values["rho"] = float(self.tol), float(self.rho)
        return values


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _yaml_hint(value: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
            return " (YAML reads numbers like 1e-3 as strings: write 1.0e-3)"
        except ValueError:
            pass
    return ""


def _int_setting(lo: int, optional: bool = False):
    def check(key: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            allowed = f"an integer >= {lo}" + (" or null" if optional else "")
            raise ConfigError(f"key {key!r} has value {value!r}; allowed: {allowed}{_yaml_hint(value)}")
        return value

    return check


def _number(key: str, value: Any, lo: float, lo_open: bool, allowed: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < lo or (lo_open and value == lo):
        raise ConfigError(f"key {key!r} has value {value!r}; allowed: {allowed}{_yaml_hint(value)}")
    return float(value)


def _float_setting(lo: float, lo_open: bool):
    allowed = f"a number {'>' if lo_open else '>='} {lo:g}"
    return lambda key, value: _number(key, value, lo, lo_open, allowed)


def _measures(key: str, value: Any) -> tuple[str, ...]:
    allowed = f"a list of {', '.join(MEASURES)}"
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"key {key!r} has value {value!r}; allowed: {allowed}")
    for name in value:
        if name not in MEASURES:
            raise ConfigError(f"key {key!r} has value {value!r}; allowed: {allowed} ({name!r} is not)")
    return tuple(value)


def _epsilons(key: str, value: Any) -> tuple[float, ...]:
    allowed = "a non-empty list of numbers > 0"
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"key {key!r} has value {value!r}; allowed: {allowed}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"key {key!r} has value {value!r}; allowed: {allowed} ({v!r} is not){_yaml_hint(v)}")
    return tuple(float(v) for v in value)


_SHARPNESS_KINDS = {
    "subset": _int_setting(0),
    "seed": _int_setting(0),
    "measures": _measures,
    "epsilons": _epsilons,
    "max_iter": _int_setting(1),
    "iters": _int_setting(1),
    "tol": _float_setting(0.0, lo_open=True),
    "samples": _int_setting(1),
    "subspace_dim": _int_setting(1, optional=True),
    "rho": _float_setting(0.0, lo_open=False),
    "batch_size": _int_setting(1),
}
