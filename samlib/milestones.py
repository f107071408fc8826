"""Milestones: the points of a run at which its live weights are snapshot, so that one run serves both
the same-epochs and the same-training-loss comparisons.

- A **loss milestone** L is reached at the first check (`samlib.monitor.CheckSchedule`) whose
  inference-mode training loss (dropout off, the whole training split) is <= L. Checks aim at the
  largest milestone not yet reached, so the snapshot's loss is at most L and, near L, about a check
  interval below it. One check can reach several milestones at once (then they share the snapshot).
  With ``match_tolerance`` the checks go step by step near L, so the snapshot is at the first step
  whose loss is <= L, and it records the check before it (`samlib.monitor.RunMonitor`).
- An **epoch milestone** E is reached at the end of epoch E (after exactly E epochs of steps).
- An **evaluations milestone** N is reached at the first step after which the run has spent N gradient
  evaluations or more (`samlib.cost.grad_evals`: SAM spends two a step, so it gets there in half the
  steps of SGD): the same compute for every method, whatever it spends a step. Steps are seen one by one
  when the run checks every step (``match_tolerance``, or a run with evaluations milestones: one step per
  compiled call), so the snapshot is at that step exactly.

A run trains on until every milestone is reached, or until its cap (`epochs`, or `steps`). A milestone
it never reaches has no snapshot, and the study lists it as missing rather than comparing it.

`target_loss` (the single-stop rule) is the loss milestone it names; with milestones, the run stops at
the smallest loss milestone (and the largest epoch milestone), whichever comes last.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

LOSS, EPOCHS, EVALS = "loss", "epochs", "evals"  #: the three kinds


@dataclasses.dataclass(frozen=True, order=True)
class Milestone:
    """One stop point: `kind` ``loss`` (at = a training-loss value), ``epochs`` (at = an epoch count) or
    ``evals`` (at = a count of gradient evaluations)."""

    kind: str
    at: float

    @property
    def name(self) -> str:
        """``loss=0.03``, ``epochs=10``, ``evals=600``: its snapshot's file stem and its key in snapshot records."""
        return f"{self.kind}={self.at:g}" if self.kind == LOSS else f"{self.kind}={int(self.at)}"

    @classmethod
    def parse(cls, name: str) -> "Milestone":
        kind, _, at = name.partition("=")
        if kind not in (LOSS, EPOCHS, EVALS) or not at:
            raise ValueError(f"milestone {name!r}: expected 'loss=<value>', 'epochs=<count>' or 'evals=<count>'")
        return cls(kind, float(at) if kind == LOSS else int(at))


def of_config(config: Any) -> list[Milestone]:
    """Every milestone of a run: its `loss_milestones` (plus `target_loss`, if set), `epoch_milestones` and
    `evals_milestones`: loss ones from the largest value down, then epoch ones, then evaluations ones, in
    order."""
    losses = set(config.loss_milestones) | ({float(config.target_loss)} if config.target_loss is not None else set())
    return [Milestone(LOSS, v) for v in sorted(losses, reverse=True)] + [
        Milestone(EPOCHS, int(e)) for e in sorted(config.epoch_milestones)
    ] + [Milestone(EVALS, int(n)) for n in sorted(getattr(config, "evals_milestones", ()) or ())]


class Tracker:
    """Which milestones a run has reached, and which loss the checks aim at next."""

    def __init__(self, milestones: Iterable[Milestone]) -> None:
        self.milestones = list(milestones)
        self.reached: dict[Milestone, Any] = {}

    @property
    def next_loss(self) -> float | None:
        """The largest loss milestone not yet reached (None: all are)."""
        open_ = [m.at for m in self.milestones if m.kind == LOSS and m not in self.reached]
        return max(open_) if open_ else None

    @property
    def has_loss(self) -> bool:
        return any(m.kind == LOSS for m in self.milestones)

    def at_loss(self, loss: float) -> list[Milestone]:
        """The loss milestones a check with this loss reaches now (largest first)."""
        if not math.isfinite(loss):
            return []
        return [m for m in self.milestones if m.kind == LOSS and m not in self.reached and loss <= m.at]

    def at_epoch(self, epochs_done: int) -> list[Milestone]:
        """The epoch milestones reached when `epochs_done` epochs are complete."""
        return [m for m in self.milestones if m.kind == EPOCHS and m not in self.reached and epochs_done >= m.at]

    def at_evals(self, evals_done: int) -> list[Milestone]:
        """The evaluations milestones reached once `evals_done` gradient evaluations are spent."""
        return [m for m in self.milestones if m.kind == EVALS and m not in self.reached and evals_done >= m.at]

    @property
    def has_evals(self) -> bool:
        return any(m.kind == EVALS for m in self.milestones)

    def mark(self, milestones: Iterable[Milestone], record: Any) -> None:
        for m in milestones:
            self.reached[m] = record

    @property
    def done(self) -> bool:
        """Every milestone reached (False for a run without milestones: it stops on its budget)."""
        return bool(self.milestones) and len(self.reached) == len(self.milestones)

    @property
    def missing(self) -> list[Milestone]:
        return [m for m in self.milestones if m not in self.reached]
