"""Milestone bookkeeping (samlib.milestones), against hand-worked sequences of checks and epochs."""

import pytest

from samlib.config import Config
from samlib.milestones import EPOCHS, LOSS, Milestone, Tracker, of_config


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
