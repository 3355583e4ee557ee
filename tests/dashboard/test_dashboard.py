"""The dashboard in a real headless Chromium (Debian's, driven by Playwright; scripts/setup_browser.sh):
the charts render, every tagged number equals its committed result file, and a screenshot is saved."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dashboard.build import build
from dashboard.sources import LADDERS, load, resolve

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "docs/dashboard"


def _chromium() -> str:
    """Debian's chromium; the browser tests skip (saying why) only when it is not installed."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("Debian's chromium is not installed (bash scripts/setup_browser.sh installs it)")
    return path


def _open(page_path: Path, screenshot: Path | None = None) -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth, e.naturalHeight])"
            )
            cells = page.eval_on_selector_all(
                "[data-pointer]",
                "els => els.map(e => [e.dataset.source, e.dataset.pointer, e.dataset.format, e.dataset.value,"
                " e.textContent])",
            )
            text = page.inner_text("body")
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"images": images, "cells": cells, "text": text}


def test_dashboard_charts_render_and_every_number_equals_its_file(tmp_path: Path) -> None:
    page_path = build(REPO, tmp_path / "dashboard")
    shot = tmp_path / "dashboard.png"
    seen = _open(page_path, shot)
    images = seen["images"]
    assert len(images) >= 5  # type: ignore[arg-type]
    for src, complete, width, height in images:  # type: ignore[union-attr]
        assert complete and width > 0 and height > 0, src
    cells = seen["cells"]
    assert cells, "no tagged numbers on the page"
    files: dict[str, object] = {}
    for source, pointer, fmt, value, text in cells:  # type: ignore[union-attr]
        data = files.setdefault(source, json.loads((REPO / source).read_text()))
        expected = resolve(data, pointer)
        assert float(value) == expected, (source, pointer)
        assert text == format(expected, fmt), (source, pointer, text)
    sources = {cell[0] for cell in cells}  # type: ignore[union-attr]
    tables = {"benchmarks/results/overload.json", "plots/pareto.json"}  # per-tenant cost, the pipeline's Pareto
    tables |= {str(path.relative_to(REPO)) for path in (REPO / LADDERS).glob("*/ladder.json")}
    assert tables <= sources, tables - sources  # every committed table source shows its numbers
    body = str(seen["text"])
    for source in sources:  # each source states its hardware, git SHA (or its folder's record of it) and date
        fingerprint = json.loads((REPO / source).read_text())["fingerprint"]
        loaded = load(REPO, source)
        assert loaded is not None and loaded.provenance.git_sha != "unknown", source
        assert loaded.provenance.git_sha in body and fingerprint["timestamp"] in body, source
    assert shot.stat().st_size > 20_000


def test_agent_section_says_none_yet_without_an_agent_file(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "benchmarks/results").mkdir(parents=True)
    shutil.copy(REPO / "benchmarks/results/overload.json", root / "benchmarks/results/overload.json")
    html = build(root, tmp_path / "dashboard").read_text()
    assert 'id="agent-none"' in html and "none yet" in html
    assert "no ladder results committed yet" in html


def test_agent_recommendations_are_listed_when_the_agent_wrote_them(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "benchmarks/results/agent").mkdir(parents=True)
    (root / "benchmarks/results/agent/latest.json").write_text(
        json.dumps(
            {
                "fingerprint": {"git_sha": "abcdef1234567", "timestamp": "2026-11-30T10:00:00+00:00", "cpu_count": 2},
                "outcomes": [
                    {
                        "outcome": "recommendation",
                        "node": "batching",
                        "title": "raise max_batch_size of textcls-premium",
                        "summary": "batch 16: 900 req/s, p99 31 ms",
                        "changes": [
                            {"path": "deployments[textcls-premium].batching.max_batch_size", "old": 8, "new": 16}
                        ],
                    }
                ],
            }
        )
    )
    html = build(root, tmp_path / "dashboard").read_text()
    assert "raise max_batch_size of textcls-premium" in html and "abcdef1234" in html
    assert "deployments[textcls-premium].batching.max_batch_size" in html and "none yet" not in html


def _committed_results(dest: Path) -> Path:
    """The result files as committed (git HEAD): the README's first command rewrites metrics/ and plots/ in the
    work tree with the machine's own numbers, and that must not make the committed page look stale."""
    dest.mkdir()
    archive = subprocess.run(
        ["git", "archive", "HEAD", "metrics", "plots", "benchmarks/results"], cwd=REPO, capture_output=True
    )
    if archive.returncode != 0:  # not a git checkout: the files as they are
        return REPO
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def test_committed_dashboard_is_the_build_of_the_committed_results(tmp_path: Path) -> None:
    fresh = build(_committed_results(tmp_path / "committed"), tmp_path / "dashboard").read_text()
    committed = COMMITTED / "index.html"
    assert committed.is_file(), "docs/dashboard/index.html is missing: run `infopt dashboard build`"
    assert committed.read_text() == fresh, "docs/dashboard is stale: run `infopt dashboard build`"
