"""Every statistic of the study: t-based intervals, paired differences, gap closure, a log-log slope, a
rank trend, and how an interval is written.

Every function takes plain numbers (per-seed values, or a table's columns) and returns plain dicts, so
the tests check them against values computed by hand; `answer` and `findings` only select the runs.

- `mean_ci`: mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (s with ddof = 1; no interval for n < 2).
- `paired_difference`: methods that share seeds are paired; the interval is `mean_ci` of the per-seed
  differences a_s − b_s over the seeds both have, and ``p`` the paired t-test's two-sided p.
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

For comparisons people can rely on (Holm 1979; Fieller 1954; Schuirmann 1987; Kendall 1938; Jiang et
al. 2020 for the granulated τ):

- `holm`: Holm's step-down adjusted p-values over a family of tests.
- `fieller`: the Fieller CI of a ratio of two means (a gap closure), unbounded where the denominator is
  not significant; `ratio_ci` of per-seed numerators and denominators.
- `tost`: two one-sided tests of |mean| < margin (equivalence), with the CI's upper limit as the
  "no gap larger than" bound; `mde`: the minimum detectable effect of a paired t-test at 80 % power.
- `two_way_bootstrap`: a percentile CI of a mean difference over seeds × test images, resampling seeds
  and images independently, so the interval covers both the training noise and the test sample.
- `kendall_tau` (with a bootstrap CI over the runs) and `granulated_tau` (τ within groups that differ
  in one hyperparameter only, averaged per axis).
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
    out["p"] = _t_test_p(out)
    return out


def _t_test_p(ci: Mapping[str, Any]) -> float:
    """The two-sided p of a one-sample t-test of mean 0 for a `mean_ci` result (NaN for n < 2)."""
    if ci["n"] < 2 or not np.isfinite(ci["sd"]):
        return math.nan
    if ci["sd"] == 0:
        return 0.0 if ci["mean"] != 0 else 1.0
    t = ci["mean"] / (ci["sd"] / math.sqrt(ci["n"]))
    return float(2 * _st.t.sf(abs(t), ci["n"] - 1))


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


# ---------------------------------------------------------------------- many tests, ratios, equivalence
def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's adjusted p-values, in the order given: sorted ascending p₍₁₎ ≤ … ≤ p₍ₘ₎ over the m finite
    ones, adj₍ᵢ₎ = max_{j≤i} min(1, (m − j + 1)·p₍ⱼ₎); a missing p stays None and is not counted."""
    finite = sorted((float(p), i) for i, p in enumerate(pvalues) if is_finite(p))
    out: list[float | None] = [None] * len(pvalues)
    m, running = len(finite), 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def fieller(a: float, b: float, var_a: float, var_b: float, cov: float, df: int,
            level: float = LEVEL) -> dict[str, Any]:
    """Fieller's CI of θ = a/b for estimates a, b with variances and covariance (of the estimates) and a
    t quantile with `df` degrees of freedom: the θ with (a − θb)² ≤ t²(var_a − 2θ·cov + θ²·var_b).
    ``bounded`` is False (lo/hi None) where b is not significantly non-zero (b² ≤ t²·var_b): the set is
    then unbounded and no interval is reported."""
    t = float(_st.t.ppf(0.5 + level / 2, df)) if df >= 1 else math.nan
    out: dict[str, Any] = {"estimate": a / b if b else math.nan, "lo": None, "hi": None, "bounded": False}
    qa = b * b - t * t * var_b
    if not math.isfinite(t) or qa <= 0:
        return out
    qb = a * b - t * t * cov
    qc = a * a - t * t * var_a
    disc = qb * qb - qa * qc
    root = math.sqrt(max(disc, 0.0))
    out.update(lo=(qb - root) / qa, hi=(qb + root) / qa, bounded=True)
    return out


def ratio_ci(num: Mapping[Any, float], den: Mapping[Any, float], level: float = LEVEL) -> dict[str, Any]:
    """`fieller` for mean(num)/mean(den) from per-seed values paired by seed (a gap closure: num_s =
    LB_s − LB+SAM_s, den_s = LB_s − SB_s); ``n`` seeds."""
    seeds = sorted(s for s in num if s in den and is_finite(num[s]) and is_finite(den[s]))
    x = np.array([num[s] for s in seeds], dtype=float)
    y = np.array([den[s] for s in seeds], dtype=float)
    n = len(seeds)
    if n < 2:
        return {"estimate": float(x.mean() / y.mean()) if n and y.mean() else math.nan, "lo": None, "hi": None,
                "bounded": False, "n": n}
    cov = np.cov(x, y, ddof=1) / n
    out = fieller(float(x.mean()), float(y.mean()), float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1]), n - 1,
                  level)
    out["n"] = n
    return out


def tost(values: Iterable[float], margin: float, alpha: float = 1 - LEVEL) -> dict[str, Any]:
    """Two one-sided t-tests (Schuirmann) that the mean of `values` (paired differences) lies within
    ±`margin`: p is the larger of P(T ≥ (m + δ)/se) and P(T ≤ (m − δ)/se), T ~ t(n − 1), and
    ``equivalent`` means p < alpha. ``upper`` is the upper limit of the two-sided (1 − alpha) CI of
    the mean: the data exclude a difference above it ("no gap larger than upper"), whatever the margin."""
    ci = mean_ci(values, 1 - alpha)
    out: dict[str, Any] = {"mean": ci["mean"], "n": ci["n"], "margin": float(margin), "p": None,
                           "equivalent": False, "upper": None}
    if ci["n"] < 2 or not np.isfinite(ci["sd"]):
        return out
    se, df = ci["sd"] / math.sqrt(ci["n"]), ci["n"] - 1
    if se == 0:
        p = 0.0 if abs(ci["mean"]) < margin else 1.0
    else:
        p = max(float(_st.t.sf((ci["mean"] + margin) / se, df)), float(_st.t.cdf((ci["mean"] - margin) / se, df)))
    out.update(p=p, equivalent=bool(p < alpha), upper=float(ci["hi"]))
    return out


def mde(sd: float, n: int, power: float = 0.8, level: float = LEVEL) -> float:
    """The smallest true mean difference a paired two-sided t-test at `level` detects with probability
    `power` from n pairs of standard deviation sd: (t_{1−α/2, n−1} + t_{power, n−1})·sd/√n."""
    if n < 2 or not is_finite(sd):
        return math.nan
    df = n - 1
    return float((_st.t.ppf(0.5 + level / 2, df) + _st.t.ppf(power, df)) * sd / math.sqrt(n))


def two_way_bootstrap(diff: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = LEVEL) -> dict[str, Any]:
    """The mean of `diff` (seeds × test images: e.g. error of method A minus method B on each image, per
    seed) with a percentile CI that resamples seeds and images independently (each replicate: S seeds
    and I images drawn with replacement, the mean over their cross product), so it covers the spread
    between seeds and the sampling of the test set; ``se`` is the replicates' standard deviation."""
    d = np.asarray(diff, dtype=float)
    if d.ndim != 2 or not d.size:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "se": math.nan, "n_seeds": 0, "n_images": 0}
    rng = np.random.default_rng(seed)
    n_s, n_i = d.shape
    reps = np.empty(n_boot)
    for k in range(n_boot):
        rows = rng.integers(0, n_s, n_s)
        cols = rng.integers(0, n_i, n_i)
        # mean over the cross product = weights of rows and columns applied to d
        reps[k] = np.bincount(rows, minlength=n_s) @ d @ np.bincount(cols, minlength=n_i) / (n_s * n_i)
    tail = (1 - level) / 2 * 100
    return {"mean": float(d.mean()), "lo": float(np.percentile(reps, tail)), "hi": float(np.percentile(reps, 100 - tail)),
            "se": float(reps.std(ddof=1)), "n_seeds": n_s, "n_images": n_i}


# ---------------------------------------------------------------------- rank correlation
def kendall_tau(x: Sequence[float], y: Sequence[float], n_boot: int = 2000, seed: int = 0,
                level: float = LEVEL) -> dict[str, Any]:
    """Kendall's τ-b of y on x over the pairs where both are finite, with a percentile bootstrap CI over
    the pairs (runs); ``n`` pairs."""
    pts = np.array([(float(a), float(b)) for a, b in zip(x, y) if is_finite(a) and is_finite(b)], dtype=float)
    out: dict[str, Any] = {"tau": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan, "n": int(len(pts))}
    if len(pts) < 3:
        return out
    res = _st.kendalltau(pts[:, 0], pts[:, 1])
    out.update(tau=float(res.statistic), p=float(res.pvalue))
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(pts), len(pts))
        tau = _st.kendalltau(pts[idx, 0], pts[idx, 1]).statistic
        if np.isfinite(tau):
            reps.append(tau)
    if reps:
        tail = (1 - level) / 2 * 100
        out.update(lo=float(np.percentile(reps, tail)), hi=float(np.percentile(reps, 100 - tail)))
    return out


def granulated_tau(rows: Sequence[Mapping[str, Any]], x: str, y: str, axes: Sequence[str]) -> dict[str, Any]:
    """Jiang et al.'s (2020) granulated τ: for each hyperparameter `axis`, Kendall's τ of `y` on `x`
    within every group of rows that agree on all the other axes (only that one varies), averaged over
    the groups with at least two rows; ``mean`` averages the axes. Rows are mappings (a table's records)."""
    per_axis: dict[str, float] = {}
    for axis in axes:
        others = [a for a in axes if a != axis]
        groups: dict[tuple, list[Mapping[str, Any]]] = {}
        for r in rows:
            groups.setdefault(tuple(r.get(a) for a in others), []).append(r)
        taus = []
        for members in groups.values():
            xs = [m.get(x) for m in members]
            ys = [m.get(y) for m in members]
            keep = [(a, b) for a, b in zip(xs, ys) if is_finite(a) and is_finite(b)]
            if len(keep) >= 2 and len({a for a, _ in keep}) > 1 and len({b for _, b in keep}) > 1:
                taus.append(float(_st.kendalltau([a for a, _ in keep], [b for _, b in keep]).statistic))
        per_axis[axis] = float(np.mean(taus)) if taus else math.nan
    finite = [v for v in per_axis.values() if math.isfinite(v)]
    return {"per_axis": per_axis, "mean": float(np.mean(finite)) if finite else math.nan}
