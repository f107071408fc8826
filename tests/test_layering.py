"""The library half stands alone: the library modules (config, validate, data, idx, models, sam,
looksam, optimizers, sharpness, objective, interpolation, measures, milestones, monitor, train, rundir,
devices, io, evaluation, bench, cli's library commands) import nothing from the study machinery,
`samlib.study`, nor its third-party stack (papermill, Dask, plotting, notebooks); and a config, with the
registries it reads (`samlib.measures`, `samlib.optimizers`), loads no TensorFlow."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

SAMLIB = Path(__file__).resolve().parents[1] / "samlib"
STUDY_STACK = ("papermill", "dask", "distributed", "seaborn", "nbformat", "ipykernel", "tqdm")
# the only functions outside samlib/study that may import it: the study's own commands in the CLI
STUDY_COMMANDS = {"cli.py": {"_study", "_add_study", "_report"}}


def test_importing_the_library_loads_neither_the_study_nor_its_stack():
    code = (
        "import json, sys\n"
        "import samlib.sam, samlib.looksam, samlib.train, samlib.sharpness, samlib.rundir, samlib.cli\n"
        "import samlib.optimizers, samlib.monitor, samlib.idx, samlib.objective, samlib.interpolation\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    roots = {name.split(".")[0] for name in loaded}
    assert not roots & set(STUDY_STACK), sorted(roots & set(STUDY_STACK))
    assert not [m for m in loaded if m == "samlib.study" or m.startswith("samlib.study.")]


def _study_imports(tree: ast.AST) -> list[tuple[int, str | None]]:
    """(line, enclosing function or None) of every `import samlib.study...` / `from samlib.study...`
    (relative forms included) in a module outside samlib/study."""
    found = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Import):
                if any(a.name == "samlib.study" or a.name.startswith("samlib.study.") for a in child.names):
                    found.append((child.lineno, function))
            elif isinstance(child, ast.ImportFrom):
                module = child.module or ""
                absolute = module if not child.level else "samlib." + module  # in samlib/*.py, "." is samlib
                if (absolute == "samlib.study" or absolute.startswith("samlib.study.")
                        or (absolute in ("samlib", "samlib.") and any(a.name == "study" for a in child.names))):
                    found.append((child.lineno, function))
            visit(child, name)

    visit(tree, None)
    return found


def test_no_library_module_imports_the_study():
    offenders = []
    for path in sorted(SAMLIB.rglob("*.py")):
        if (SAMLIB / "study") in path.parents:
            continue
        allowed = STUDY_COMMANDS.get(str(path.relative_to(SAMLIB)), set())
        for line, function in _study_imports(ast.parse(path.read_text())):
            if function not in allowed:
                offenders.append(f"{path.relative_to(SAMLIB.parent)}:{line} (in {function or 'the module'})")
    assert not offenders, "the library imports samlib.study:\n" + "\n".join(offenders)


def test_the_import_walk_sees_the_study_commands_imports():
    """The check above is not vacuous: it finds the study commands' own (lazy) imports in cli.py."""
    functions = {f for _, f in _study_imports(ast.parse((SAMLIB / "cli.py").read_text()))}
    assert {"_study", "_add_study", "_report"} <= functions
    assert None not in functions  # none at module level


def test_a_run_folder_is_written_and_read_with_the_library_alone(tmp_path):
    """samlib.rundir, the library's half of the on-disk contract, needs no study module."""
    code = (
        "import json, sys\n"
        "from samlib import optimizers, rundir\n"
        "from samlib.config import Config\n"
        f"run = {str(tmp_path)!r}\n"
        "cfg = Config.from_dict({'steps': 1})\n"
        "print(json.dumps([rundir.is_complete(run, cfg), rundir.read_metrics(run),\n"
        "                  sorted(m for m in sys.modules if m.startswith(('samlib.study', 'tensorflow', 'keras')))]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, {}, []]  # and no TensorFlow or Keras either
