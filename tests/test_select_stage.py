"""The select stage's score kinds and budgets, and the report's per-language diagnosis (no Ray: tables only)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from congrad_ray.config import load_filter_config
from congrad_ray.errors import ConfigError
from congrad_ray.pipeline.report import diagnosis_markdown, language_diagnosis
from congrad_ray.pipeline.select_stage import SCORE_SCHEMA, decide
from congrad_ray.pipeline.sketch_codec import encode_sketches, sketch_matrix


def scored_table(gradient, margin, langs):
    n = len(gradient)
    return pa.table(
        {
            "id": [f"p{i:02d}" for i in range(n)],
            "_row": [f"r{i:02d}" for i in range(n)],
            "lang": langs,
            "status": ["ok"] * n,
            "score": pa.array(gradient, pa.float64()),
            "loss": pa.array([0.69] * n, pa.float32()),
            "margin": pa.array([0.0] * n, pa.float32()),
            "policy_margin": pa.array(margin, pa.float32()),
            "n_tokens": pa.array([10] * n, pa.int64()),
        },
        schema=SCORE_SCHEMA,
    )


def cfg(*overrides):
    return load_filter_config(None, list(overrides), check_paths=False)


GRADIENT = [0.9, 0.8, -0.1, -0.2, 0.7, 0.6, 0.5, 0.4]
MARGIN = [-1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1]
LANGS = ["de"] * 4 + ["sw"] * 4


def kept_ids(table):
    return [i for i, k in zip(table.column("id").to_pylist(), table.column("keep").to_pylist()) if k]


def test_score_kinds_rank_by_gradient_margin_or_both():
    t = scored_table(GRADIENT, MARGIN, LANGS)
    assert kept_ids(decide(t, cfg(), ["de", "sw"])) == ["p00", "p01", "p04", "p05"]
    assert kept_ids(decide(t, cfg("score.kind=margin"), ["de", "sw"])) == ["p01", "p02", "p04", "p05"]
    hybrid = decide(t, cfg("score.kind=hybrid", "score.hybrid_weight=0.6"), ["de", "sw"])
    assert kept_ids(hybrid) == ["p01", "p02", "p04", "p05"]  # p00 agrees best but the policy rejects its label
    assert hybrid.column("gradient_score").to_pylist() == GRADIENT


def test_agreement_budgets_move_pairs_away_from_a_conflicting_language():
    t = scored_table(GRADIENT, MARGIN, LANGS)
    c = cfg("selection.budgets=agreement", "selection.budget_floor=0.25")
    d = decide(t, c, ["de", "sw"], agreement={"de": 0.5, "sw": -0.4})
    assert kept_ids(d) == ["p00", "p01", "p02", "p04"]  # sw keeps its floor (1 of 4), de takes the rest


def test_margin_scores_need_a_sketch_store_with_the_policy_margin():
    t = scored_table(GRADIENT, [float("nan")] * 8, LANGS)
    with pytest.raises(ConfigError, match="policy margin"):
        decide(t, cfg("score.kind=hybrid"), ["de", "sw"])


def test_agreement_budgets_with_a_threshold_rule_is_refused():
    with pytest.raises(ConfigError, match="budgets"):
        cfg("selection.budgets=agreement", "selection.rule=threshold")


def test_language_diagnosis_with_and_without_ground_truth():
    d = decide(scored_table(GRADIENT, MARGIN, LANGS), cfg(), ["de", "sw"])
    agreement = {
        "de": {"before": 0.6, "after": 0.7, "others": 0.5},
        "sw": {"before": -0.2, "after": 0.1, "others": -0.4},
    }
    truth = {"p02": True, "p03": True, "p04": True}
    diag = language_diagnosis(d, agreement, truth)
    assert diag["de"]["auroc"] == 1.0 and diag["de"]["conflicting_kept"] == 0
    assert diag["sw"]["auroc"] == 0.0 and diag["sw"]["conflicting_kept"] == 1
    assert (diag["sw"]["n"], diag["sw"]["kept"], diag["sw"]["others"]) == (4, 2, -0.4)
    lines = diagnosis_markdown(diag)
    assert any(line.startswith("| sw | 4 | 2 | -0.20 | +0.10 | -0.40 | 1 (1) |") for line in lines)
    plain = language_diagnosis(d, agreement, None)
    assert "auroc" not in plain["de"] and "separation" not in diagnosis_markdown(plain)[3]
    assert np.isnan(language_diagnosis(d, agreement, {"p02": True, "p03": True})["sw"]["auroc"])


def test_sketch_matrix_is_the_rows_stacked_for_chunked_sliced_and_filtered_columns():
    """The contiguous view of a sketch column against its slow twin, one numpy row per list (np.stack)."""
    v = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    chunks = [pa.FixedSizeListArray.from_arrays(pa.array(v[i : i + 7].ravel()), 8) for i in range(0, 30, 7)]
    column = pa.chunked_array(chunks)
    for view in (column, column.slice(3, 20), column.filter(pa.array(np.arange(30) % 4 != 1))):
        twin = np.stack(view.to_numpy(zero_copy_only=False)).astype(np.float32)
        got = sketch_matrix(view)
        assert got.dtype == np.float32 and got.flags.writeable and np.array_equal(got, twin)


@pytest.mark.parametrize("store_dtype", ["float32", "float16", "bfloat16"])
def test_stored_sketches_decode_to_torchs_own_rounding(store_dtype, tmp_path):
    """Through a Parquet file and back: each store type decodes to what torch's cast to that dtype gives (the slow
    twin), float32 exactly to the sketches; half the bytes for the 16-bit types."""
    import pyarrow.parquet as pq
    import torch

    x = torch.randn(50, 64, generator=torch.Generator().manual_seed(0)) * torch.logspace(-4, 2, 64)
    pq.write_table(pa.table({"sketch": encode_sketches(x, store_dtype)}), tmp_path / "s.parquet")
    column = pq.read_table(tmp_path / "s.parquet").column("sketch")
    twin = x.to(getattr(torch, store_dtype)).to(torch.float32).numpy()
    assert np.array_equal(sketch_matrix(column), twin)
    assert column.type.value_type.byte_width == (4 if store_dtype == "float32" else 2)


def _decide_per_row(scored, cfg, seen, agreement=None):
    """The slow twin of :func:`decide`: one Python object per row (the previous implementation)."""
    from congrad_ray.core import SelectionRule, select
    from congrad_ray.pipeline.select_stage import ranking_scores
    from congrad_ray.pipeline.write_stage import UNSEEN

    status = scored.column("status").to_numpy(zero_copy_only=False)
    langs = scored.column("lang").to_numpy(zero_copy_only=False).astype(str)
    ok = status == "ok"
    trainable = ok & np.isin(langs, seen)
    keep = np.zeros(scored.num_rows, dtype=bool)
    reason = status.astype(object).copy()
    reason[ok & ~trainable] = UNSEEN
    rank = np.full(scored.num_rows, -1, dtype=np.int64)
    gradient = scored.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    ranking = gradient.copy()
    if trainable.any() and seen:
        s = cfg.selection
        rule = SelectionRule(s.rule, s.rho, s.tau, s.top_k, s.min_per_language, cfg.run.seed, s.budgets, s.budget_floor)
        ids = scored.column("id").to_numpy(zero_copy_only=False).astype(str)
        margins = scored.column("policy_margin").to_numpy(zero_copy_only=False).astype(np.float64)
        ranking[trainable] = ranking_scores(gradient[trainable], margins[trainable], langs[trainable], cfg)
        d = select(ranking[trainable], langs[trainable], ids[trainable], rule, agreement)
        keep[trainable], reason[trainable], rank[trainable] = d.keep, d.reason, d.rank
    return (
        scored.set_column(scored.schema.get_field_index("score"), "score", pa.array(ranking, pa.float64()))
        .append_column("gradient_score", pa.array(gradient, pa.float64()))
        .append_column("keep", pa.array(keep))
        .append_column("reason", pa.array(reason.tolist(), pa.string()))
        .append_column("rank", pa.array(rank))
    )


RULES = [
    (),
    ("selection.rule=threshold", "selection.tau=0.1"),
    ("selection.rule=global_top_k", "selection.top_k=7"),
    ("selection.rule=random", "run.seed=3"),
    ("selection.budgets=agreement", "selection.rho=0.3"),
    ("score.kind=hybrid",),
    ("score.kind=margin", "selection.min_per_language=3"),
]


@pytest.mark.parametrize("overrides", RULES, ids=lambda o: "+".join(o) or "default")
def test_columnar_decide_equals_its_per_row_twin(overrides):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    c = cfg(*overrides)
    agreement = {"de": 0.4, "en": 0.9, "fr": -0.2, "sw": 0.1}

    @settings(max_examples=40, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["en", "fr", "de", "sw", "hi"]),
                st.sampled_from(["ok", "ok", "ok", "duplicate_id"]),
                st.sampled_from([-0.5, 0.0, 0.1, 0.25, 0.7]),  # few values: ties, broken by id
                st.floats(-3, 3, allow_nan=False, width=32),
            ),
            min_size=1,
            max_size=60,
        )
    )
    def check(rows):
        n = len(rows)
        table = pa.table(
            {
                "id": [f"p{i:03d}" for i in range(n)],
                "_row": [f"r{i:03d}" for i in range(n)],
                "lang": [r[0] for r in rows],
                "status": [r[1] for r in rows],
                "score": pa.array([r[2] if r[1] == "ok" else None for r in rows], pa.float64()),
                "loss": pa.array([0.69] * n, pa.float32()),
                "margin": pa.array([0.0] * n, pa.float32()),
                "policy_margin": pa.array([r[3] for r in rows], pa.float32()),
                "n_tokens": pa.array([10] * n, pa.int64()),
            },
            schema=SCORE_SCHEMA,
        )
        seen = ["de", "en", "fr", "sw"]
        import pandas as pd

        ours, twin = decide(table, c, seen, agreement), _decide_per_row(table, c, seen, agreement)
        assert ours.schema == twin.schema
        pd.testing.assert_frame_equal(ours.to_pandas(), twin.to_pandas(), check_exact=True)

    check()
