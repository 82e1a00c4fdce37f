"""The operator's guide describes what the Makefile does (issue 23, point 11)."""

from __future__ import annotations

import re
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
