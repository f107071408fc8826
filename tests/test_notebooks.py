"""The notebooks run top to bottom with their default parameters (nbval, lax: only cells marked
``# NBVAL_CHECK_OUTPUT`` are compared with their stored output), and the samlib calls they rely on
keep their promises (tests/test_cell.py: resume, a run killed between training and measuring is
measured, not retrained).

nbval runs on a copy of notebooks/ in a temporary folder, so the defaults' ``../outputs/_nbval`` lands
there: nothing in the repository is written and two test sessions cannot collide.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat


ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("baseline", "lr_scaling", "sam_adam", "sam_sgd", "summary")
THIN_FORBIDDEN = ("def ", "class ", "for ", "while ", "if ", "lambda", "import os", "open(")


def test_notebooks_are_thin_and_parameterised():
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        assert nb.metadata.kernelspec.name == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and code[0] is tagged[0], name
        assert any(c.cell_type == "markdown" for c in nb.cells), name
        assert any("NBVAL_CHECK_OUTPUT" in c.source for c in code), name
        for cell in code[1:]:
            lines = [ln for ln in cell.source.splitlines() if not ln.lstrip().startswith("#")]
            for word in THIN_FORBIDDEN:
                assert not any(word in ln for ln in lines), f"{name}: {word!r} in {cell.source!r}"
        params = tagged[0].source
        assert "_nbval" in params, name  # defaults never write into a real study


def test_notebooks_run_with_their_defaults_under_nbval(tmp_path):
    work = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
         "-q", "-o", "addopts=", "--rootdir", str(tmp_path), str(work)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    # the defaults wrote where they say, and the summary found the other notebooks' runs
    nbval = tmp_path / "outputs" / "_nbval"
    assert (nbval / "report.html").is_file() and (nbval / "results.csv").is_file()
    for name in NAMES[:-1]:
        assert any((nbval / "runs" / name).rglob("metrics.json")), name
