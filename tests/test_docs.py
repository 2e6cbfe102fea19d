"""The documentation names what the code declares: every stage parameter and every batch-summary
count column is in docs/pipeline.md (read from the code, so a new one fails here until it is written up)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from csst_sls_z.datamodel import ZWarn
from csst_sls_z.stage import RedshiftStage

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _section(text: str, number: str) -> str:
    """The text of section ``number`` ('1.1', '6') of a page: from its heading to the next heading
    of the same or a higher level."""
    level = "##" if "." not in number else "###"
    start = re.search(rf"^{level} {re.escape(number)}[. ]", text, flags=re.M)
    assert start, f"docs/pipeline.md has no section {number}"
    end = re.compile(r"^#{2,%d} " % len(level), flags=re.M).search(text, start.end())
    return text[start.start():end.start() if end else len(text)]


@pytest.fixture(scope="module")
def pipeline_md() -> str:
    return (DOCS / "pipeline.md").read_text()


@pytest.mark.parametrize("name", sorted(RedshiftStage.spec))
def test_every_stage_parameter_is_in_pipeline_md(name, pipeline_md):
    """Section 1.1 (run_stage's **params) names each parameter of the spec; section 1.2 (the hook)
    names the option of each one that has an option."""
    param = RedshiftStage.spec[name]
    assert f"`{name}`" in _section(pipeline_md, "1.1"), f"docs/pipeline.md 1.1 does not name `{name}`"
    if param.option:
        option = "--" + name.replace("_", "-")
        assert f"`{option}`" in _section(pipeline_md, "1.2"), f"docs/pipeline.md 1.2 does not name `{option}`"


def test_every_summary_count_column_is_in_pipeline_md(pipeline_md):
    section = _section(pipeline_md, "6")
    missing = [f"N_{flag.name}" for flag in ZWarn if f"`N_{flag.name}`" not in section]
    assert not missing, f"docs/pipeline.md section 6 does not name {missing}"
