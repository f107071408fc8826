"""Loss milestones matched within a tolerance (`Config.match_tolerance`): near a milestone every step is
checked, so its snapshot is at the first step whose inference-mode training loss is <= it, and the
snapshot records the check before (above the milestone) and the mismatch ln(milestone / loss)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from samlib.config import Config
from samlib.monitor import CheckSchedule
from samlib.train import _steps_per_execution, train_and_evaluate


def simulate(curve, targets, cadence, tolerance=None, window=2, cap=200_000):
    """Drive a `CheckSchedule` as `samlib.monitor.RunMonitor` does, on a loss curve given per step:
    {target: (step reached, the check before it)}, and the number of checks."""
    pending = sorted(targets, reverse=True)
    schedule = CheckSchedule(pending[0], cadence, window, tolerance)
    reached = {}
    for step in range(1, cap):
        if not schedule.due(step):
            continue
        loss = curve(step)
        schedule.record(step, loss)
        hit = [t for t in pending if loss <= t]
        for t in hit:
            reached[t] = (step, schedule.checks[-2] if len(schedule.checks) > 1 else None)
        pending = [t for t in pending if t not in hit]
        if not pending:
            break
        if hit:
            schedule.retarget(pending[0])
    return reached, len(schedule.checks)


def first_step(curve, target):
    return next(s for s in range(1, 10**7) if curve(s) <= target)


_NOISE = np.random.default_rng(0).normal(0.0, 0.003, 20_000)
CURVES = {
    "exponential": lambda s: 2.3 * math.exp(-s / 400),
    "power law": lambda s: 2.3 / (1 + s / 40) ** 0.7,  # slower than log-linear, as losses fall
    "wiggly": lambda s: 2.3 / (1 + s / 40) ** 0.7 * (1 + 0.01 * math.sin(1.3 * s)),  # not monotone
    "noisy": lambda s: 2.3 / (1 + s / 40) ** 0.7 * math.exp(_NOISE[s]),  # seeded noise, 0.3 % a step
}


@pytest.mark.parametrize("name", list(CURVES))
def test_the_snapshot_step_is_the_first_step_at_or_below_each_milestone(name):
    curve, targets = CURVES[name], [0.5, 0.3, 0.29, 0.1]
    exact, checks = simulate(curve, targets, cadence=50, tolerance=0.05)
    loose, loose_checks = simulate(curve, targets, cadence=50)
    for t in targets:
        step, (before_step, before_loss) = exact[t]
        assert step == first_step(curve, t), (name, t)
        assert before_step == step - 1 and before_loss > t  # bracketed by the step before
        assert loose[t][0] >= step  # without a tolerance: at that step or (mostly) later
    assert sum(loose[t][0] > exact[t][0] for t in targets) >= 3
    # the cost: the steps in each band (ln(L/T) <= 0.05) and a few to reach it, far fewer than every step
    print(f"{name}: {checks} checks with match_tolerance 0.05, {loose_checks} without, "
          f"{first_step(curve, 0.1)} steps")
    assert checks < first_step(curve, 0.1) / 5


def test_a_sudden_drop_can_be_jumped_and_the_bracket_says_so():
    """A plateau, then a fall far faster than the extrapolation: the band is jumped, and the snapshot's
    check before is many steps back (the match is not exact, and the record shows it)."""
    def curve(s):
        return 2.3 - 0.3 * s / 300 if s < 300 else 2.0 * math.exp(-(s - 300) / 30)

    (step, (before_step, before_loss)), = simulate(curve, [0.5], cadence=50, tolerance=0.05)[0].values()
    assert step > first_step(curve, 0.5) and step - before_step > 1 and before_loss > 0.5 * math.exp(0.05)


def test_within_the_band_every_step_is_checked_and_a_quarter_of_the_way_outside_it():
    s = CheckSchedule(target=0.1, cadence=10, tolerance=0.1)
    assert s.due(1) and not CheckSchedule(target=0.1, cadence=10).due(9)  # the first check after one step
    s.record(10, 0.5)
    assert s.next == 10 + 10  # one check, no rate yet: one cadence (4 without a tolerance)
    s.record(20, 0.4)  # rate ln(1.25)/10 per step: ln(4)/rate = 62.1 steps to go; a quarter of it
    assert s.next == 20 + int(math.log(4) / (math.log(1.25) / 10) / 4) == 20 + 15
    s.record(35, 0.2)  # rate ln(2)/15: 15 steps to go; a quarter, 3, below the cadence 10
    assert s.next == 35 + 3
    s.record(38, 0.19)  # the rate from (20, 0.4), 10 or more steps back, not over these 3 noisy steps
    assert s.next == 38 + int(math.log(1.9) / (math.log(0.4 / 0.19) / 18) / 4) == 38 + 3  # (35, 0.2) alone: 9
    s.record(41, 0.109)  # within e^0.1 of the target (0.1105): every step
    assert s.next == 42
    s.retarget(0.105)  # a new target, planned again from the last check: 0.109 is within its band too
    assert s.next == 42 and s.target == 0.105
    rising = CheckSchedule(target=0.1, cadence=10, tolerance=0.1)
    rising.record(10, 0.5), rising.record(20, 0.6)
    assert rising.next == 20 + 10  # the loss did not fall: one cadence (4 without a tolerance)
    start = CheckSchedule(target=2.2, cadence=10, tolerance=0.05)
    start.record(1, 2.30)  # the initial loss, within e^0.05 of a milestone just below it: every step
    assert start.next == 2
    early = CheckSchedule(target=0.1, cadence=10, tolerance=0.1)
    early.record(1, 2.3)  # no rate yet: one cadence, but at most twice the wait from step 0
    assert early.next == 1 + 2
    early.record(3, 2.2)  # a quarter of the extrapolated 139 steps is 34, but at most twice the last wait
    assert int(math.log(22) / (math.log(2.3 / 2.2) / 2) / 4) == 34 and early.next == 3 + 4
    plain = CheckSchedule(target=0.1, cadence=10)
    plain.record(10, 0.5), plain.record(20, 0.4)
    plain.retarget(0.39)  # no tolerance: retargeting changes the target only, as before
    assert plain.next == 20 + int(math.log(4) / (math.log(1.25) / 10) / 2) and plain.target == 0.39


def run(**kw):
    """mnist5k (3,500 training images, 28 steps an epoch at batch 128), checked every 4 steps near a milestone."""
    values = dict(optimizer="sgd", lr=0.05, batch_size=128, epochs=3, verbose=0, check_every=4,
                  loss_milestones=[2.0, 1.5])
    return train_and_evaluate(Config(**{**values, **kw})).metrics


def test_a_real_run_matches_its_milestones_at_a_step_whose_step_before_was_above_them():
    matched, loose = run(match_tolerance=0.05), run()
    truth = run(match_tolerance=100.0)  # every step checked from the start
    snaps, loose_snaps = ({s["milestone"]: s for s in m["snapshots"]} for m in (matched, loose))
    assert matched["stop_reason"] == "milestones" and set(snaps) == {"loss=2", "loss=1.5"}
    for s in snaps.values():
        assert s["check_before"]["step"] == s["step"] - 1 and s["check_before"]["train_loss"] > s["at"]
        assert s["train_loss"] <= s["at"] and s["mismatch"] == pytest.approx(math.log(s["at"] / s["train_loss"]))
        assert s["mismatch"] >= 0
        assert loose_snaps[s["milestone"]]["step"] >= s["step"]
        assert "check_before" not in loose_snaps[s["milestone"]] and "mismatch" not in loose_snaps[s["milestone"]]
    assert [s["step"] for s in matched["snapshots"]] == [s["step"] for s in truth["snapshots"]]
    assert [s["train_loss"] for s in matched["snapshots"]] == [s["train_loss"] for s in truth["snapshots"]]
    assert truth["n_checks"] == truth["steps"]  # every step, from the first
    assert matched["n_checks"] < truth["n_checks"]
    print(f"loss checks: {matched['n_checks']} matched, {loose['n_checks']} without, {truth['n_checks']} "
          f"checking every step; steps {matched['steps']} vs {loose['steps']} without")


def test_matching_takes_one_step_per_compiled_call():
    config = Config(steps_per_execution=8, target_loss=0.1, match_tolerance=0.1)
    assert _steps_per_execution(config, steps_per_epoch=110) == 1
    assert _steps_per_execution(config.replace(match_tolerance=None), steps_per_epoch=110) == 8
    assert _steps_per_execution(config.replace(target_loss=None), steps_per_epoch=110) == 8  # no loss checks
