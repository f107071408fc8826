"""The registry of sharpness measures: the one place that spells a measure's name, its result keys,
its label and its order.

No TensorFlow here (the study runner and findings read it cheaply); `samlib.sharpness` binds each name
to the function that computes it, and `samlib.config.SharpnessSettings` holds every numeric default.

===============  =========================================  ==========================================
name             result keys (``measure`` returns)          what it is
===============  =========================================  ==========================================
``keskar``       ``keskar_1e-03`` … one per ε               Keskar et al. 2017, metric (3)
                 (``keskar_1e-03_p100`` in a subspace)
``lambda_max``   ``lambda_max``, ``lambda_max_iterations``  top Hessian eigenvalue (power iteration)
``trace``        ``hessian_trace``, ``hessian_trace_stderr`` Hutchinson's trace estimate
``sam``          ``sam_sharpness``                          f(w + ρ g/‖g‖) − f(w) (Foret et al. eq. 2)
``noise_scale``  ``b_simple``, ``trace_sigma``,             gradient noise scale B_simple = tr(Σ)/|G|²
                 ``grad_norm_sq``, ``micro_batch``          (McCandlish et al. 2018, `samlib.noise`)
===============  =========================================  ==========================================

``noise_scale`` is not among the defaults (`DEFAULT_MEASURES`): a study asks for it by name.

Always also: ``subset_loss`` f(w), ``grad_norm`` ‖∇f(w)‖₂ and ``weight_norm`` ‖w‖₂ (`CONTEXT`), and
``<key>_seconds`` for each value key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

KESKAR, LAMBDA_MAX, TRACE, SAM, NOISE = "keskar", "lambda_max", "trace", "sam", "noise_scale"


@dataclasses.dataclass(frozen=True)
class Measure:
    """One measure: its `name` (as params and the CLI spell it), its headline value key(s) given the
    settings, any extra keys it reports, its label and its place in tables and figures."""

    name: str
    label: str
    order: int
    keys: Callable[[Any], list[str]]  #: settings -> the value keys (one per ε for Keskar)
    extras: tuple[str, ...] = ()  #: diagnostics reported beside the value (iterations, stderr)
    aliases: tuple[str, ...] = ()


def keskar_key(epsilon: float, subspace_dim: int | None = None) -> str:
    """``keskar_1e-03`` (ε = 1e-3), ``keskar_1e-03_p100`` (in a random subspace of dimension 100)."""
    return f"keskar_{float(epsilon):.0e}" + (f"_p{subspace_dim}" if subspace_dim else "")


_KESKAR_RE = re.compile(r"keskar_([0-9.e+-]+)(?:_p(\d+))?")

REGISTRY: dict[str, Measure] = {
    m.name: m
    for m in (
        Measure(KESKAR, "Keskar sharpness", 0,  # label(key) adds ε
                lambda s: [keskar_key(e, s.subspace_dim) for e in s.epsilons]),
        Measure(LAMBDA_MAX, "Hessian λ_max", 1, lambda s: ["lambda_max"],
                extras=("lambda_max_iterations",), aliases=("lambda",)),
        Measure(TRACE, "Hessian trace", 2, lambda s: ["hessian_trace"],
                extras=("hessian_trace_stderr",), aliases=("hessian_trace",)),
        Measure(SAM, "SAM sharpness f(w+ε̂)−f(w)", 3, lambda s: ["sam_sharpness"],
                aliases=("sam_sharpness",)),
        Measure(NOISE, "gradient noise scale B_simple", 4, lambda s: ["b_simple"],
                extras=("trace_sigma", "grad_norm_sq", "micro_batch"), aliases=("b_simple",)),
    )
}
NAMES: tuple[str, ...] = tuple(REGISTRY)  #: every measure `samlib.sharpness.measure` knows
DEFAULT_MEASURES: tuple[str, ...] = (KESKAR, LAMBDA_MAX, SAM)  #: SharpnessSettings().measures
CONTEXT: tuple[str, ...] = ("subset_loss", "grad_norm", "weight_norm")  #: where the measures were taken
_ALIASES = {alias: m.name for m in REGISTRY.values() for alias in m.aliases}


def normalise(measures: Iterable[str] | str) -> list[str]:
    """Measure names, aliases resolved; an unknown name raises ValueError naming what is allowed."""
    names = [measures] if isinstance(measures, str) else list(measures)
    out = []
    for name in names:
        name = _ALIASES.get(name, name)
        if name not in REGISTRY:
            raise ValueError(f"unknown sharpness measure {name!r}; allowed: {', '.join(NAMES)}")
        out.append(name)
    return out


def value_keys(settings: Any, measures: Iterable[str] | None = None) -> list[str]:
    """The headline value keys of `measures` (default: ``settings.measures``) under `settings`."""
    names = normalise(settings.measures if measures is None else measures)
    return [key for name in names for key in REGISTRY[name].keys(settings)]


def result_keys(settings: Any, measures: Iterable[str] | None = None) -> list[str]:
    """Every key `samlib.sharpness.measure` returns for these settings, without the ``_seconds`` timings."""
    names = normalise(settings.measures if measures is None else measures)
    keys = list(CONTEXT)
    for name in names:
        keys += REGISTRY[name].keys(settings) + list(REGISTRY[name].extras)
    return keys


def measure_of(key: str) -> Measure | None:
    """The measure whose headline value `key` is (None for any other column)."""
    if _KESKAR_RE.fullmatch(key):
        return REGISTRY[KESKAR]
    for m in REGISTRY.values():
        if m.name != KESKAR and key in m.keys(None):
            return m
    return None


def is_measure(key: str) -> bool:
    """Whether a results column holds a sharpness value (not a diagnostic, timing or context)."""
    return measure_of(key) is not None


def label(key: str) -> str:
    """A reader's name for a value key: ``Keskar ε=0.001``, ``Keskar ε=0.001 (p=100)``, ``Hessian λ_max``, …"""
    m = measure_of(key)
    if m is None:
        return key
    if m.name == KESKAR:
        eps, dim = _KESKAR_RE.fullmatch(key).groups()
        return f"Keskar ε={float(eps):g}" + (f" (p={dim})" if dim else "")
    return m.label


def order(keys: Iterable[str]) -> list[str]:
    """Measure keys in the registry's order (Keskar by decreasing ε first), others last by name."""

    def rank(key: str) -> tuple:
        m = measure_of(key)
        if m is None:
            return (len(REGISTRY), 0.0, key)
        eps = -float(_KESKAR_RE.fullmatch(key).group(1)) if m.name == KESKAR else 0.0
        return (m.order, eps, key)

    return sorted(keys, key=rank)


def headline_key(keys: Sequence[str]) -> str | None:
    """The measure a one-line summary quotes: λ_max when present, else the first in `order`."""
    keys = order(k for k in keys if is_measure(k))
    return "lambda_max" if "lambda_max" in keys else (keys[0] if keys else None)
