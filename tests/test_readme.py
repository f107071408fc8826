"""The README and the docs pages quote the committed studies' answer tables; each quoted table must be
what the studies' committed findings.json give (and the test recomputing findings.json from the
committed runs is in tests/test_report.py), so a quoted number cannot drift from the runs it comes from.

Two block forms, in README.md and in every docs/**/*.md page (not docs/results/, the studies' own files);
study paths are relative to the repository root:

- the full table, one study or several side by side:
  ``<!-- answer-table: docs/results/a docs/results/b -->`` ... ``<!-- /answer-table -->``
  (`samlib.study.answer_text.answer_table_markdown` of `samlib.study.answer.side_by_side`);
- a compact table, one row per regime: ``<!-- answer-rows: docs/results/a docs/results/b | columns=C,... -->``
  ... ``<!-- /answer-rows -->`` (`samlib.study.answer_text.answer_rows_markdown`: the column forms are in its docstring);
- the remedies table's key rows of one study: ``<!-- remedies-rows: docs/results/a -->`` ... ``<!-- /remedies-rows -->``
  (`samlib.study.remedies.remedies_rows_markdown` of its findings' ``remedies``).
"""

import json
import re
from pathlib import Path

from samlib.study.answer import side_by_side
from samlib.study.answer_text import answer_rows_markdown, answer_table_markdown
from samlib.study.remedies import remedies_rows_markdown

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"<!-- answer-table: (?P<studies>[^>|]+?) -->\n(?P<table>.*?)\n<!-- /answer-table -->", re.S)
ROWS = re.compile(r"<!-- answer-rows: (?P<studies>[^>|]+?) \| columns=(?P<columns>[^\s>]+) -->\n"
                  r"(?P<table>.*?)\n<!-- /answer-rows -->", re.S)
REMEDIES = re.compile(r"<!-- remedies-rows: (?P<study>[^>\s]+) -->\n(?P<table>.*?)\n<!-- /remedies-rows -->", re.S)

# ---------------------------------------------------------------------- the pages
def pages() -> list[Path]:
    """README.md and the docs pages (docs/**/*.md, not the studies' files under docs/results/)."""
    docs = [p for p in sorted(DOCS.rglob("*.md")) if (DOCS / "results") not in p.parents]
    return [ROOT / "README.md", *docs]


def studies_table(studies: str) -> list[dict]:
    """The answer table of the studies a marker names, side by side."""
    tables = []
    for study in studies.split():
        findings = json.loads((ROOT / study / "findings.json").read_text())
        assert findings["answer_table"], f"{study} has an empty answer table"
        tables.append(findings["answer_table"])
    return side_by_side(tables)


def test_every_full_answer_table_quoted_is_its_committed_studies():
    quoted = 0
    for page in pages():
        for block in BLOCK.finditer(page.read_text()):
            quoted += 1
            expected = answer_table_markdown(studies_table(block["studies"]))
            assert block["table"] == expected, f"{page.relative_to(ROOT)}: {block['studies']}"
    assert quoted, "no page quotes a full answer table (<!-- answer-table: docs/results/<study> --> ...)"


def test_every_compact_answer_table_quoted_is_its_committed_studies():
    quoted = 0
    for page in pages():
        for block in ROWS.finditer(page.read_text()):
            quoted += 1
            expected = answer_rows_markdown(studies_table(block["studies"]), block["columns"].split(","))
            assert block["table"] == expected, f"{page.relative_to(ROOT)}: {block['studies']} | {block['columns']}"
    assert quoted, "no page quotes a compact answer table (<!-- answer-rows: ... | columns=... -->)"


def test_every_remedies_table_quoted_is_its_committed_studys_and_the_readme_quotes_every_remedies_curve():
    quoted = set()
    for page in pages():
        for block in REMEDIES.finditer(page.read_text()):
            table = json.loads((ROOT / block["study"] / "findings.json").read_text())["remedies"]
            assert table, f"{block['study']} has an empty remedies table"
            assert block["table"] == remedies_rows_markdown(table), f"{page.relative_to(ROOT)}: {block['study']}"
            if page.name == "README.md":
                quoted.add(block["study"])
    curves = {f"docs/results/{p.name}" for p in (DOCS / "results").glob("*remedies_curve") if (p / "findings.json").is_file()}
    assert curves <= quoted, f"the README does not quote the remedies of {sorted(curves - quoted)}"


def test_the_full_table_lives_on_the_results_page_and_the_readme_quotes_the_compact_one():
    assert BLOCK.search((DOCS / "results.md").read_text()), "docs/results.md quotes no full answer table"
    assert ROWS.search((ROOT / "README.md").read_text()), "the README quotes no compact answer table"


def test_the_readme_opens_with_the_question_then_the_answer_then_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert readme.startswith("# samlib — does Sharpness-Aware Minimization rescue large-batch training?\n")
    sections = re.findall(r"^## .*$", readme, re.M)
    assert sections[:2] == ["## The answer", "## Two commands"], sections
    answer = readme[readme.index("## The answer"):readme.index("## Two commands")]
    assert ROWS.search(answer), "the answer section quotes no compact answer table"
    assert "make study" in readme and "make test" in readme


def test_the_readmes_links_lead_to_files_that_exist():
    """mkdocs --strict checks the docs pages' links; the README is not one of them."""
    readme = (ROOT / "README.md").read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme)]
    missing = [t for t in targets if t and "://" not in t and not (ROOT / t).exists()]
    assert not missing, f"the README links to files that do not exist: {missing}"


def test_the_readmes_keras_example_runs(tmp_path, monkeypatch):
    """The README's SAM example, as printed, trains, evaluates and saves on its random data."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 1, "the README should hold one Python example"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    assert set(scope["history"].history) >= {"loss", "grad_norm", "perturbation_norm"}
    assert (tmp_path / "model.keras").is_file()
