"""The filter report as a person reads it: ground-truth counts (against a slow twin), the Markdown tables rendered
as real tables, a self-contained HTML page, and that page opened in headless Chromium."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from congrad_ray.core import conflict_rate, conflict_removal
from tests.browser import inspect_page, screenshot
from tests.report_helpers import FLIPPED, LANGS, PAIRS, synthetic_report

OUTCOMES = ("kept", "dropped", "invalid", "unseen")
cell = st.tuples(st.sampled_from(OUTCOMES), st.sampled_from(["de", "en", "sw"]), st.sampled_from([True, False, None]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(cell, st.integers(0, 5)), max_size=30))
def test_conflict_removal_agrees_with_the_rate_of_the_expanded_pairs(cells):
    counts = [(o, lang, flag, n) for (o, lang, flag), n in cells]
    got = conflict_removal(counts)
    # the slow twin: one flag per pair, rates by core's conflict_rate
    pairs = [(o, lang, flag) for o, lang, flag, n in counts for _ in range(n) if o in ("kept", "dropped")]
    pairs = [p for p in pairs if p[2] is not None]
    for lang in sorted({p[1] for p in pairs}) + ["total"]:
        mine = [p for p in pairs if lang in ("total", p[1])]
        kept = [p[2] for p in mine if p[0] == "kept"]
        dropped = [p[2] for p in mine if p[0] == "dropped"]
        g = got[lang]
        assert g["pairs"] == len(mine) and g["kept"] == len(kept)
        assert g["conflicts_dropped"] == sum(dropped) and g["clean_dropped"] == len(dropped) - sum(dropped)
        for key, flags in (("input_rate", kept + dropped), ("kept_rate", kept)):
            expected = conflict_rate(flags)["rate"]
            assert (g[key] is None) == (not flags) and (not flags or g[key] == pytest.approx(expected))
        if g["conflicts"]:
            assert g["conflicts_removed"] == pytest.approx(sum(dropped) / (sum(kept) + sum(dropped)))
    assert list(got)[-1] == "total" and list(got)[:-1] == sorted({p[1] for p in pairs})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    built = synthetic_report(run)
    return run / "report", built


def test_summary_html_is_self_contained_with_real_tables(report):
    directory, built = report
    page = (directory / "summary.html").read_text()
    assert "|---" not in page and "<table>" in page and page.count("<thead>") == 4
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http" not in page.replace("https://", "")  # nothing to fetch
    for name in ("conflict_heatmap.png", "score_histograms.png", "kept_fraction.png", "conflict_rates.png"):
        assert (directory / name).stat().st_size > 0
    truth = built["truth"]["per_language"]
    assert truth["de"]["conflicts"] == FLIPPED["de"] * PAIRS and truth["sw"]["conflicts"] == PAIRS
    assert "Ground truth" in (directory / "summary.md").read_text()


def test_summary_html_in_a_real_browser(report, tmp_path):
    directory, built = report
    page = inspect_page(directory / "summary.html", tmp_path)
    assert len(page["images"]) == 4
    assert all(i["complete"] and i["width"] > 0 for i in page["images"]), page["images"]
    outcomes, truth, reasons, diagnosis = page["tables"]
    assert outcomes["head"] == [["language", "kept", "dropped", "invalid", "kept fraction"]]
    assert [r[0] for r in outcomes["rows"]] == [*LANGS, "total"]
    counts = built["counts"]
    assert outcomes["rows"][-1][1:4] == [f"{counts['totals'][k]:,}" for k in ("kept", "dropped", "invalid")]
    assert truth["head"][0][:3] == ["language", "pairs", "known conflicts"]
    total = built["truth"]["per_language"]["total"]
    assert truth["rows"][-1][2] == f"{total['conflicts']:,}"
    assert reasons["head"] == [["reason", "rows"]] and len(reasons["rows"]) == len(counts["reasons"])
    # the per-language diagnosis, with what ground truth says of the scores
    assert (
        diagnosis["head"][0][:3] == ["language", "scored", "kept"] and diagnosis["head"][0][-1] == "separation (AUROC)"
    )
    assert [r[0] for r in diagnosis["rows"]] == list(LANGS)
    sw = diagnosis["rows"][LANGS.index("sw")]
    assert sw[1] == str(PAIRS) and sw[6].startswith(f"{PAIRS} (")
    text = page["text"]
    assert f"Input rows: {counts['input_rows']:,}" in text
    assert f"dropped {total['conflicts_dropped']:,} of the {total['conflicts']:,} known conflicting pairs" in text
    shot = screenshot(directory / "summary.html", tmp_path / "summary.png")
    assert shot.stat().st_size > 10_000
