"""The study machinery: a params file → a grid of papermill notebook cells → the summary report.

Planning and running: `params` (the params file and the plan), `runner` (``python -m samlib study``),
`executors` (where notebooks execute), `layout` (the on-disk contract), `grid` (a cell's runs), `cell`
and `cellview` (what a grid notebook does and shows), `tuning` (a tuning cell's self-extending lr grid).
From runs to the answer: `tables` (results.csv and snapshots.csv rows), `selections` (which runs each
comparison uses), `stats` (every statistic), `answer` (the answer in numbers), `answer_text` (in
words), `curve` (the batch-size curve and its fit), `findings` (findings.json, assembled), `details`
(the report's bullets), `timing` (where a study's time went). The summary: `figures`, `more_figures`,
`curve_figures` and `plotting`, and `report`.
"""

from samlib.study.params import Cell, NotebookSpec, ParamsError, StudyParams, load_params, parse_shard, plan_cells, select_cells
from samlib.study.runner import CellResult, StudyReport, default_jobs, run_study

__all__ = [
    "Cell", "CellResult", "NotebookSpec", "ParamsError", "StudyParams", "StudyReport", "default_jobs",
    "load_params", "parse_shard", "plan_cells", "run_study", "select_cells",
]
