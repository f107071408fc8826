"""The few places where the Keras backend shows through: the gradient call, the train step's state,
and `tf.distribute`'s replicas. Everything else in samlib is written with `keras.ops`.

- TensorFlow: `tf.GradientTape` and variables assigned in place, as Keras' TF trainer does; the
  data-parallel path (`tf.distribute`, m-sharpness per replica) is TensorFlow's only.
- JAX: `jax.value_and_grad` over a pure function, and a train step that maps every variable to its
  value in the step's state (`keras.StatelessScope`) and returns the new state, as Keras' JAX trainer
  does (its `stateless_call` / `optimizer.stateless_apply` pattern). One device: no replicas.

TensorFlow and JAX are imported only when the current backend is theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras.src.backend.common.stateless_scope import get_stateless_scope


def name() -> str:
    """The Keras backend of this process (`KERAS_BACKEND`, read when Keras was imported)."""
    return keras.backend.backend()


def is_tensorflow() -> bool:
    return name() == "tensorflow"


def check_supported() -> None:
    """Raise a clear error on a backend samlib's training code is not written for."""
    if name() not in ("tensorflow", "jax"):
        raise NotImplementedError(f"samlib supports the tensorflow and jax Keras backends, not {name()!r}")


def snapshot(variable: keras.Variable) -> Any:
    """The variable's current value as a tensor that later assignments do not change."""
    if is_tensorflow():
        import tensorflow as tf

        return tf.identity(variable.value)
    return variable.value


def scope(mapping: Sequence[tuple[keras.Variable, Any]], collect_losses: bool = False) -> keras.StatelessScope:
    """A `keras.StatelessScope` for `mapping` that also sees the values of the scope it opens in (a JAX
    train step's state): a variable not in `mapping` reads its value in the step, not its stale one."""
    outer = get_stateless_scope()
    inner = keras.StatelessScope(state_mapping=mapping, collect_losses=collect_losses)
    if outer is not None:
        inner.state_mapping = {**outer.state_mapping, **inner.state_mapping}
    return inner


def value_and_grad(function: Callable, weights: list) -> tuple[Any, Any, list]:
    """(value, aux, d value / d weights) of ``value, aux = function(weights)``."""
    if is_tensorflow():
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(weights)
            value, aux = function(weights)
        return value, aux, tape.gradient(value, weights)
    import jax

    (value, aux), grads = jax.value_and_grad(function, has_aux=True)(weights)
    return value, aux, grads


def replicas_in_sync() -> int:
    """How many replicas share a step: the current `tf.distribute` strategy's count; 1 off TensorFlow."""
    if not is_tensorflow():
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def replica_context() -> Any:
    """The `tf.distribute` replica context (None on other backends or in cross-replica context)."""
    if not is_tensorflow():
        return None
    import tensorflow as tf

    return tf.distribute.get_replica_context()


def apply_gradients(optimizer: keras.optimizers.Optimizer, grads: list, variables: list) -> None:
    """``optimizer.apply(grads, variables)``; on JAX through `stateless_apply` (a loss-scale optimizer's
    `apply` assigns inside a `jax.lax.cond`, which a traced train step cannot), its results assigned to
    the step's scope."""
    if is_tensorflow():
        optimizer.apply(grads, variables)
        return
    new_values, new_slots = optimizer.stateless_apply(
        [v.value for v in optimizer.variables], grads, [v.value for v in variables]
    )
    for variable, value in zip([*variables, *optimizer.variables], [*new_values, *new_slots]):
        variable.assign(value)


def stateful_step(model: keras.Model, state: tuple, step: Callable[[], Any]) -> tuple[Any, tuple]:
    """Run ``step()`` (written as if variables were assigned in place) on a JAX train step's `state`
    (trainable, non-trainable, optimizer, metrics variables' values); (its logs, the new state)."""
    groups = (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables,
              model.metrics_variables)
    mapping = [(v, value) for variables, values in zip(groups, state) for v, value in zip(variables, values)]
    with keras.StatelessScope(state_mapping=mapping) as step_scope:
        logs = step()
    new_state = tuple(
        [_current(step_scope, v) for v in variables] for variables in groups
    )
    return logs, new_state


def _current(step_scope: keras.StatelessScope, variable: keras.Variable) -> Any:
    value = step_scope.get_current_value(variable)
    return variable.value if value is None else value


def compile(function: Callable, **tf_options: Any) -> Callable:  # noqa: A001  (the backend's compile)
    """A compiled graph function: `tf.function` without XLA (XLA is several times slower on CPU; the
    `tf_options` are `tf.function`'s), or `jax.jit` (which traces once per argument shape)."""
    if is_tensorflow():
        import tensorflow as tf

        return tf.function(function, jit_compile=False, **tf_options)
    import jax

    return jax.jit(function)


def hvp(function: Callable, w: Any, v: Any) -> Any:
    """H v, H the Hessian of the scalar ``function(w)`` at the flat vector `w`: forward-over-reverse (the
    JVP of the gradient along v, ~2 gradient costs)."""
    if is_tensorflow():
        import tensorflow as tf

        with tf.autodiff.ForwardAccumulator(w, v) as acc:
            with tf.GradientTape() as tape:
                tape.watch(w)
                value = function(w)
            grad = tape.gradient(value, w)
        return acc.jvp(grad)
    import jax

    return jax.jvp(jax.grad(function), (w,), (v,))[1]


def wide_float() -> str:
    """The widest float the backend computes in: float64, except on JAX without ``jax_enable_x64``
    (float32; callers then accumulate in Python floats or numpy float64)."""
    if is_tensorflow():
        return "float64"
    import jax

    return "float64" if jax.config.jax_enable_x64 else "float32"


def sum64(a: Any, b: Any = None) -> float:
    """Σ a (Σ a·b with `b`) in float64, as a Python float: TensorFlow's ops on TensorFlow, numpy's on
    the others (JAX computes float64 only with ``jax_enable_x64``)."""
    if is_tensorflow():
        import tensorflow as tf

        a = tf.cast(a, tf.float64)
        return float(tf.reduce_sum(a if b is None else a * tf.cast(b, tf.float64)))
    a = np.asarray(a, np.float64)
    return float(np.sum(a if b is None else a * np.asarray(b, np.float64)))


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and the backend's random generators (`keras.utils.set_random_seed`); on
    TensorFlow also make its ops deterministic (JAX's are on CPU). Off TensorFlow, the steps of
    `keras.utils.set_random_seed` less its seeding of TensorFlow, which would import it when installed."""
    if is_tensorflow():
        import tensorflow as tf

        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        return
    import random

    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def add_n(tensors: list) -> Any:
    """The sum of same-shaped tensors: `tf.add_n` on TensorFlow (its summation order), else left to right."""
    if is_tensorflow():
        import tensorflow as tf

        return tf.add_n(tensors)
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total
