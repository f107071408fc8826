"""The package's shape: no import cycles (function-level imports included), and the on-disk contract
(run-folder layout, file names, status words) spelled in two modules only: a single run's folder in
samlib/rundir.py (the library's), everything above it in samlib/study/layout.py (the study's)."""

from __future__ import annotations

import ast
from pathlib import Path

SAMLIB = Path(__file__).resolve().parents[1] / "samlib"
LAYOUT = SAMLIB / "study" / "layout.py"
RUNDIR = SAMLIB / "rundir.py"

# the on-disk contract: a string constant equal to one of these (or a path holding one) belongs to
# rundir.py (a run's files and status words) or layout.py (the study's)
RUN_STATUS_WORDS = {"running", "ok", "diverged", "collapsed", "failed"}
STATUS_WORDS = RUN_STATUS_WORDS | {"missing", "incomplete", "skipped"}
RUNS = "runs"  # the layout's folder of cells: flagged in a path (``x / "runs"``, ``"runs/..."``), not as a word
LAYOUT_NAMES = {"study.json", "status.json", "kernel.log", "results.csv", "snapshots.csv", "findings.json", "report.html"}
RUN_FILES = {"config.json", "metrics.json", "history.csv", "model.weights.h5"}
# modules allowed to spell a name of the contract besides rundir.py and layout.py (none: the run's files
# are rundir's names everywhere, train.py's included)
EXEMPT: dict[str, set[str]] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SAMLIB.rglob("*.py"):
        parts = list(path.relative_to(SAMLIB.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """samlib modules that `name` imports anywhere in its file (module level, in functions, in ifs)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub, `from mod import name` the module mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def test_no_module_imports_one_that_imports_it_back():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert graph["samlib.cli"] >= {"samlib.study.runner", "samlib.rundir"}  # the walk sees function-level imports
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def _code_strings(path: Path) -> list[tuple[int, str, bool]]:
    """(line, text, is a path operand ``a / "text"``) of a module's string constants, docstrings left
    out (they may describe the layout)."""
    tree = ast.parse(path.read_text())
    docstrings, operands = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            operands |= {id(node.left), id(node.right)}
    return [(n.lineno, n.value, id(n) in operands) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_the_layout_and_status_words_are_spelled_in_layout_py_only():
    offenders = []
    for path in sorted(SAMLIB.rglob("*.py")):
        if path in (LAYOUT, RUNDIR):
            continue
        exempt = EXEMPT.get(path.name, set()) if path.parent == SAMLIB else set()
        for line, text, operand in _code_strings(path):
            parts = text.replace("\\", "/").split("/")
            hits = (({text} | set(parts)) & (STATUS_WORDS | LAYOUT_NAMES | RUN_FILES)) - exempt
            if RUNS in parts and (operand or len(parts) > 1):
                hits.add(RUNS)
            if hits:
                offenders.append(f"{path.relative_to(SAMLIB.parent)}:{line}: {text!r}")
    assert not offenders, "spell these with samlib.rundir's or samlib.study.layout's names:\n" + "\n".join(offenders)
    # and those two do spell them: a run's names in rundir.py, the study's in layout.py
    run_spelled = {text for _, text, _ in _code_strings(RUNDIR)}
    assert RUN_STATUS_WORDS | RUN_FILES <= run_spelled
    spelled = {text for _, text, _ in _code_strings(LAYOUT)}
    assert (STATUS_WORDS - RUN_STATUS_WORDS) | LAYOUT_NAMES | {RUNS} <= spelled
    assert not (run_spelled & spelled & (STATUS_WORDS | RUN_FILES)), "a run's names are spelled in rundir.py only"
