"""Small enough to read: no module under samlib/ over 400 lines and no function over 60 (tests and
notebooks are not counted); the one-cell view that every grid notebook imports loads neither the
answer modules nor scipy (a notebook that shows one cell needs none of the study's statistics)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

SAMLIB = Path(__file__).resolve().parents[1] / "samlib"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _sources() -> list[Path]:
    return sorted(SAMLIB.rglob("*.py"))


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(SAMLIB.parent)): n for p in _sources()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_60_lines():
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(SAMLIB.parent)}:{node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_size_checks_can_fail(tmp_path):
    """The two checks above read what they claim to: a 61-line function is seen as 61 lines."""
    body = "def f():\n" + "    x = 1\n" * 59 + "    return x\n"
    node = ast.parse(body).body[0]
    assert node.end_lineno - node.lineno + 1 == 61


def test_the_cell_view_loads_neither_the_answer_nor_scipy():
    code = "import json, sys\nimport samlib.study.cellview\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    heavy = {"scipy", "samlib.study.findings", "samlib.study.answer", "samlib.study.answer_text",
             "samlib.study.stats", "tensorflow"}
    assert not heavy & loaded, sorted(heavy & loaded)
