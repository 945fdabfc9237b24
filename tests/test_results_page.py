"""docs/results.md and the README's result blocks are what the results JSON give: a figure lives once,
in its JSON, and is never typed by hand (scripts/results_page.py renders them)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_results_page_and_readme_blocks_are_up_to_date(capsys):
    pytest.importorskip("matplotlib")  # the demo's table code needs apl[train]
    from scripts.results_page import main

    assert main(["--check"]) == 0, capsys.readouterr().err


def test_no_figure_of_the_results_is_typed_in_the_prose():
    """A figure that the results JSON hold (a MAP@R with four decimals, a speed ratio) appears in the
    docs only inside generated blocks and docs/results.md."""
    from scripts.results_page import page

    generated = set(re.findall(r"\b0\.\d{4}\b", page())) | set(re.findall(r"\b\d+\.\d\dx\b", page()))
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if path.name == "results.md":
            continue
        text = re.sub(r"<!-- results:(\S+) -->.*?<!-- /results:\1 -->", "", path.read_text(), flags=re.S)
        typed = generated & (set(re.findall(r"\b0\.\d{4}\b", text)) | set(re.findall(r"\b\d+\.\d\dx\b", text)))
        assert not typed, f"{path.name} types figures that live in the results JSON: {sorted(typed)[:5]}"
