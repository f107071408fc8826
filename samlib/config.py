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
    target_loss: float | None = None  #: stop once the smoothed per-step train loss is <= this
    optimizer: str = "sgd"  #: sgd | momentum | adam | adamw
    lr: float = 0.01  #: learning rate at `base_batch_size` (before scaling)
    momentum: float = 0.9  #: used by `momentum` only
    weight_decay: float = 0.0  #: decoupled for adamw, L2 on the kernels otherwise
    lr_scaling: str = "none"  #: none | linear | sqrt
    base_batch_size: int = 128
    warmup_epochs: float = 0.0
    sam: str = "none"  #: none | sam | asam | looksam
    rho: float = 0.05
    m: int | None = None  #: micro-batch size for m-sharpness (None: the whole batch)
    sync_perturbation: bool = False  #: data-parallel: all-reduce the ascent gradient
    looksam_k: int = 5  #: LookSAM: a full SAM step every k steps
    looksam_alpha: float = 0.7  #: LookSAM: weight of the reused sharpness direction
    seed: int = 0
    dropout: float = 0.5
    strategy: str = "auto"  #: auto | none | mirrored
    precision: str = "float32"  #: float32 | mixed_float16 | mixed_bfloat16
    jit_compile: bool | None = None  #: None: on for GPUs, off on CPU (XLA is 4-8x slower there)
    eval_batch_size: int = 1000
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
