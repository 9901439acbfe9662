"""The batched tokenisation the filter's read stage uses, against its slow twin (one pair at a time, as TRL)."""

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
