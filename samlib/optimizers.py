"""The optimizers a run trains with: the registry of base optimizers and the registry of SAM modes, the
one place that spells each one's name, its label, the `Config` fields it reads and how it is built.

==============  ==============  ==========================================================================
name            label           built from the config (and the lr schedule, or the network)
==============  ==============  ==========================================================================
``sgd``         SGD             ``keras.optimizers.SGD(lr)``
``momentum``    SGD+momentum    ``SGD(lr, momentum=momentum)``
``adam``        Adam            ``Adam(lr)``
``adamw``       AdamW           ``AdamW(lr, weight_decay=weight_decay)`` (decoupled)
``lars``        LARS            `samlib.lars.LARS` ``(lr, momentum=momentum, weight_decay=weight_decay,
                                eta=lars_eta)`` (You et al. 2017; decay inside the update, scaled by
                                the trust ratio; λ = 1 and no decay on biases and BatchNorm)
``lamb``        LAMB            ``keras.optimizers.Lamb(lr, weight_decay=weight_decay)`` (Keras' decay
                                is decoupled, outside the trust ratio: first ``w ← w − lr·wd·w`` on
                                every variable, biases too, then ``w ← w − lr·(‖w‖/‖r‖)·r`` with
                                ``r = m̂/(√v̂ + ε)``; You et al. 2020 put ``wd·w`` into ``r`` instead)
``none``        (no SAM)        the bare network
``sam``         SAM             `samlib.sam.SAM` (``rho``, ``m``, ``sync_perturbation``)
``asam``        ASAM            SAM with ``adaptive=True`` and ``eta = asam_eta`` (Kwon et al. 2021)
``looksam``     LookSAM         `samlib.looksam.LookSAM` (``rho``, ``looksam_k``, ``looksam_alpha``)
==============  ==============  ==========================================================================

AdamW, LARS and LAMB apply ``weight_decay`` themselves (`BaseOptimizer.own_weight_decay`); the others
get it as an L2 term in the loss (`samlib.models.build_network`).

`BASE_OPTIMIZERS` and `SAM_MODES_REGISTRY` hold one small frozen entry each (as `samlib.measures` does
for the sharpness measures); `OPTIMIZERS` and `SAM_MODES` are their names, which `samlib.config.Config`
allows; `OPTIMIZER_LABELS`, `SAM_LABELS` and `method_label` ('SGD+momentum+SAM (m=32)') name a method in
figures and text. Training calls `make_optimizer` (the base optimizer on the warm-up schedule of
`warmup`, a `WarmupSchedule`) and `wrap` (the model `fit` trains).

No Keras at import: `samlib.config` reads the names here, and a config loads no TensorFlow. The
builders import Keras when called, and `WarmupSchedule`, a Keras `LearningRateSchedule`, is made on
first use (``from samlib.optimizers import WarmupSchedule`` works as for any class).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

from samlib.io import present


@dataclasses.dataclass(frozen=True)
class BaseOptimizer:
    """One base optimizer: its `name` (``Config.optimizer``), its `label`, the Config `fields` it reads
    besides the learning rate, and `build(config, lr)`, the Keras optimizer on the lr schedule `lr`;
    `own_weight_decay`: it applies ``weight_decay`` itself, so the network gets no L2 term."""

    name: str
    label: str
    fields: tuple[str, ...]
    build: Callable[[Any, Any], Any]
    own_weight_decay: bool = False


@dataclasses.dataclass(frozen=True)
class SamMode:
    """One SAM mode: its `name` (``Config.sam``), its `label` ('' for ``none``), the Config `fields` it
    reads, and `build(config, network)`, the model that `fit` trains (the network or a wrapper of it)."""

    name: str
    label: str
    fields: tuple[str, ...]
    build: Callable[[Any, Any], Any]


def _keras_optimizers():
    import keras

    return keras.optimizers


def _lars(config: Any, lr: Any) -> Any:
    from samlib.lars import LARS

    return LARS(lr, momentum=config.momentum, weight_decay=config.weight_decay, eta=config.lars_eta)


def _sam(config: Any, network: Any, adaptive: bool = False) -> Any:
    from samlib.sam import SAM

    eta = {"eta": config.asam_eta} if adaptive else {}  # T_w = |w| + eta: ASAM's only
    return SAM(network, rho=config.rho, adaptive=adaptive, m=config.m,
               sync_perturbation=config.sync_perturbation, **eta)


def _looksam(config: Any, network: Any) -> Any:
    from samlib.looksam import LookSAM

    return LookSAM(network, rho=config.rho, k=config.looksam_k, alpha=config.looksam_alpha)


BASE_OPTIMIZERS: dict[str, BaseOptimizer] = {
    b.name: b
    for b in (
        BaseOptimizer("sgd", "SGD", (), lambda config, lr: _keras_optimizers().SGD(lr)),
        BaseOptimizer("momentum", "SGD+momentum", ("momentum",),
                      lambda config, lr: _keras_optimizers().SGD(lr, momentum=config.momentum)),
        BaseOptimizer("adam", "Adam", (), lambda config, lr: _keras_optimizers().Adam(lr)),
        BaseOptimizer("adamw", "AdamW", ("weight_decay",),
                      lambda config, lr: _keras_optimizers().AdamW(lr, weight_decay=config.weight_decay),
                      own_weight_decay=True),
        BaseOptimizer("lars", "LARS", ("momentum", "weight_decay", "lars_eta"), _lars, own_weight_decay=True),
        BaseOptimizer("lamb", "LAMB", ("weight_decay",),
                      lambda config, lr: _keras_optimizers().Lamb(lr, weight_decay=config.weight_decay),
                      own_weight_decay=True),
    )
}
SAM_MODES_REGISTRY: dict[str, SamMode] = {
    s.name: s
    for s in (
        SamMode("none", "", (), lambda config, network: network),
        SamMode("sam", "SAM", ("rho", "m", "sync_perturbation"), _sam),
        SamMode("asam", "ASAM", ("rho", "asam_eta", "m", "sync_perturbation"),
                functools.partial(_sam, adaptive=True)),
        SamMode("looksam", "LookSAM", ("rho", "looksam_k", "looksam_alpha"), _looksam),
    )
}
OPTIMIZERS: tuple[str, ...] = tuple(BASE_OPTIMIZERS)  #: the names `Config.optimizer` allows
SAM_MODES: tuple[str, ...] = tuple(SAM_MODES_REGISTRY)  #: the names `Config.sam` allows
OPTIMIZER_LABELS: dict[str, str] = {b.name: b.label for b in BASE_OPTIMIZERS.values()}  #: 'sgd' -> 'SGD', …
SAM_LABELS: dict[str, str] = {s.name: s.label for s in SAM_MODES_REGISTRY.values() if s.label}  #: 'sam' -> 'SAM', …
#: the Config fields every base optimizer reads: its learning-rate schedule (`make_optimizer`)
SCHEDULE_FIELDS: tuple[str, ...] = ("lr", "lr_scaling", "batch_size", "base_batch_size", "warmup_epochs",
                                     "warmup_steps")


def method_label(optimizer: Any, sam: Any, m: Any = None) -> str:
    """The display label of a method: 'SGD', 'SGD+SAM', 'SGD+momentum+SAM (m=32)', 'Adam+ASAM', ...
    (m as configured; None = whole batch; `sam` None, NaN or ``none``: no SAM). Unknown names are shown
    as given. For figures and text only: methods are selected and ordered by their fields, never by
    this label."""
    label = OPTIMIZER_LABELS.get(optimizer, str(optimizer))
    if sam in (None, "none") or (isinstance(sam, float) and math.isnan(sam)):
        return label
    label += "+" + SAM_LABELS.get(sam, str(sam))
    if present(m):
        label += f" (m={int(m)})"
    return label


# ---------------------------------------------------------------------- what training calls
def make_optimizer(config: Any, steps_per_epoch: int) -> Any:
    """The base optimizer of `config` (a `samlib.config.Config`) on its warm-up schedule (`warmup`)."""
    return BASE_OPTIMIZERS[config.optimizer].build(config, warmup(config, steps_per_epoch))


def warmup(config: Any, steps_per_epoch: int) -> Any:
    """The lr schedule of `config` (`WarmupSchedule`). With ``warmup_steps`` set: from 0 to ``scaled_lr``
    over that many steps, counting the step being taken, so the lr of step s (0-based: the updates already
    made) is ``scaled_lr · min(1, (s + 1) / warmup_steps)`` and the first update is not wasted. Else from
    ``lr`` to ``scaled_lr`` over ``warmup_epochs`` epochs of `steps_per_epoch` steps."""
    if config.warmup_steps is not None:
        return _warmup_schedule()(0.0, config.scaled_lr, config.warmup_steps, offset=1)
    return _warmup_schedule()(config.lr, config.scaled_lr, round(config.warmup_epochs * steps_per_epoch))


def wrap(config: Any, network: Any) -> Any:
    """The model that `fit` trains: the bare network, or the SAM wrapper of ``config.sam`` around it."""
    return SAM_MODES_REGISTRY[config.sam].build(config, network)


@functools.cache
def _warmup_schedule() -> type:
    """The class `WarmupSchedule`, made once, on first use (Keras is imported here, not at import)."""
    import keras
    from keras import ops

    class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
        """Goyal et al. 2017 gradual warm-up: lr rises linearly from `start` to `target` over
        `warmup_steps` steps, then stays at `target` (= lr · k for batch-size scale factor k): at step s,
        start + (target − start)·min(1, (s + offset)/warmup_steps). `offset` 1 counts the step being
        taken (`warmup`'s ``warmup_steps`` schedule); 0 is the `warmup_epochs` schedule."""

        def __init__(self, start: float, target: float, warmup_steps: int, offset: int = 0) -> None:
            self.start, self.target, self.warmup_steps = float(start), float(target), int(warmup_steps)
            self.offset = int(offset)

        def __call__(self, step):
            if self.warmup_steps <= 0:
                return ops.convert_to_tensor(self.target, "float32")
            step = ops.cast(step, "float32")
            if self.offset:  # no op added for offset 0: that schedule's lr stays bit-for-bit as it was
                step = step + float(self.offset)
            frac = ops.minimum(step / self.warmup_steps, 1.0)
            return self.start + (self.target - self.start) * frac

        def get_config(self) -> dict:
            return {"start": self.start, "target": self.target, "warmup_steps": self.warmup_steps,
                    "offset": self.offset}

    WarmupSchedule.__module__, WarmupSchedule.__qualname__ = __name__, "WarmupSchedule"
    return WarmupSchedule


def __getattr__(name: str) -> Any:
    """`WarmupSchedule` (module docstring): made on first use, then an ordinary class of this module."""
    if name == "WarmupSchedule":
        return _warmup_schedule()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
