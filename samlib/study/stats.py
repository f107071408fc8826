"""Every statistic of the study: t-based intervals, paired differences, gap closure, a log-log slope, a
rank trend, and how an interval is written.

Every function takes plain numbers (per-seed values, or a table's columns) and returns plain dicts, so
the tests check them against values computed by hand; `answer` and `findings` only select the runs.

- `mean_ci`: mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (s with ddof = 1; no interval for n < 2).
- `paired_difference`: methods that share seeds are paired; the interval is `mean_ci` of the per-seed
  differences a_s − b_s over the seeds both have.
- `gap_closure`: how much of the large-batch gap SAM closes,
  (L_base,LB − L_SAM,LB) / (L_base,LB − L_base,SB), from per-seed means, with a percentile bootstrap
  95 % CI that resamples seeds (all three values of a seed together, as they are paired). 1 = SAM at
  the large batch is as good as the base optimizer at the small batch; 0 = no better than the base at
  the large batch; < 0 = worse. The gap itself gets a paired t-interval; where it includes 0 the ratio
  divides by noise, and `significant_gap` is False.
- `loglog_slope`: least squares of log(y) on log(x) with a t-based CI of the slope; for the best
  learning rate vs batch size, slope 0 = no scaling, 0.5 = square-root rule, 1 = linear rule.
- `trend`: a measure from the smallest to the largest batch size: both means with t-CIs, their ratio,
  and Spearman's ρ over the runs.
- `fmt_ci`: '0.123 (95 % CI 0.101–0.145, n=3)'; `value`: a number for JSON (None when missing or
  not finite).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as _st

from samlib.io import is_finite

LEVEL = 0.95


def mean_ci(values: Iterable[float], level: float = LEVEL) -> dict[str, float]:
    """{mean, lo, hi, n, sd} over the finite values; lo/hi are NaN for n < 2."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = int(v.size)
    if n == 0:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "sd": math.nan}
    mean = float(v.mean())
    if n < 2:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "n": 1, "sd": math.nan}
    sd = float(v.std(ddof=1))
    half = float(_st.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n, "sd": sd}


def paired_difference(a: Mapping[Any, float], b: Mapping[Any, float], level: float = LEVEL) -> dict[str, Any]:
    """`mean_ci` of a_s − b_s over the seeds s with a finite value in both; ``seeds`` lists them."""
    seeds = sorted(s for s in a if s in b and is_finite(a[s]) and is_finite(b[s]))
    out = mean_ci([a[s] - b[s] for s in seeds], level)
    out["seeds"] = seeds
    out["significant"] = bool(out["n"] >= 2 and (out["lo"] > 0 or out["hi"] < 0))
    return out


def gap_closure(
    base_large: Mapping[Any, float],
    sam_large: Mapping[Any, float],
    base_small: Mapping[Any, float],
    n_boot: int = 4000,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Any]:
    """(mean base_LB − mean SAM_LB) / (mean base_LB − mean base_SB) over the seeds all three share,
    with a seed-resampling percentile bootstrap CI (module doc)."""
    seeds = sorted(s for s in base_large if s in sam_large and s in base_small
                   and all(is_finite(d[s]) for d in (base_large, sam_large, base_small)))
    bl = np.array([base_large[s] for s in seeds], dtype=float)
    sl = np.array([sam_large[s] for s in seeds], dtype=float)
    bs = np.array([base_small[s] for s in seeds], dtype=float)
    gap = paired_difference(dict(zip(seeds, bl)), dict(zip(seeds, bs)), level)
    gain = paired_difference(dict(zip(seeds, bl)), dict(zip(seeds, sl)), level)
    out: dict[str, Any] = {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_seeds": len(seeds),
                           "seeds": seeds, "gap": gap, "sam_gain": gain,
                           "significant_gap": bool(gap["n"] >= 2 and gap["lo"] > 0)}
    if not seeds or bl.mean() == bs.mean():
        return out
    out["estimate"] = float((bl.mean() - sl.mean()) / (bl.mean() - bs.mean()))
    if len(seeds) >= 2:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
        num = bl[idx].mean(1) - sl[idx].mean(1)
        den = bl[idx].mean(1) - bs[idx].mean(1)
        ratios = np.where(den != 0, num / np.where(den == 0, 1.0, den), np.nan)
        ratios = ratios[np.isfinite(ratios)]
        if ratios.size:
            tail = (1 - level) / 2 * 100
            out["ci_low"], out["ci_high"] = (float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail)))
    return out


def loglog_slope(x: Sequence[float], y: Sequence[float], level: float = LEVEL) -> dict[str, float]:
    """log(y) = a + slope · log(x) by least squares: {slope, lo, hi, intercept, n, stderr}."""
    pts = [(float(a), float(b)) for a, b in zip(x, y) if is_finite(a) and is_finite(b) and a > 0 and b > 0]
    n = len(pts)
    out = {"slope": math.nan, "lo": math.nan, "hi": math.nan, "intercept": math.nan, "n": n, "stderr": math.nan}
    if n < 2 or len({p[0] for p in pts}) < 2:
        return out
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    fit = _st.linregress(lx, ly)
    out.update(slope=float(fit.slope), intercept=float(fit.intercept))
    if n >= 3:
        half = float(_st.t.ppf(0.5 + level / 2, n - 2)) * float(fit.stderr)
        out.update(lo=float(fit.slope) - half, hi=float(fit.slope) + half, stderr=float(fit.stderr))
    return out


def trend(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """y from the smallest to the largest x (batch size): ``smallest_batch``, ``largest_batch``, the
    `mean_ci` of y at each (``small``, ``large``), their ``ratio``, Spearman's ρ of y on x with its p,
    and ``n_runs``; {} with fewer than two distinct x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(set(x)) < 2:
        return {}
    lo_bs, hi_bs = int(x.min()), int(x.max())
    small, large = mean_ci(y[x == lo_bs]), mean_ci(y[x == hi_bs])
    rho, p = _st.spearmanr(x, y)
    return {"smallest_batch": lo_bs, "largest_batch": hi_bs, "small": small, "large": large,
            "ratio": large["mean"] / small["mean"] if small["mean"] else math.nan,
            "spearman_rho": float(rho), "spearman_p": float(p), "n_runs": int(len(x))}


def fmt_ci(ci: Mapping[str, float], digits: int = 3) -> str:
    """'0.123 (95 % CI 0.101–0.145, n=3)'; 'n/a' when there is no value."""
    if not ci or ci.get("n", 0) == 0 or not np.isfinite(ci["mean"]):
        return "n/a"
    text = f"{ci['mean']:.{digits}g}"
    if ci["n"] >= 2 and np.isfinite(ci["lo"]):
        text += f" (95 % CI {ci['lo']:.{digits}g}–{ci['hi']:.{digits}g}, n={ci['n']})"
    else:
        text += f" (n={ci['n']}, no CI)"
    return text


def value(x: Any) -> float | None:
    """A JSON number: the float of `x`, None for a missing, unparseable or non-finite value."""
    return float(x) if is_finite(x) else None
