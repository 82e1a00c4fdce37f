"""The operator's guide describes what the Makefile does (issue 23, point 11)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]


def test_deploy_guide_names_exactly_what_make_lint_sets_for_check_deploy() -> None:
    makefile = (BASE_DIR / "Makefile").read_text()
    lint = makefile[makefile.index("\nlint:") : makefile.index("\n\n", makefile.index("\nlint:"))]
    command = lint[lint.index("env -u DJANGO_DEBUG") :]
    assert "check --deploy" in command
    set_by_make = set(re.findall(r"\b([A-Z][A-Z0-9_]+)=", command))

    guide = (BASE_DIR / "docs" / "deploy.md").read_text()
    section = guide[guide.index("## 15.") :]
    sentence = section[section.index("`make lint`") :]
    sentence = sentence[: sentence.index('"no issues"')]
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", sentence.split("set,")[0]))

    assert named == set_by_make, (named, set_by_make)
    assert "`DJANGO_DEBUG` unset" in " ".join(sentence.split())


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=BASE_DIR, capture_output=True, text=True, check=True
    ).stdout.split()
    suffixes = {".py", ".md", ".html", ".txt", ".conf", ".sh", ".sql", ".toml", ".java"}
    return [BASE_DIR / name for name in listed if Path(name).suffix in suffixes]


def test_no_reference_points_outside_the_repository() -> None:
    """The design lives in docs/architecture.md: nothing cites a file the repository lacks."""
    outside = re.compile(r"DESIGN\.md|DESIGN §|\.\./shared/|STYLE\.md")
    found = [
        f"{path.relative_to(BASE_DIR)}:{number}"
        for path in _tracked_text_files()
        if path.exists() and path.name != "test_docs.py"
        for number, line in enumerate(path.read_text("utf-8", "replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert found == []


def test_every_section_the_code_cites_exists_in_the_architecture_document() -> None:
    architecture = (BASE_DIR / "docs" / "architecture.md").read_text("utf-8")
    sections = set(re.findall(r"^## (.+)$", architecture, re.M))
    # A citation may wrap onto the next comment or docstring line: join lines first.
    cited = {
        name
        for path in _tracked_text_files()
        if path.exists()
        for name in re.findall(
            r"docs/architecture\.md,? « ([^»]+) »",
            re.sub(r"\s*\n\s*(?:#:?\s*)?", " ", path.read_text("utf-8", "replace")),
        )
    }
    assert cited
    assert cited <= sections, cited - sections
