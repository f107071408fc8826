"""samlib: does Sharpness-Aware Minimization rescue large-batch training?

The library, one concern per module: `config` (a run's `Config`, `SharpnessSettings`), `validate`
(the one validation scheme), `data` (data sets), `models` (the CNN), `sam` and `looksam` (SAM variants
as Keras models), `evaluation` (the inference-mode evaluator), `milestones` (a run's stop points),
`train` (one run), `rundir` (a run's folder: names, status, load, measure), `measures` (the registry of
sharpness measures) and `sharpness` (computing them), `devices`, `bench`, `io` (atomic writes); `cli`
(``python -m samlib``). The study machinery (params file → grid of
notebook cells → report) is the sub-package `samlib.study`, which the library never imports.
"""

__version__ = "0.1.0"
