"""The README quotes the committed studies' answer tables; each quoted table must be what the study's
committed findings.json gives (and the test recomputing findings.json from the committed runs is in
tests/test_report.py), so a README number cannot drift from the runs it comes from."""

import json
import re
from pathlib import Path

from samlib.study.report import answer_table_markdown

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- answer-table: (?P<study>\S+) -->\n(?P<table>.*?)\n<!-- /answer-table -->", re.S)


def test_every_answer_table_the_readme_quotes_is_its_committed_studys():
    readme = (ROOT / "README.md").read_text()
    blocks = list(BLOCK.finditer(readme))
    assert blocks, "the README quotes no answer table (<!-- answer-table: docs/results/<study> --> ... )"
    for block in blocks:
        findings = json.loads((ROOT / block["study"] / "findings.json").read_text())
        assert findings["answer_table"], f"{block['study']} has an empty answer table"
        assert block["table"] == answer_table_markdown(findings["answer_table"]), block["study"]


def test_the_readme_opens_with_the_answer_table():
    readme = (ROOT / "README.md").read_text()
    answer = readme.index("## The answer")
    assert readme.index("<!-- answer-table:") > answer
    assert all(readme.index(h) > answer for h in ("## Two commands", "## Layout", "## The protocol"))
