"""The optimizer registries (`samlib.optimizers`): each name builds the Keras optimizer or SAM wrapper
it says, from the Config fields it lists; the labels; the warm-up schedule's lr at given steps."""

from __future__ import annotations

import math

import keras
import pytest

from samlib import config as C
from samlib import optimizers as O
from samlib.config import Config
from samlib.lars import LARS
from samlib.looksam import LookSAM
from samlib.optimizers import WarmupSchedule, make_optimizer, method_label, wrap
from samlib.sam import SAM


def network() -> keras.Model:
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def test_config_allows_exactly_the_registered_names():
    assert C.OPTIMIZERS == O.OPTIMIZERS == ("sgd", "momentum", "adam", "adamw", "lars", "lamb")
    assert C.SAM_MODES == O.SAM_MODES == ("none", "sam", "asam", "looksam")
    assert O.OPTIMIZER_LABELS == {"sgd": "SGD", "momentum": "SGD+momentum", "adam": "Adam", "adamw": "AdamW",
                                  "lars": "LARS", "lamb": "LAMB"}
    assert O.SAM_LABELS == {"sam": "SAM", "asam": "ASAM", "looksam": "LookSAM"}


@pytest.mark.parametrize("name, cls, momentum, weight_decay", [
    ("sgd", keras.optimizers.SGD, 0.0, None),
    ("momentum", keras.optimizers.SGD, 0.8, None),
    ("adam", keras.optimizers.Adam, None, None),
    ("adamw", keras.optimizers.AdamW, None, 0.02),
    ("lars", LARS, 0.8, 0.02),
    ("lamb", keras.optimizers.Lamb, None, 0.02),
])
def test_each_base_optimizer_is_the_keras_class_with_the_configs_values(name, cls, momentum, weight_decay):
    config = Config(optimizer=name, lr=0.03, momentum=0.8, weight_decay=0.02)
    optimizer = make_optimizer(config, steps_per_epoch=10)
    assert type(optimizer) is cls
    assert float(optimizer.learning_rate) == pytest.approx(0.03)  # no warm-up: lr from the first step
    assert isinstance(optimizer._learning_rate, WarmupSchedule)
    if momentum is not None:
        assert optimizer.momentum == pytest.approx(momentum)
    assert optimizer.weight_decay == (pytest.approx(weight_decay) if weight_decay is not None else None)


def test_each_sam_mode_wraps_the_network_as_configured():
    net = network()
    base = dict(rho=0.2, m=4, asam_eta=0.03, looksam_k=3, looksam_alpha=0.5)
    assert wrap(Config(sam="none", **base), net) is net
    sam = wrap(Config(sam="sam", sync_perturbation=True, **base), net)
    assert type(sam) is SAM and sam.model is net and not sam.adaptive
    assert (sam.rho, sam.m, sam.sync_perturbation) == (0.2, 4, True)
    asam = wrap(Config(sam="asam", **base), net)
    assert type(asam) is SAM and asam.adaptive and asam.eta == 0.03 and asam.m == 4
    look = wrap(Config(sam="looksam", **{**base, "m": None}), net)
    assert type(look) is LookSAM and (look.rho, look.k, look.alpha) == (0.2, 3, 0.5)


class Reading:
    """A Config that records the fields read from it."""

    def __init__(self, config: Config) -> None:
        self.config, self.read = config, set()

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self.config, name)


def test_each_entry_reads_only_the_fields_it_lists():
    for entry in O.BASE_OPTIMIZERS.values():
        config = Reading(Config(optimizer=entry.name))
        entry.build(config, 0.1)
        assert config.read <= set(entry.fields), (entry.name, config.read)
    for entry in O.SAM_MODES_REGISTRY.values():
        config = Reading(Config(sam=entry.name))
        entry.build(config, network())
        assert config.read <= set(entry.fields), (entry.name, config.read)
    assert set(O.SCHEDULE_FIELDS) <= set(C.CHECKS)


@pytest.mark.parametrize("optimizer, sam, m, label", [
    ("sgd", "none", None, "SGD"),
    ("sgd", "sam", None, "SGD+SAM"),
    ("momentum", "sam", 32, "SGD+momentum+SAM (m=32)"),
    ("momentum", "sam", 32.0, "SGD+momentum+SAM (m=32)"),  # as results.csv holds m
    ("adam", "asam", math.nan, "Adam+ASAM"),
    ("adamw", "looksam", None, "AdamW+LookSAM"),
    ("lars", "sam", 64, "LARS+SAM (m=64)"),
    ("lamb", "none", None, "LAMB"),
    ("sgd", None, 16, "SGD"),  # no SAM: m does not show
    ("momentum", math.nan, None, "SGD+momentum"),
    ("rmsprop", "gsam", None, "rmsprop+gsam"),  # unknown names as given
])
def test_method_label(optimizer, sam, m, label):
    assert method_label(optimizer, sam, m) == label


def test_warmup_schedule_rises_linearly_then_stays():
    schedule = WarmupSchedule(0.01, 0.1, warmup_steps=10)
    assert isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
    for step, lr in [(0, 0.01), (5, 0.055), (10, 0.1), (20, 0.1)]:
        assert float(schedule(step)) == pytest.approx(lr, rel=1e-6), step
    assert float(WarmupSchedule(0.01, 0.1, warmup_steps=0)(0)) == pytest.approx(0.1)
    assert O.WarmupSchedule is WarmupSchedule and WarmupSchedule.__module__ == "samlib.optimizers"


def test_make_optimizer_warms_up_over_the_configured_epochs():
    config = Config(lr=0.01, batch_size=256, base_batch_size=32, lr_scaling="linear", warmup_epochs=0.5)
    schedule = make_optimizer(config, steps_per_epoch=20)._learning_rate
    assert (schedule.start, schedule.target, schedule.warmup_steps) == (0.01, pytest.approx(0.08), 10)


def _lr_at(optimizer, step: int) -> float:
    """The lr the optimizer uses for the update it makes when `step` updates are already made."""
    optimizer.iterations.assign(step)
    return float(optimizer.learning_rate)


def test_warmup_steps_rises_from_zero_counting_the_step_being_taken():
    # scaled_lr = 0.05 · 256/128 = 0.1; lr(s) = 0.1 · min(1, (s + 1)/4), by hand
    config = Config(lr=0.05, batch_size=256, base_batch_size=128, lr_scaling="linear", warmup_steps=4,
                    warmup_epochs=3.0)  # ignored: warmup_steps is set
    optimizer = make_optimizer(config, steps_per_epoch=10)
    for step, lr in [(0, 0.025), (1, 0.05), (2, 0.075), (3, 0.1), (4, 0.1), (10, 0.1), (1000, 0.1)]:
        assert _lr_at(optimizer, step) == pytest.approx(lr, rel=1e-6), step
    zero = make_optimizer(config.replace(warmup_steps=0), steps_per_epoch=10)
    assert [_lr_at(zero, s) for s in (0, 1, 50)] == [pytest.approx(0.1)] * 3  # 0: no warm-up


def test_warmup_steps_none_is_the_warmup_epochs_schedule_as_before():
    config = Config(lr=0.01, batch_size=256, base_batch_size=32, lr_scaling="linear", warmup_epochs=0.5)
    assert config.warmup_steps is None
    schedule = make_optimizer(config, steps_per_epoch=20)._learning_rate
    assert (schedule.start, schedule.offset, schedule.warmup_steps) == (0.01, 0, 10)
    before = WarmupSchedule(0.01, config.scaled_lr, 10)  # as make_optimizer built it before warmup_steps
    for step in (0, 1, 5, 9, 10, 30):
        assert float(schedule(step)) == float(before(step)) == pytest.approx(0.01 + 0.07 * min(step / 10, 1)), step
