"""The study machinery: params file → grid of papermill notebook cells → summary report.

`runner` (``python -m samlib study``), `executors` (where notebooks execute), `grid` (a cell's runs),
`cell` (what a grid notebook does), `report`, `findings`, `figures` (the summary).
"""

from samlib.study.runner import ParamsError, StudyParams, load_params, main, plan_cells, run_study, select_cells, parse_shard

__all__ = ["ParamsError", "StudyParams", "load_params", "main", "plan_cells", "run_study", "select_cells", "parse_shard"]
