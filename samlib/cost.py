"""What a training step costs, in gradient evaluations (forward-backward passes over a batch).

The fair price of SAM is not its steps but its gradient evaluations: SAM, ASAM and m-SAM take two a step
(the gradient that sets ε̂, then the gradient at w + ε̂); LookSAM takes two on every k-th step (its first,
then one every k: `samlib.looksam.LookSAM` runs the full SAM step when ``iterations % k == 0``) and one
otherwise; a base optimizer (SGD, momentum, Adam, LARS, LAMB) takes one. `grad_evals_per_step` is the
mean rate a table multiplies steps by; `grad_evals` the exact count after a number of steps, which the
``evals`` milestones of a run (`samlib.milestones`) are reached by. No TensorFlow, no Keras.
"""

from __future__ import annotations

import math
from typing import Any

from samlib.io import is_finite

GRAD_EVALS = {"none": 1.0, "sam": 2.0, "asam": 2.0}  #: gradient evaluations per step (LookSAM: 1 + 1/k)
LOOKSAM_K = 5  #: LookSAM's k when a record does not say (Config's default)


def _k(looksam_k: Any) -> int:
    return int(looksam_k) if is_finite(looksam_k) else LOOKSAM_K


def grad_evals_per_step(sam: Any, looksam_k: Any = None) -> float:
    """Forward-backward passes per optimizer step, on average: 1 for the base optimizer, 2 for SAM, ASAM
    and m-SAM, 1 + 1/k for LookSAM (a SAM step every k)."""
    if sam == "looksam":
        return 1.0 + 1.0 / _k(looksam_k)
    return GRAD_EVALS.get(str(sam), 1.0)


def grad_evals(steps: int, sam: Any, looksam_k: Any = None) -> int:
    """The gradient evaluations of the first `steps` optimizer steps, exactly: `steps` times 1 or 2, and
    for LookSAM `steps` + ceil(steps / k) (its SAM steps are the 1st, (k+1)-th, ...)."""
    steps = int(steps)
    if sam == "looksam":
        return steps + math.ceil(steps / _k(looksam_k))
    return int(round(steps * GRAD_EVALS.get(str(sam), 1.0)))
