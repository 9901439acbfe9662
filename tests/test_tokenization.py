"""The batched tokenisation the filter's sketch actors use, against its slow twin (one pair at a time, as TRL), and
the prepared rows' round trip through the group-by (text, or a conversation as JSON) back to the same tokens."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from congrad_ray.tokenization import tokenize_pair, tokenize_pairs
from tests.conftest import MIXED_PAIRS

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)


def test_batched_equals_one_by_one_on_mixed_scripts_and_chat_rows(tokenizer):
    chat = (
        [{"role": "user", "content": "Count from 3 to 5."}],
        [{"role": "assistant", "content": "3 4 5"}],
        [{"role": "assistant", "content": "5 4 3"}],
    )
    rows = [*MIXED_PAIRS, chat, MIXED_PAIRS[0], (MIXED_PAIRS[1][0], MIXED_PAIRS[1][1] + tokenizer.eos_token, "x")]
    assert tokenize_pairs(tokenizer, rows) == [tokenize_pair(tokenizer, *row) for row in rows]
    assert tokenize_pairs(tokenizer, []) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(TEXT, TEXT, TEXT), min_size=1, max_size=8))
def test_batched_equals_one_by_one_on_any_text(tokenizer, rows):
    assert tokenize_pairs(tokenizer, rows) == [tokenize_pair(tokenizer, *row) for row in rows]


def test_prepared_rows_tokenise_as_the_input_rows_do(tmp_path, tokenizer):
    """Rows go through the shuffle as text (a conversation as JSON); the actor's :func:`tokenize_prepared` gives
    the tokens the input rows have, and :func:`check_tokens`'s reason for a prompt that leaves no completion."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from congrad_ray.core.rows import RowRules, check_tokens
    from congrad_ray.pipeline.prepare import PrepareSpec, prepare_unit, tokenize_prepared
    from congrad_ray.pipeline.units import plan_units
    from congrad_ray.storage import Location

    chat = (
        [{"role": "user", "content": "Count from 3 to 5."}],
        [{"role": "assistant", "content": "3 4 5"}],
        [{"role": "assistant", "content": "5 4 3"}],
    )
    long_prompt = (" ".join(["word"] * 80), " yes", " no")
    for name, rows in (("plain", [*MIXED_PAIRS[:3], long_prompt]), ("chat", [chat])):
        table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(("prompt", "chosen", "rejected"))})
        table = table.append_column("lang", pa.array(["en"] * len(rows)))
        pq.write_table(table, tmp_path / f"{name}.parquet")
        units, _ = plan_units([Location.of(str(tmp_path / f"{name}.parquet"))], 100, "lang")
        spec = PrepareSpec(RowRules("id", "lang", None, None), (0, 1), str(tmp_path / name))
        prepared = prepare_unit(units[0], spec).sort_by("_row")
        pairs, reasons = tokenize_prepared(tokenizer, prepared, 32, "keep_start")
        expected = [tokenize_pair(tokenizer, *row) for row in rows]
        assert pairs == expected, name
        lens = [(len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)) for p in expected]
        assert reasons == [check_tokens(*n, 32, "keep_start") for n in lens], name
        assert reasons[-1] == ("prompt_too_long" if name == "plain" else None), name
