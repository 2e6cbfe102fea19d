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


# ---------------------------------------------------------------- commands written in the docs
COMMAND = re.compile(r"python (?:-m (?P<module>benchmarks)|(?P<script>[\w./-]+\.py))(?P<args>[^`\n|]*)")


def _doc_commands():
    root = DOCS.parent
    for page in [root / "README.md", *sorted(DOCS.glob("*.md")), *sorted(DOCS.glob("*/*.md"))]:
        for line in page.read_text().splitlines():
            for m in COMMAND.finditer(line):
                yield page.relative_to(root), m


def test_every_script_the_docs_run_exists_and_takes_the_options_given():
    """``python path/x.py --opt ...`` in README.md and docs/: the file exists and defines each
    ``--opt`` (as text in its source: argparse's ``"--opt"``)."""
    root = DOCS.parent
    seen, wrong = 0, []
    for page, m in _doc_commands():
        script = m["script"]
        if not script or script.startswith("/") or Path(script).stem.isupper():   # absolute, or a placeholder
            continue
        path = root / script
        if not path.is_file():
            wrong.append(f"{page}: `python {script}` names no file")
            continue
        source = path.read_text()
        wrong += [f"{page}: {script} has no option {option}"
                  for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", m["args"]) if option != "--help" and f'"{option}"' not in source]
        seen += 1
    assert not wrong, "\n".join(wrong)
    assert seen > 30


def test_every_benchmark_the_docs_name_is_registered():
    from benchmarks.suite import REGISTRY, parser
    options = {o for a in parser()._actions for o in a.option_strings}
    seen = 0
    for page, m in _doc_commands():
        if not m["module"]:
            continue
        words = m["args"].split()
        for k, word in enumerate(words):
            if word.startswith("--"):
                assert word in options, f"{page}: python -m benchmarks has no option {word}"
            elif re.fullmatch(r"[a-z_0-9]+", word) and not (k and words[k - 1] in ("--out", "--workdir")):
                assert word in REGISTRY, f"{page}: python -m benchmarks names no benchmark {word!r}"
        seen += 1
    assert seen >= 5
