"""The registry of sharpness measures (`samlib.measures`) is the one place that spells a measure's result
keys, and `SharpnessSettings` the one place that holds a sharpness default."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from samlib import measures as M
from samlib.config import SharpnessSettings

SAMLIB = Path(__file__).resolve().parents[1] / "samlib"

# hand-written, independently of the registry
CONTEXT = ["subset_loss", "grad_norm", "weight_norm"]
FIXED_KEYS = {"lambda_max", "lambda_max_iterations", "hessian_trace", "hessian_trace_stderr", "sam_sharpness",
              "b_simple", "trace_sigma", "grad_norm_sq", "micro_batch"}


# ----------------------------------------------------------------------------- (a) no key literal elsewhere
def is_measure_key(text: str) -> bool:
    """A result key of `samlib.sharpness.measure` (or its ``_seconds`` timing), or a Keskar key or its
    prefix (``keskar_1e-03``, ``keskar_``). The context keys are not counted: ``grad_norm`` is also a
    SAM training-history column, ``subset_loss``/``weight_norm`` are not measures."""
    base = text[: -len("_seconds")] if text.endswith("_seconds") else text
    return base in FIXED_KEYS or re.fullmatch(r"keskar_.*", text) is not None


def docstring_nodes(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def key_literals(path: Path) -> list[str]:
    """``path:line: 'literal'`` for each measure key spelled in `path` outside a docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docs = docstring_nodes(tree)
    return [f"{path}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
            and is_measure_key(node.value)]


def test_the_key_check_sees_keys_and_skips_docstrings(tmp_path):
    source = tmp_path / "m.py"
    source.write_text('"""keskar_1e-03 in a docstring is prose."""\n'
                      'def f():\n    """lambda_max too."""\n    return {"lambda_max": 1, f"keskar_{1}": 2, "grad_norm": 3,\n'
                      '            "sam_sharpness_seconds": 4, "sharpness_lambda_max": 5, "keskar": 6}\n')
    found = [line.split(": ", 1)[1] for line in key_literals(source)]
    assert sorted(found) == sorted(["'lambda_max'", "'keskar_'", "'sam_sharpness_seconds'"])


def test_no_module_but_the_registry_spells_a_measure_key():
    """Every module names result keys through `samlib.measures`. (Until the study modules and config's
    measure tuples move onto the registry, this lists them.)"""
    offenders = [hit for path in sorted(SAMLIB.rglob("*.py")) if path != SAMLIB / "measures.py"
                 for hit in key_literals(path)]
    assert not offenders, "measure keys spelled outside samlib/measures.py:\n" + "\n".join(offenders)


# ----------------------------------------------------------------------------- (b) defaults only from the settings
def numeric(value) -> bool:
    if isinstance(value, (tuple, list)):
        return len(value) > 0 and all(numeric(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def settings_value(name: str):
    """The `SharpnessSettings()` value a parameter of this name stands for (``epsilon``: the first ε)."""
    defaults = SharpnessSettings()
    if name == "epsilon":
        return defaults.epsilons[0]
    return getattr(defaults, name) if name in {f.name for f in dataclasses.fields(SharpnessSettings)} else None


def signatures():
    from samlib import sharpness as S
    from samlib import sharpness_bench

    # the public functions `samlib.sharpness` offers, its own and those it re-exports from its parts
    parts = {S.__name__, "samlib.interpolation", "samlib.objective", "samlib.noise"}
    functions = {f"sharpness.{name}": obj for name, obj in vars(S).items()
                 if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ in parts}
    functions["sharpness.SharpnessCallback"] = S.SharpnessCallback.__init__
    functions["sharpness_bench.run"] = sharpness_bench.run
    return functions


def test_no_sharpness_default_differs_from_the_settings():
    functions = signatures()
    assert {"sharpness.keskar_sharpness", "sharpness.hessian_top_eigenvalue", "sharpness.hessian_trace",
            "sharpness.sam_sharpness", "sharpness.measure_keys", "sharpness.interpolate",
            "sharpness.gradient_noise_scale"} <= set(functions)
    checked, wrong = 0, []
    for where, function in functions.items():
        for param in inspect.signature(function).parameters.values():
            expected = settings_value(param.name)
            if param.default is inspect.Parameter.empty or expected is None or not numeric(param.default):
                continue  # not a setting, or None (= "the settings' value")
            checked += 1
            if (tuple(param.default) if isinstance(param.default, list) else param.default) != expected:
                wrong.append(f"{where}({param.name}={param.default!r}): SharpnessSettings has {expected!r}")
    assert not wrong, "\n".join(wrong)
    assert checked >= 15  # the check looked at the defaults that matter


def test_every_registered_measure_has_a_compute_function():
    from samlib import sharpness as S

    assert set(S._COMPUTE) == set(M.NAMES) and S.MEASURES == M.NAMES


# ----------------------------------------------------------------------------- (c) the registry
def settings(**changes) -> SharpnessSettings:
    return dataclasses.replace(SharpnessSettings(), **changes)


def test_names_defaults_aliases():
    assert M.NAMES == ("keskar", "lambda_max", "trace", "sam", "noise_scale")
    assert M.DEFAULT_MEASURES == ("keskar", "lambda_max", "sam")
    assert M.CONTEXT == tuple(CONTEXT)
    assert M.normalise(["lambda", "hessian_trace", "sam_sharpness", "keskar", "b_simple"]) == [
        "lambda_max", "trace", "sam", "keskar", "noise_scale"]
    assert M.normalise("sam") == ["sam"]
    with pytest.raises(ValueError, match="unknown sharpness measure 'sharpest'; allowed: keskar, lambda_max, trace, sam, noise_scale"):
        M.normalise(["sam", "sharpest"])


def test_result_keys_and_value_keys():
    assert M.result_keys(SharpnessSettings()) == CONTEXT + [
        "keskar_1e-03", "lambda_max", "lambda_max_iterations", "sam_sharpness"]
    every = settings(measures=M.NAMES, epsilons=(1e-3, 5e-4))
    assert M.result_keys(every) == CONTEXT + [
        "keskar_1e-03", "keskar_5e-04", "lambda_max", "lambda_max_iterations", "hessian_trace",
        "hessian_trace_stderr", "sam_sharpness", "b_simple", "trace_sigma", "grad_norm_sq", "micro_batch"]
    assert M.value_keys(every) == ["keskar_1e-03", "keskar_5e-04", "lambda_max", "hessian_trace", "sam_sharpness",
                                   "b_simple"]
    assert M.result_keys(every, ["keskar"]) == CONTEXT + ["keskar_1e-03", "keskar_5e-04"]
    assert M.value_keys(settings(subspace_dim=50), ["keskar", "trace"]) == ["keskar_1e-03_p50", "hessian_trace"]
    assert {k for m in M.REGISTRY.values() if m.name != M.KESKAR for k in m.keys(None) + list(m.extras)} == FIXED_KEYS


def test_label():
    assert [M.label(k) for k in ("keskar_1e-03", "keskar_5e-04_p100", "lambda_max", "hessian_trace", "sam_sharpness")] == [
        "Keskar ε=0.001", "Keskar ε=0.0005 (p=100)", "Hessian λ_max", "Hessian trace", "SAM sharpness f(w+ε̂)−f(w)"]
    # not value keys: the key itself
    assert [M.label(k) for k in ("lambda_max_iterations", "test_loss", "sam_sharpness_seconds")] == [
        "lambda_max_iterations", "test_loss", "sam_sharpness_seconds"]


def test_order_is_measure_order_keskar_by_decreasing_epsilon_then_others_by_name():
    keys = ["test_loss", "sam_sharpness", "keskar_5e-04", "hessian_trace", "lambda_max", "keskar_1e-03", "accuracy",
            "keskar_1e-02_p100"]
    assert M.order(keys) == ["keskar_1e-02_p100", "keskar_1e-03", "keskar_5e-04", "lambda_max", "hessian_trace",
                             "sam_sharpness", "accuracy", "test_loss"]


def test_measure_of_is_measure_headline_key():
    assert M.measure_of("keskar_1e-03_p5").name == "keskar" and M.measure_of("hessian_trace").name == "trace"
    assert M.measure_of("lambda_max_iterations") is None and not M.is_measure("grad_norm")
    assert M.headline_key(["sam_sharpness", "keskar_1e-03", "lambda_max", "test_loss"]) == "lambda_max"
    assert M.headline_key(["sam_sharpness", "keskar_1e-03", "test_loss"]) == "keskar_1e-03"
    assert M.headline_key(["test_loss"]) is None


def test_measure_returns_the_registry_result_keys_and_their_timings():
    import keras
    import numpy as np

    from samlib import sharpness as S

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((24, 3)).astype("float32"), rng.standard_normal((24, 1)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    every = settings(measures=M.NAMES, epsilons=(1e-3, 5e-4), iters=3, samples=2, max_iter=2)
    out = S.measure(model, keras.losses.MeanSquaredError(), x, y, settings=every)
    assert list(out) == [k for k in out if k in M.result_keys(every) or k.endswith("_seconds")]
    assert set(out) == set(M.result_keys(every)) | {f"{k}_seconds" for k in M.value_keys(every)}
    assert S.measure_keys(M.NAMES, (1e-3, 5e-4)) == CONTEXT + M.value_keys(every)
