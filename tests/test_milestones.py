"""Milestone bookkeeping (samlib.milestones), against hand-worked sequences of checks and epochs."""

import pytest

from samlib.config import Config
from samlib.milestones import EPOCHS, EVALS, LOSS, Milestone, Tracker, of_config


def test_a_config_lists_its_loss_milestones_largest_first_then_its_epoch_milestones():
    config = Config(loss_milestones=[0.03, 0.1], target_loss=0.01, epoch_milestones=[10, 2], epochs=20)
    assert of_config(config) == [Milestone(LOSS, 0.1), Milestone(LOSS, 0.03), Milestone(LOSS, 0.01),
                                 Milestone(EPOCHS, 2), Milestone(EPOCHS, 10)]
    assert [m.name for m in of_config(config)] == ["loss=0.1", "loss=0.03", "loss=0.01", "epochs=2", "epochs=10"]
    assert of_config(Config(target_loss=0.1, loss_milestones=[0.1])) == [Milestone(LOSS, 0.1)]
    assert of_config(Config()) == []


def test_names_parse_back():
    for m in (Milestone(LOSS, 0.03), Milestone(EPOCHS, 10)):
        assert Milestone.parse(m.name) == m
    with pytest.raises(ValueError, match="expected 'loss=<value>'"):
        Milestone.parse("steps=3")


def test_checks_aim_at_the_largest_open_loss_milestone_and_one_check_can_reach_several():
    t = Tracker(of_config(Config(loss_milestones=[0.1, 0.03, 0.01], epoch_milestones=[3], epochs=5)))
    assert t.next_loss == 0.1 and not t.done
    assert t.at_loss(0.2) == []
    assert t.at_loss(float("nan")) == []
    reached = t.at_loss(0.05)  # 0.1 only
    assert reached == [Milestone(LOSS, 0.1)]
    t.mark(reached, "snap1")
    assert t.next_loss == 0.03
    reached = t.at_loss(0.009)  # both 0.03 and 0.01 at one check
    assert reached == [Milestone(LOSS, 0.03), Milestone(LOSS, 0.01)]
    t.mark(reached, "snap2")
    assert t.next_loss is None and not t.done  # the epoch milestone is still open
    assert t.at_epoch(2) == [] and t.at_epoch(3) == [Milestone(EPOCHS, 3)]
    t.mark(t.at_epoch(3), "snap3")
    assert t.done and t.missing == []
    assert t.reached[Milestone(LOSS, 0.01)] == "snap2"


def test_a_run_without_milestones_is_never_done_and_lists_what_it_missed():
    assert not Tracker([]).done
    t = Tracker(of_config(Config(loss_milestones=[0.1, 0.01])))
    t.mark(t.at_loss(0.09), "s")
    assert t.missing == [Milestone(LOSS, 0.01)]


def test_evaluations_milestones_come_last_parse_back_and_are_reached_by_the_count_spent():
    config = Config(loss_milestones=[0.1], epoch_milestones=[2], evals_milestones=[600, 200], epochs=5)
    assert [m.name for m in of_config(config)] == ["loss=0.1", "epochs=2", "evals=200", "evals=600"]
    assert Milestone.parse("evals=600") == Milestone(EVALS, 600)
    t = Tracker(of_config(config))
    assert t.has_evals and t.at_evals(199) == [] and t.at_evals(200) == [Milestone(EVALS, 200)]
    t.mark(t.at_evals(200), "a")
    assert t.at_evals(650) == [Milestone(EVALS, 600)] and not t.done


def test_gradient_evaluations_counted_by_hand():
    from samlib.cost import grad_evals, grad_evals_per_step

    assert [grad_evals(s, "none") for s in (0, 1, 7)] == [0, 1, 7]
    assert [grad_evals(s, "sam") for s in (1, 7)] == [2, 14] and grad_evals(7, "asam") == 14
    # LookSAM, k = 5: SAM steps are the 1st, 6th, 11th: after 5 steps 5 + 1, after 6 steps 6 + 2, after 11 11 + 3
    assert [grad_evals(s, "looksam", 5) for s in (1, 5, 6, 10, 11)] == [2, 6, 8, 12, 14]
    assert grad_evals(4, "looksam", 2) == 6 and grad_evals(5, "looksam", None) == 6  # k as Config's default 5
    assert grad_evals_per_step("looksam", 4) == 1.25 and grad_evals_per_step("sam") == 2.0
    assert grad_evals_per_step("none", 4) == 1.0
