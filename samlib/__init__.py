"""samlib: does Sharpness-Aware Minimization rescue large-batch training?

Modules, one concern each: `config` (run configuration), `data` (data sets), `models` (the CNN),
`sam` (the SAM Keras model), `train` (one run), `sharpness` (sharpness measures), `study` (the grid
runner), `report` (figures and the summary), `bench` (throughput), `cli` (``python -m samlib``).
"""

__version__ = "0.1.0"
