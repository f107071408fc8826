"""samlib: does Sharpness-Aware Minimization rescue large-batch training?

The library, one concern per module: `config` (a run's `Config`, `SharpnessSettings`), `data` (data
sets), `models` (the CNN), `sam` and `looksam` (SAM variants as Keras models), `train` (one run),
`rundir` (a run's folder: names, status, load, measure), `sharpness` (sharpness measures), `devices`,
`bench`, `io` (atomic writes); `cli` (``python -m samlib``). The study machinery (params file → grid of
notebook cells → report) is the sub-package `samlib.study`, which the library never imports.
"""

__version__ = "0.1.0"
