"""The study's selections of a results table (one row per run, `tables.run_record`), in one place.

Everything here selects or orders by the table's fields (``notebook``, ``optimizer``, ``sam``, ``m``,
``status``, ``converged``, ...), never by parsing the ``method`` label: a label is made from the fields
(`Method.label`, `method_label`) only where a figure or a sentence shows it.

- Notebooks: `LR_NOTEBOOK` (the lr sweep), `TUNING_NOTEBOOK` (the tuning cells); `main_runs` (every other
  notebook: the SAM-vs-base comparisons), `lr_runs`, `matched_runs` (runs trained to a loss target).
- Optimizer families: `FAMILIES` (sgd: SGD with or without momentum; adam: Adam, AdamW; lars: LARS;
  lamb: LAMB), `FAMILY_LABELS`, `family_key`, `in_family`. LARS and LAMB are families of their own, not
  members of sgd and adam: the answer table pools a family's base runs per seed, so LARS in the sgd
  family would be averaged with SGD; on its own it gets its own gap (and SAM-over-LARS its SAM effect).
- Which runs are compared, by one convergence test: `converged` (reached its loss target, or had
  none), `comparable` (finished ok and converged: never a diverged, failed, missing or `COLLAPSED` run),
  `comparable_runs`, `compared` (the main runs that are comparable), `not_compared`, `excluded` (not
  comparable, the status saying why), `reached_target`.
- Snapshots (one row per (run, milestone), `tables.snapshot_records`): `comparable_snapshots` (the run
  finished ok and reached the milestone), `at_milestone`.
- Learning-rate rules: `LR_RULES` (``same``: no lr scaling; ``scaled``: any scaling; ``tuned``: its lr
  tuned for its batch size), `lr_rule_of` and `own_lr_rules` (a run's own), `lr_rules_of` (a same or
  scaled run at its base batch size belongs to both: there they coincide), `in_lr_rule`.
- Data sets: `dataset_label` (a reader's name: 'MNIST (mnist5k)', 'Fashion-MNIST').
- Base optimizer vs SAM: `is_base`, `is_sam`, `is_plain_sam` (SAM on the whole batch).
- Methods: `Method` (optimizer, SAM variant, m; what each is and its label: the registries of
  `samlib.optimizers`, `method_label`), `methods` (one per row),
  `method_order`, `by_method`, `select`; `measures_in` (the sharpness columns that hold numbers).
- The best learning rate, by one rule: `best_lr` — per (batch size, method, seed), the lr whose run
  has the lowest **validation** loss (the test split chooses nothing); `lr_selection` applies it to the
  lr sweep of a whole study. The report, the figures and the lr notebook's sweep table all use it.

No TensorFlow here; pandas only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from samlib import measures as registry
from samlib.io import present
from samlib.optimizers import OPTIMIZER_LABELS, SAM_LABELS, method_label  # noqa: F401  (labels beside Method)
from samlib.study.layout import COMPLETE, OK, TARGET_NOT_REACHED

# ---------------------------------------------------------------------- data sets
DATASET_LABELS = {"mnist5k": "MNIST (mnist5k)", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST",
                  "cifar10": "CIFAR-10"}


def dataset_label(name: Any) -> str:
    """A reader's name for a ``dataset`` field: 'MNIST (mnist5k)', 'Fashion-MNIST', 'CIFAR-10'; an IDX
    folder (``idx:<folder>``) by its folder's name; anything else as given."""
    if not present(name):
        return "?"
    name = str(name)
    if name in DATASET_LABELS:
        return DATASET_LABELS[name]
    if name.startswith("idx:"):
        return f"IDX ({name[4:].rstrip('/').rsplit('/', 1)[-1]})"
    return name

# ---------------------------------------------------------------------- notebooks and families
LR_NOTEBOOK = "lr_scaling"  #: the notebook of the lr sweep
TUNING_NOTEBOOK = "tuning"  #: the notebook of the tuning cells (`samlib.study.tuning`)
NOT_COMPARED = (LR_NOTEBOOK, TUNING_NOTEBOOK)  #: notebooks that choose settings; every other one compares
FAMILIES: dict[str, tuple[str, ...]] = {"sgd": ("sgd", "momentum"), "adam": ("adam", "adamw"), "lars": ("lars",),
                                         "lamb": ("lamb",)}
FAMILY_LABELS = {"sgd": "SGD", "adam": "Adam", "lars": "LARS", "lamb": "LAMB"}
NO_SAM = "none"  #: the ``sam`` field of a base-optimizer run
PLAIN_SAM = "sam"  #: the ``sam`` field of SAM (Foret et al.), as opposed to ASAM or LookSAM


def family_key(name: str) -> str:
    """The family key ('sgd', 'adam') of a family key or label ('SGD', 'Adam'); ValueError otherwise."""
    for key, label in FAMILY_LABELS.items():
        if name in (key, label):
            return key
    raise ValueError(f"family has value {name!r}; allowed: {', '.join(FAMILY_LABELS.values())}")


def in_family(df: pd.DataFrame, family: str) -> pd.DataFrame:
    """The runs whose optimizer belongs to `family` (a key or label of `FAMILIES`)."""
    return df[df["optimizer"].isin(FAMILIES[family_key(family)])]


# ---------------------------------------------------------------------- runs
def main_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of the SAM-vs-base comparisons (every notebook but the lr sweep and the tuning), compared or not."""
    return df[~df["notebook"].isin(NOT_COMPARED)]


def lr_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of the lr sweep."""
    return df[df["notebook"] == LR_NOTEBOOK]


def matched_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Runs trained to a loss target (any notebook): stop rule ``target_loss=…``, not milestones."""
    return df[df["stop_rule"].astype(str).str.startswith("target_loss=")] if len(df) else df


def target_of(rule: Any) -> float | None:
    """The loss target of a stop rule 'target_loss=0.3 (cap 100 steps)'; None for any other rule."""
    text = str(rule)
    return float(text.split("=", 1)[1].split()[0]) if text.startswith("target_loss=") else None


def converged(df: pd.DataFrame) -> pd.Series:
    """The one convergence test: True where ``converged`` is true (the inference-mode training loss
    reached the target) or empty (the run had no target); False where the run stopped above it."""
    if "converged" not in df:
        return pd.Series(True, index=df.index)
    return df["converged"].map(lambda v: not present(v) or bool(v)).astype(bool)


def comparable(df: pd.DataFrame) -> pd.Series:
    """True for runs that enter means and comparisons: finished ok and `converged`. Only ``ok`` counts:
    a diverged, failed, missing, incomplete or collapsed (`layout.COLLAPSED`) run is never averaged."""
    return (df["status"] == OK) & converged(df)


def comparable_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of `df` that are `comparable`."""
    return df[comparable(df)] if len(df) else df


def excluded(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of `df` that are not `comparable`, with ``status`` saying why (``target not reached``
    for a run that finished ok above its target): what the figures mark ✕ and the report lists."""
    if not len(df):
        return df
    left = df[~comparable(df)].copy()
    left["status"] = [s if s != OK else TARGET_NOT_REACHED for s in left["status"]]
    return left


def reached_target(df: pd.DataFrame) -> pd.DataFrame:
    """The loss-target runs that are `comparable` (finished ok at their target)."""
    return comparable_runs(matched_runs(df))


def compared(df: pd.DataFrame) -> pd.DataFrame:
    """The main runs that are `comparable`, with ``test_error`` = 1 − test accuracy."""
    runs = comparable_runs(main_runs(df))
    return runs.assign(test_error=1.0 - runs["test_accuracy"].astype(float))


def not_compared(df: pd.DataFrame) -> pd.DataFrame:
    """Main runs left out of every comparison: not ok (diverged, failed, missing) or not converged."""
    runs = main_runs(df)
    return runs[~comparable(runs)]


def comparable_snapshots(snapshots: pd.DataFrame) -> pd.Series:
    """True for the rows of a snapshots table (`tables.snapshot_records`) that enter means and
    comparisons: the run finished ok (not diverged, failed or collapsed) and reached the milestone."""
    if not len(snapshots):
        return pd.Series([], index=snapshots.index, dtype=bool)
    reached = snapshots["reached"].map(lambda v: present(v) and bool(v)).astype(bool)
    return (snapshots["status"] == OK) & reached


def at_milestone(snapshots: pd.DataFrame, milestone: str) -> pd.DataFrame:
    """The rows of one milestone ('loss=0.03', 'epochs=10') of a snapshots table, as a results-like
    table: ``converged`` says whether the run reached it (so `comparable` / `excluded` apply: a run that
    finished ok without reaching it is ✕ 'target not reached') and ``stop_rule`` names the milestone."""
    rows = snapshots[snapshots["milestone"] == milestone] if len(snapshots) else snapshots
    return rows.assign(converged=[present(v) and bool(v) for v in rows["reached"]],
                       stop_rule=f"at {milestone}")


# ---------------------------------------------------------------------- learning-rate rules
SAME_LR, SCALED_LR = "same", "scaled"
TUNED_LR = "tuned"
#: ``same``: every batch size at the base lr; ``scaled``: lr scaled with B; ``tuned``: each method at each
#: batch size at the lr a tuning study chose for it on validation (`samlib.study.tuning`)
LR_RULES = (SAME_LR, SCALED_LR, TUNED_LR)


def lr_rule_of(row: Any) -> str:
    """A run's own lr rule: ``tuned`` if its lr was tuned for its batch size (``lr_tuned``), else ``same``
    if it does not scale its lr (``lr_scaling`` none), else ``scaled``."""
    if present(row.get("lr_tuned")) and bool(row.get("lr_tuned")):
        return TUNED_LR
    scaling = row.get("lr_scaling")
    return SAME_LR if not present(scaling) or scaling == "none" else SCALED_LR


def own_lr_rules(df: pd.DataFrame) -> list[str]:
    """Each row's own lr rule (`lr_rule_of`), in order: a column for tables grouped by rule."""
    return [lr_rule_of(r) for r in df.to_dict("records")]


def lr_rules_of(row: Any) -> tuple[str, ...]:
    """The lr rules a run (a row with ``lr_scaling``, ``batch_size``, ``base_batch_size``) can serve: its
    own (`lr_rule_of`), and at its base batch size both, as the rules give it the same lr there
    (`in_lr_rule` shares such runs only with a rule that has none of its own)."""
    bs, base = row.get("batch_size"), row.get("base_batch_size")
    own = lr_rule_of(row)
    if own != TUNED_LR and present(bs) and present(base) and int(bs) == int(base):
        return (SAME_LR, SCALED_LR)  # a tuned rule never borrows: its small batch is tuned too
    return (own,)


def _m(value: Any) -> int | None:
    """m as a key: None for the whole batch (None or NaN in a table)."""
    return int(value) if present(value) else None


def in_lr_rule(df: pd.DataFrame, rule: str) -> pd.DataFrame:
    """The rows of `df` that belong to the lr rule `rule`: its own runs (``same``: lr_scaling none;
    ``scaled``: any other), and, where the study gives the rule no run of its own at a method's base
    batch size, that method's runs of the other rule there (`lr_rules_of`: the rules coincide there
    when both start from one lr; a study that chose a different lr for each rule runs both)."""
    if rule not in LR_RULES:
        raise ValueError(f"lr rule has value {rule!r}; allowed: {', '.join(LR_RULES)}")
    if not len(df):
        return df
    records = df.to_dict("records")
    own = np.array([lr_rule_of(r) == rule for r in records], dtype=bool)
    shared = np.array([rule in lr_rules_of(r) for r in records], dtype=bool) & ~own

    def key(r: Mapping[str, Any]) -> tuple:
        return (r.get("notebook"), r.get("optimizer"), r.get("sam"), _m(r.get("m")), r.get("batch_size"))

    covered = {key(r) for r, o in zip(records, own) if o}
    borrowed = np.array([s and key(r) not in covered for r, s in zip(records, shared)], dtype=bool)
    return df[own | borrowed]


def is_base(df: pd.DataFrame) -> pd.Series:
    """True for base-optimizer runs (no SAM)."""
    return df["sam"] == NO_SAM


def is_sam(df: pd.DataFrame) -> pd.Series:
    """True for SAM-type runs (SAM, ASAM, LookSAM, m-SAM)."""
    return df["sam"] != NO_SAM


def is_plain_sam(df: pd.DataFrame) -> pd.Series:
    """True for SAM with one perturbation for the whole batch (no m)."""
    return (df["sam"] == PLAIN_SAM) & df["m"].isna()


# ---------------------------------------------------------------------- methods
@dataclasses.dataclass(frozen=True)
class Method:
    """What a method is: the optimizer, the SAM variant (``none`` for the base optimizer) and m (None:
    one perturbation for the whole batch; always None without SAM). Made with `Method.of`."""

    optimizer: str
    sam: str = NO_SAM
    m: int | None = None

    @classmethod
    def of(cls, optimizer: Any, sam: Any = NO_SAM, m: Any = None) -> "Method":
        sam = str(sam) if present(sam) else NO_SAM
        return cls(str(optimizer) if present(optimizer) else "?", sam,
                   int(m) if sam != NO_SAM and present(m) else None)

    @property
    def label(self) -> str:
        """The display label, e.g. 'SGD+momentum+SAM (m=32)' (`method_label`)."""
        return method_label(self.optimizer, self.sam, self.m)

    @property
    def is_base(self) -> bool:
        return self.sam == NO_SAM

    @property
    def base(self) -> "Method":
        """The base optimizer of this method (itself, for a base optimizer)."""
        return Method(self.optimizer)

    def fields(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "sam": self.sam, "m": self.m}

    def rank(self) -> tuple:
        """Order: optimizer (SGD, SGD+momentum, Adam, AdamW, others), then no SAM before SAM, ASAM,
        LookSAM (others after), then the whole batch before m, larger m first."""
        optimizers, sams = list(OPTIMIZER_LABELS), [NO_SAM, *SAM_LABELS]
        return (optimizers.index(self.optimizer) if self.optimizer in optimizers else len(optimizers),
                sams.index(self.sam) if self.sam in sams else len(sams),
                (0, 0) if self.m is None else (1, -self.m), self.label)


def methods(df: pd.DataFrame) -> pd.Series:
    """The `Method` of each row (index aligned with `df`)."""
    if not len(df):
        return pd.Series([], index=df.index, dtype=object)
    m = df["m"] if "m" in df else [None] * len(df)
    return pd.Series([Method.of(o, s, v) for o, s, v in zip(df["optimizer"], df["sam"], m)], index=df.index,
                     dtype=object)


def method_order(df_or_methods: pd.DataFrame | Iterable[Method]) -> list[Method]:
    """The distinct methods of a table (or of an iterable of `Method`), in `Method.rank` order."""
    found = methods(df_or_methods) if isinstance(df_or_methods, pd.DataFrame) else df_or_methods
    return sorted(set(found), key=Method.rank)


def select(df: pd.DataFrame, method: Method) -> pd.DataFrame:
    """The rows of `df` of one method."""
    return df[np.array([k == method for k in methods(df)], dtype=bool)] if len(df) else df


def by_method(df: pd.DataFrame) -> Iterator[tuple[Method, pd.DataFrame]]:
    """(method, its rows) for each method of `df`, in `method_order`."""
    keys = methods(df)
    for method in method_order(keys):
        yield method, df[np.array([k == method for k in keys], dtype=bool)]


def measures_in(df: pd.DataFrame) -> list[str]:
    """The sharpness measure columns of a results table that hold at least one number."""
    return [c for c in df.columns if registry.is_measure(c) and df[c].notna().any()]


# ---------------------------------------------------------------------- the best learning rate
BEST_LR_COLUMNS = ["batch_size", "method", "optimizer", "sam", "m", "seed", "lr", "val_loss", "test_loss",
                   "test_accuracy", "n_lrs", "at_edge"]


def best_lr(runs: pd.DataFrame) -> pd.DataFrame:
    """The one rule that chooses a learning rate: per (batch size, method, seed), the effective lr of the
    run with the lowest **validation** loss among `runs` that finished ok with a finite validation loss.

    One row per choice: the method's label and fields, the chosen lr, its validation loss, the test loss
    and accuracy of that run (the only test numbers of a sweep that are reported), ``n_lrs`` (lrs tried:
    runs that finished, ok, diverged or collapsed) and ``at_edge`` (the choice is the smallest or largest
    lr tried, so the sweep does not bound it on that side: an lr beyond it that diverged or collapsed
    does bound it, and is counted as tried though it is never chosen)."""
    ok = runs[runs["status"] == OK] if len(runs) else runs
    ok = ok[np.isfinite(ok["val_loss"].astype(float))] if "val_loss" in ok and len(ok) else ok.iloc[0:0]
    tried = runs[runs["status"].isin(COMPLETE)] if len(runs) else runs
    rows = []
    for bs, at in ok.groupby("batch_size"):
        for method, of_method in by_method(at):
            tried_m = select(tried[tried["batch_size"] == bs], method)
            for seed, g in of_method.groupby("seed"):
                best = g.loc[g["val_loss"].astype(float).idxmin()]
                lrs = pd.concat([g["lr"], tried_m[tried_m["seed"] == seed]["lr"]]).astype(float)
                lrs = lrs[np.isfinite(lrs)]
                rows.append({"batch_size": int(bs), "method": method.label, **method.fields(), "seed": int(seed),
                             "lr": float(best["lr"]), "val_loss": float(best["val_loss"]),
                             "test_loss": float(best["test_loss"]), "test_accuracy": float(best["test_accuracy"]),
                             "n_lrs": int(lrs.nunique()), "at_edge": float(best["lr"]) in (lrs.min(), lrs.max())})
    return pd.DataFrame(rows, columns=BEST_LR_COLUMNS)


def lr_selection(df: pd.DataFrame) -> pd.DataFrame:
    """`best_lr` of a whole study's lr sweep (`lr_runs`)."""
    return best_lr(lr_runs(df))
