"""The README's numbers are generated from the committed result files; this fails when the two disagree."""

from __future__ import annotations

from pathlib import Path

from benchmarks.readme_numbers import BEGIN, END, render

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_numbers_block_matches_the_result_files() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "README.md lost its numbers markers"
    block = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert block == render(), "README numbers are stale: run `python -m benchmarks.readme_numbers --write`"


def test_every_table_cites_its_source_file() -> None:
    for paragraph in render().split("\n\n"):
        if paragraph.startswith("**"):
            assert "`metrics/" in paragraph or "`benchmarks/results/" in paragraph, paragraph[:80]
