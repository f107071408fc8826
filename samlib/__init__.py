"""samlib: does Sharpness-Aware Minimization rescue large-batch training?

The library, one concern per module: `config` (a run's `Config`, `SharpnessSettings`), `validate`
(the one validation scheme, its errors), `data` (data sets) and `idx` (IDX files), `models` (the CNN),
`sam` and `looksam` (SAM variants as Keras models), `optimizers` (the registries of base optimizers and
SAM modes, the warm-up schedule), `evaluation` (the inference-mode evaluator), `milestones` (a run's
stop points), `monitor` (the callback that checks, stops and snapshots a run), `train` (one run, step
by step), `rundir` (a run's folder: names, status, load, measure), `measures` (the registry of
sharpness measures), `objective` (the loss as a function of the weights), `sharpness` (the measures)
and `interpolation`, `devices`, `bench`, `io` (atomic writes, lenient numbers); `cli`
(``python -m samlib``). The study machinery (params file → grid of notebook cells → report) is the
sub-package `samlib.study`, which the library never imports.
"""

__version__ = "0.1.0"
