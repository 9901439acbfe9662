"""Row validity (``congrad_ray.core.rows``), the one set of rules of the filter and the DPO step: language codes,
strings that are not UTF-8, completions that tokenise to nothing."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from congrad_ray.config import load_filter_config
from congrad_ray.core.rows import RowRules, canonical_lang, check_row, decode_rows

RULES = RowRules("id", "lang", None, None)
PAIR = {"prompt": "Count 1 to 3:", "chosen": " 1 2 3", "rejected": " 3 2 1"}


@pytest.mark.parametrize(
    "written, canonical",
    [
        ("en", "en"),
        ("EN", "en"),
        (" EN ", "en"),
        ("en_us", "en-US"),
        ("PT-br", "pt-BR"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("ZH-HANS", "zh-Hans"),
        ("es-419", "es-419"),
        ("sr-latn-RS", "sr-Latn-RS"),
        ("en-x-Private-AB", "en-x-private-ab"),
        ("i-KLINGON", "i-klingon"),
    ],
)
def test_language_codes_take_bcp47_case(written, canonical):
    assert canonical_lang(written) == canonical


@given(
    st.lists(
        st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=8),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["-", "_"]),
    st.sampled_from(["", " ", "\t"]),
)
def test_canonical_lang_is_idempotent_and_ignores_case_padding_and_separator(parts, sep, pad):
    code = "-".join(parts)
    once = canonical_lang(code)
    assert canonical_lang(once) == once
    assert canonical_lang(pad + sep.join(parts).swapcase() + pad) == once


def test_check_row_reads_languages_canonically():
    ids = {check_row({**PAIR, "lang": lang}, RULES)[:2] for lang in ("EN", " en ", "en")}
    assert len(ids) == 1 and next(iter(ids))[1] == "en"  # one language, and one derived id
    known = RowRules("id", "lang", frozenset({"en"}), None)
    assert check_row({**PAIR, "lang": " EN "}, known)[2] is None
    assert check_row({**PAIR, "lang": 7}, RULES)[2] == "wrong_type_lang"


def test_config_languages_are_canonicalised_too():
    cfg = load_filter_config(None, ["languages.seen=[EN, pt_br]", "languages.unseen=[' HI ']"], check_paths=False)
    assert (cfg.languages.seen, cfg.languages.unseen) == (["en", "pt-BR"], ["hi"])


def _bad_utf8(values: list[bytes]) -> pa.Array:
    return pa.array(values, pa.binary()).view(pa.string())  # pyarrow does not validate: as a Parquet file reads


def test_decode_rows_finds_the_rows_with_invalid_utf8_in_any_column():
    messages = pa.array([[{"role": "user", "content": "fine"}]] * 3).cast(
        pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    )
    table = pa.table(
        {"prompt": _bad_utf8([b"ok", b"bad \xff", b"ok"]), "n": [1, 2, 3], "extra": _bad_utf8([b"x", b"y", b"\xfe"])}
    )
    table = table.append_column("messages", messages)
    rows, reasons = decode_rows(table)
    assert reasons == [None, "invalid_utf8_prompt", "invalid_utf8_extra"]
    assert rows[0]["prompt"] == "ok" and rows[1] is None and rows[2] is None
    assert decode_rows(table.slice(0, 1)) == ([rows[0]], [None])


def test_the_filter_quarantines_invalid_utf8_rows(tmp_path, tiny_dir):
    """Stage A on one unit (no Ray): the row with a bad string gets its reason, the others are prepared."""
    from congrad_ray.pipeline.prepare import PrepareSpec, prepare_unit
    from congrad_ray.pipeline.units import plan_units
    from congrad_ray.storage import Location

    table = pa.table(
        {
            "prompt": _bad_utf8([b"Count 1 to 3:", b"Count \xc3\x28 to 3:", b"Count 2 to 4:"]),
            "chosen": [" 1 2 3", " 1 2 3", " 2 3 4"],
            "rejected": [" 3 2 1", " 3 2 1", " 4 3 2"],
            "lang": ["EN", "en", "en"],
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    units, _ = plan_units([Location.of(str(tmp_path / "in.parquet"))], 100, "lang")
    spec = PrepareSpec(RULES, (0, 2), str(tmp_path / "run"))
    prepared = prepare_unit(units[0], spec)
    status = pq.read_table(tmp_path / "run" / "rows" / f"{units[0].name}.parquet").to_pylist()
    assert [s["reason"] for s in status] == [None, "invalid_utf8_prompt", None]
    assert [s["lang_input"] for s in status] == ["EN", None, None]
    assert prepared.num_rows == 2 and set(prepared.column("lang").to_pylist()) == {"en"}


def _no_assistant_template(tiny_dir, tmp_path):
    """A checkpoint whose chat template renders no assistant turn: completions tokenise to nothing."""
    out = tmp_path / "model"
    shutil.copytree(tiny_dir, out)
    (out / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] != 'assistant' %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return out


def test_an_empty_completion_is_refused_by_the_filter_and_the_dpo_step_alike(tmp_path, tiny_dir):
    from congrad_ray.models import load_tokenizer
    from congrad_ray.pipeline.prepare import PrepareSpec, prepare_unit, tokenize_prepared
    from congrad_ray.pipeline.units import plan_units
    from congrad_ray.storage import Location
    from congrad_ray.train.data import REASON, prepare_rows
    from congrad_ray.train.data import PrepareSpec as TrainSpec

    model = _no_assistant_template(tiny_dir, tmp_path)
    user = [{"role": "user", "content": "Count 1 to 2"}]
    table = pa.table(
        {
            "prompt": [user],
            "chosen": [[{"role": "assistant", "content": " 1 2"}]],
            "rejected": [[{"role": "assistant", "content": " 2 1"}]],
            "lang": ["en"],
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    units, _ = plan_units([Location.of(str(tmp_path / "in.parquet"))], 100, "lang")
    prepared = prepare_unit(units[0], PrepareSpec(RULES, (0, 1), str(tmp_path / "run")))
    status = pq.read_table(tmp_path / "run" / "rows" / f"{units[0].name}.parquet")
    assert status.column("reason").to_pylist() == [None]  # the row checks pass: the tokens are the sketch actor's
    _, reasons = tokenize_prepared(load_tokenizer(str(model)), prepared, 64, "keep_start")
    train = prepare_rows(table, TrainSpec(str(model), None, False, "id", "lang", 64, "keep_start"), "train")
    assert reasons == train.column(REASON).to_pylist() == ["empty_completion"]
