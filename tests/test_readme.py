"""The README quotes the committed studies' answer tables; each quoted table must be what the study's
committed findings.json gives (and the test recomputing findings.json from the committed runs is in
tests/test_report.py), so a README number cannot drift from the runs it comes from."""

import json
import re
from pathlib import Path

from samlib.study.answer_table import side_by_side
from samlib.study.report import answer_table_markdown

ROOT = Path(__file__).resolve().parents[1]
# one block quotes one study, or several side by side: <!-- answer-table: docs/results/a docs/results/b -->
BLOCK = re.compile(r"<!-- answer-table: (?P<studies>[^>]+?) -->\n(?P<table>.*?)\n<!-- /answer-table -->", re.S)


def test_every_answer_table_the_readme_quotes_is_its_committed_studys():
    readme = (ROOT / "README.md").read_text()
    blocks = list(BLOCK.finditer(readme))
    assert blocks, "the README quotes no answer table (<!-- answer-table: docs/results/<study> --> ... )"
    for block in blocks:
        tables = []
        for study in block["studies"].split():
            findings = json.loads((ROOT / study / "findings.json").read_text())
            assert findings["answer_table"], f"{study} has an empty answer table"
            tables.append(findings["answer_table"])
        assert block["table"] == answer_table_markdown(side_by_side(tables)), block["studies"]


def test_the_readme_opens_with_the_answer_table():
    readme = (ROOT / "README.md").read_text()
    answer = readme.index("## The answer")
    assert readme.index("<!-- answer-table:") > answer
    assert all(readme.index(h) > answer for h in ("## Two commands", "## Layout", "## The protocol"))
