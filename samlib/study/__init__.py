"""The study machinery: a params file → a grid of papermill notebook cells → the summary report.

`params` (the params file and the plan), `runner` (``python -m samlib study``), `executors` (where
notebooks execute), `layout` (the on-disk contract), `grid` (a cell's runs), `cell` and `cellview`
(what a grid notebook does and shows), `selections` (which runs each comparison uses), `answer_table`
(the answer, regime by regime), `report`, `findings`, `figures` and `plotting` (the summary), `stats`
and `answer` (paired statistics, gap closure, lr slopes), `timing` (where a study's time went).
"""

from samlib.study.params import Cell, NotebookSpec, ParamsError, StudyParams, load_params, parse_shard, plan_cells, select_cells
from samlib.study.runner import CellResult, StudyReport, default_jobs, run_study

__all__ = [
    "Cell", "CellResult", "NotebookSpec", "ParamsError", "StudyParams", "StudyReport", "default_jobs",
    "load_params", "parse_shard", "plan_cells", "run_study", "select_cells",
]
