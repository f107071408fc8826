"""The study's summary: everything here is read from what the runs wrote; nothing is trained.

`make_report(study_dir)` writes, from the tables of `samlib.study.tables` (`collect`: one row per run,
planned runs never written included; `collect_snapshots`: one row per (run, milestone)):

    results.csv        one row per run (`tables.COLUMNS`), diverged / failed / missing runs included
    snapshots.csv      one row per (run, milestone), milestones not reached included
    figures/*.png|svg  the figures of `figures.FIGURES`, every one mean ± 95 % CI over seeds
    findings.json      the answer table first (`answer_table`), then the numbers of the findings
    report.html        as a paper: title, the answer table, the paragraph, the headline figure and the
                       seed study's figures, the remedies table (where the study has tuned runs), the
                       details (findings), more figures, the parameters

Statistics. Figures use seaborn's bootstrap CI (``errorbar=("ci", 95)``, 1,000 resamples, seed 0)
over seeds. The findings use the t-based interval mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (s with ddof=1; no
interval for n < 2), computed by `stats.mean_ci`. Diverged and collapsed runs never enter a
mean; they are drawn as ✕ at the top of the panel where they belong and listed in the report.

This module does not import TensorFlow (except `ensure_study`, which may have to train a demo).
"""

from __future__ import annotations

import base64
import dataclasses
import html
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from samlib import io
from samlib.study import figures, layout, timing, tuning
from samlib.study.answer_text import answer_table_html, headline
from samlib.study.details import findings_text
from samlib.study.findings import compute_findings
from samlib.study.remedies import remedies_html
from samlib.study.selections import in_family, main_runs
from samlib.study import tables
from samlib.study.tables import collect, collect_snapshots


# ============================================================================ the report
@dataclasses.dataclass
class Report:
    study_dir: Path
    results: pd.DataFrame
    figures: dict[str, Path]  # name -> png
    findings: dict[str, Any]
    text: list[str]
    html: Path
    headline: str = ""
    snapshots: pd.DataFrame | None = None

    @property
    def files(self) -> list[str]:
        """Everything the report wrote, relative to the study folder, sorted."""
        names = [f"{layout.FIGURES}/{n}.{e}" for n in self.figures for e in ("png", "svg")]
        return sorted(names + [layout.FINDINGS, layout.REPORT, layout.RESULTS, layout.SNAPSHOTS])

    def _repr_html_(self) -> str:
        return _html_body(self)


def make_report(study_dir: str | Path) -> Report:
    """Write results.csv, snapshots.csv, figures/, findings.json (the answer table first) and
    report.html for `study_dir` (module doc)."""
    study_dir = Path(study_dir)
    df = collect(study_dir)
    snapshots = collect_snapshots(study_dir)
    io.write_text(study_dir / layout.RESULTS, df.to_csv(index=False))
    csv = snapshots.drop(columns=list(tables.PREDICTIONS)).to_csv(index=False)  # predictions stay in the runs
    io.write_text(study_dir / layout.SNAPSHOTS, csv)
    findings = {**compute_findings(df, snapshots, tuning.planned_with(study_dir)),
                "time_split": timing.study_split(study_dir)}
    figures.make_figures(df, study_dir / layout.FIGURES, snapshots=snapshots, table=findings["answer_table"],
                         predictors=findings["sharpness_vs_generalization"])
    text = findings_text(findings) + [timing.sentence(findings["time_split"])]
    head = headline(findings, matched_figure=figures.number(figures.MATCHED_LOSS))
    io.write_json(study_dir / layout.FINDINGS, {**findings, "headline": head, "text": text}, first=("answer_table",))
    pngs = {name: study_dir / layout.FIGURES / f"{name}.png" for name in figures.FIGURES}
    rep = Report(study_dir, df, pngs, findings, text, study_dir / layout.REPORT, head, snapshots)
    io.write_text(rep.html, "<!doctype html>\n<html><head><meta charset='utf-8'>"
                  f"<title>SAM study: {html.escape(study_dir.name)}</title>{_CSS}</head><body>"
                  + _html_body(rep) + "</body></html>\n")
    return rep


_CSS = """<style>
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}
table.answer td{text-align:right}table.answer td.regime{text-align:left}
table.answer caption{caption-side:bottom;text-align:left;font-size:12px;color:#444;padding-top:.4em}
.subtitle{color:#444;margin-bottom:1em}.abstract{font-size:15px;line-height:1.45}
figure{margin:1.5em 0}figcaption{font-size:13px;color:#444}img{max-width:100%}
.findings li{margin:.3em 0}
</style>"""


def _figure_html(rep: Report, name: str) -> str:
    png = rep.figures[name]
    src = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    return (f"<figure><img src='{src}' alt='{name}'><figcaption><b>Fig. {figures.number(name)}</b> "
            f"({name}): {html.escape(figures.CAPTIONS.get(name, ''))} "
            f"(<a href='{layout.FIGURES}/{name}.svg'>svg</a>)</figcaption></figure>")


def _parameters_html(rep: Report, study: dict[str, Any], params: dict[str, Any]) -> str:
    """The report's Parameters section (stop rules, the params file and its contents) and its runs not ok."""
    parts: list[str] = []
    parts.append("<h2>Parameters</h2>")
    rules = sorted(set(rep.results["stop_rule"].dropna())) if len(rep.results) else []
    parts.append("<p>Stop rules used: " + html.escape("; ".join(rules) or "n/a")
                 + ". A <code>steps=N</code> rule is a step budget: every batch size takes the same number of "
                 "optimizer steps (Hoffer et al. 2017), so large batches are not merely under-trained; a "
                 "<code>target_loss</code> rule stops at the first check (about every quarter epoch) at which "
                 "the training loss in inference mode (dropout off, on the whole training split) is at or below "
                 "the target, or at its cap (matched training loss; runs that hit the cap did not reach "
                 "the target). A <code>milestones …</code> rule trains until every milestone is reached (or its cap): a "
                 "run snapshots its weights when its inference-mode training loss first is at or below each loss "
                 "milestone and after each epoch milestone, and the answer table compares those snapshots.</p>")
    if params:
        parts.append(f"<p>Params file: <code>{html.escape(shown_path(study.get('params_file', ''), rep.study_dir))}"
                     "</code></p>")
        parts.append("<pre>" + html.escape(yaml.safe_dump(params, sort_keys=False, width=110)) + "</pre>")
    else:
        parts.append("<p>No study.json in this folder (not made by the study runner): the configurations are "
                     "those in results.csv.</p>")
    bad = rep.results[rep.results["status"] != layout.OK] if len(rep.results) else rep.results
    parts.append(f"<h2>Runs not ok ({len(bad)})</h2>")
    if len(bad):
        cols = ["notebook", "batch_size", "run", "status", "stop_reason", "train_loss", "error"]
        parts.append(bad[cols].to_html(index=False, na_rep="", escape=True))
    else:
        parts.append("<p>none</p>")
    return "\n".join(parts)


def _html_body(rep: Report) -> str:
    """The report's body, as a paper: title, the answer table, the paragraph (where the seed study's
    result reproduces), the headline figure and the seed study's figures, the details (every finding),
    the other figures, the parameters, the runs not ok. Figures are embedded as data URIs, so
    report.html is one self-contained file."""
    study = layout.read_study(rep.study_dir)
    params = {k: study[k] for k in ("study", "description", "seeds", "base", "sharpness", "notebooks", "summary")
              if k in study}
    parts = ["<h1>Does SAM rescue large-batch training?</h1>",
             f"<div class='subtitle'>Study <code>{html.escape(rep.study_dir.name)}</code>"
             + (f": {html.escape(study['description'])}" if study.get("description") else "") + "</div>"]
    parts.append("<h2>The answer</h2>" + answer_table_html(rep.findings.get("answer_table", []),
                                                               tuning_only=bool(rep.findings.get("tuning"))))
    parts.append(companions_html(rep.study_dir))
    parts.append(f"<p class='abstract'>{html.escape(rep.headline)}</p>")
    untrained = untrained_figures(rep.results, rep.figures)
    shown = [n for n in (figures.ANSWER, *figures.SEED_FIGURES) if n in rep.figures and n not in untrained]
    parts.extend(_figure_html(rep, n) for n in shown)
    if untrained:
        parts.append("<p class='untrained'>Not shown: " + ", ".join(
            f"Fig. {figures.number(n)} ({n})" for n in untrained) + ", of an optimizer family this study did not "
            f"train ({', '.join(sorted({figures.FIGURE_FAMILY[n] for n in untrained}))}); the files are in "
            f"{layout.FIGURES}/.</p>")
    if rep.findings.get("remedies"):  # tuned runs at loss milestones: every method against tuned SGD at SB
        parts.append(f"<h2>Remedies at matched cost (Fig. {figures.number(figures.REMEDIES)})</h2>"
                     + remedies_html(rep.findings["remedies"]))
    parts.append("<h2>Details</h2><ul class='findings'>" + "".join(f"<li>{html.escape(t)}</li>" for t in rep.text)
                 + "</ul>")
    parts.append("<p><small>Gap closure: (L<sub>base,LB</sub> − L<sub>SAM,LB</sub>) / (L<sub>base,LB</sub> − "
                 "L<sub>base,SB</sub>) of per-seed means, SB/LB the smallest/largest batch, with a bootstrap 95 % "
                 "CI over seeds (resampled together, as they are paired). Differences between methods: paired "
                 "per seed, t-based 95 % CI. Other findings: mean and t-based 95 % CI over seeds (mean ± t·s/√n). "
                 "Figures: mean and seaborn bootstrap 95 % CI over seeds. Only runs that finished ok at their "
                 "loss target are compared; the others (diverged, collapsed, failed, target not reached) are marked "
                 "✕ in the figures and listed below. Settings (lr, α) are chosen on the validation split; the test "
                 "split is read once per run, after training.</small></p>")
    parts.append("<h2>More figures</h2>")
    parts.extend(_figure_html(rep, n) for n in rep.figures if n not in shown and n not in untrained)
    parts.append(_parameters_html(rep, study, params))
    n_snap = 0 if rep.snapshots is None else len(rep.snapshots)
    parts.append(f"<p>One row per run: <a href='{layout.RESULTS}'>{layout.RESULTS}</a> ({len(rep.results)} rows); "
                 f"one per run and milestone: <a href='{layout.SNAPSHOTS}'>{layout.SNAPSHOTS}</a> ({n_snap} rows).</p>")
    return "\n".join(parts)


def untrained_figures(results: pd.DataFrame, names) -> list[str]:
    """The figures among `names` about an optimizer family (`figures.FIGURE_FAMILY`) of which the study
    has no comparison run (Adam in an SGD-only study): empty panels, so the report leaves them out."""
    runs = main_runs(results) if len(results) else results
    trained = {f for f in set(figures.FIGURE_FAMILY.values()) if len(runs) and len(in_family(runs, f))}
    return [n for n in names if n in figures.FIGURE_FAMILY and figures.FIGURE_FAMILY[n] not in trained]


def companions(study_dir: str | Path) -> list[str]:
    """The other studies beside this one (sibling folders holding a report.html, e.g. docs/results/cpu
    and docs/results/fashion), by folder name, sorted: each report links the others."""
    here = Path(study_dir).resolve()
    return sorted(p.name for p in here.parent.iterdir()
                  if p.is_dir() and p.resolve() != here and (p / layout.REPORT).is_file())


def companions_html(study_dir: str | Path) -> str:
    """One line linking each companion study's report (empty when there is none)."""
    names = companions(study_dir)
    if not names:
        return ""
    links = ", ".join(f"<a href='../{html.escape(n)}/{layout.REPORT}'>{html.escape(n)}</a>" for n in names)
    return f"<p class='companions'>Other studies beside this one: {links}.</p>"


def shown_path(path: str | Path, study_dir: str | Path) -> str:
    """How the report names a file that study.json records (the params file): a relative path as given;
    an absolute one relative to the study folder or to the repository (the folder holding ``samlib/``)
    when it lies inside one of them, else its file name only, so a report names no machine's folders."""
    if not str(path):
        return ""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    for root in (Path(study_dir), _REPO):
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
    return path.name


_REPO = Path(__file__).resolve().parents[2]


# ============================================================================ notebook helper
def ensure_study(study_dir: str | Path) -> str:
    """`study_dir` as is when it holds a study (study.json or any run); otherwise train a tiny demo
    study there (`samlib.study.cell.demo_study`: two seeds, batch sizes 32 and 256, SGD with and
    without SAM, a few steps; about half a minute) so that the summary notebook runs on its own. A
    folder the study runner made always has study.json, so a real study is never touched."""
    study_dir = Path(study_dir)
    if layout.holds_study(study_dir):
        return str(study_dir)
    from samlib.study.cell import demo_study  # imports TensorFlow

    demo_study(study_dir)
    return str(study_dir)
