"""Pure pieces of the DPO step (no Ray): per-language reward statistics, row checks, deterministic shards."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch

from congrad_ray.core import DPOParams, DPOTerms, group_stats, lp_dpo_terms, macro_average, per_language_stats


def _terms(chosen, rejected, loss=None):
    w, lo = torch.tensor(chosen), torch.tensor(rejected)
    return DPOTerms(
        loss=torch.zeros_like(w) if loss is None else torch.tensor(loss), z=w - lo, chosen_reward=w, rejected_reward=lo
    )


def test_per_language_accuracy_and_margin_by_hand():
    terms = _terms([0.5, -0.1, 0.2, 0.0, 1.0], [0.1, 0.3, 0.2, -0.5, 0.0], [0.1, 0.2, 0.3, 0.4, 0.5])
    langs = ["en", "en", "fr", "fr", "hi"]
    per = per_language_stats(terms, langs)
    assert list(per) == ["en", "fr", "hi"]
    assert per["en"].n == 2 and per["en"].accuracy == 0.5 and per["en"].margin == pytest.approx(0.0, abs=1e-6)
    assert per["fr"].accuracy == 0.5  # a tie (0.2 vs 0.2) is a miss
    assert per["fr"].margin == pytest.approx(0.25) and per["fr"].loss == pytest.approx(0.35)
    assert per["hi"].accuracy == 1.0 and per["hi"].chosen_reward == pytest.approx(1.0)
    groups = group_stats(terms, langs, {"seen": ["en", "fr"], "unseen": ["hi"], "none": ["ja"]})
    assert set(groups) == {"seen", "unseen"}  # empty groups are omitted
    assert groups["seen"].n == 4 and groups["seen"].accuracy == 0.5
    assert macro_average(per, ["en", "fr", "hi"]) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert math.isnan(macro_average(per, ["ja"]))
    with pytest.raises(ValueError):
        per_language_stats(terms, langs[:-1])


def test_reward_metrics_use_core_lp_dpo():
    from congrad_ray.train.evaluate import flat, language_groups, reward_metrics, unflat

    policy = torch.tensor([-3.0, -5.0, -4.0, -2.0, -2.0, -6.0])  # 3 chosen rows, then 3 rejected
    ref = torch.tensor([-3.5, -4.0, -4.0, -2.5, -2.0, -6.0])
    lengths = torch.tensor([4, 6, 2, 3, 1, 2])
    params = DPOParams(beta=0.5, alpha=0.1)
    groups = language_groups(["en", "fr", "hi"], seen=["en", "fr", "de"], unseen=[])
    assert groups == {"all": ["en", "fr", "hi"], "seen": ["en", "fr"], "unseen": ["hi"]}
    metrics = reward_metrics(policy, ref, lengths, ["en", "fr", "hi"], params, groups)
    terms = lp_dpo_terms(policy, ref, lengths, params)
    assert metrics["per_language"]["fr"]["loss"] == pytest.approx(terms.loss[1].item())
    assert metrics["per_language"]["en"]["margin"] == pytest.approx(0.5 * ((-3 + 3.5) - (-2 + 2.5)))
    assert metrics["groups"]["seen"]["n"] == 2 and metrics["groups"]["seen"]["languages"] == ["en", "fr"]
    back = unflat(flat(metrics))
    assert back["hi"]["accuracy"] == metrics["per_language"]["hi"]["accuracy"]
    assert back["unseen"]["loss"] == metrics["groups"]["unseen"]["loss"]


def test_preference_accuracy_before_and_after_by_hand():
    from congrad_ray.core import preference_accuracy

    # 3 pairs: chosen log-probs then rejected; lengths normalise (pair 1: -6/3 = -2 beats -5/2 = -2.5)
    logps = torch.tensor([-4.0, -6.0, -3.0, -3.0, -5.0, -3.0])
    lengths = torch.tensor([2, 3, 1, 2, 2, 1])
    groups = {"seen": ["en"], "unseen": ["hi"], "none": ["ja"]}
    got = preference_accuracy(logps, lengths, ["en", "en", "hi"], groups)
    # en: pair 0 -2 vs -1.5 (miss), pair 1 -2 vs -2.5 (hit); hi: -3 vs -3 (a tie is a miss)
    assert got["per_language"] == {"en": {"n": 2, "accuracy": 0.5}, "hi": {"n": 1, "accuracy": 0.0}}
    assert got["groups"] == {"seen": {"n": 2, "accuracy": 0.5}, "unseen": {"n": 1, "accuracy": 0.0}}
    with pytest.raises(ValueError):
        preference_accuracy(logps, lengths, ["en"], groups)


def test_rows_are_checked_and_kept_as_data(tokenizer, tiny_dir):
    from congrad_ray.train.data import PrepareSpec, prepare_rows, select_rows

    rows = pa.table(
        {
            "prompt": ["Count 1 to 3:", None, "Same:", "x " * 200, "Compte :"],
            "chosen": [" 1 2 3", " a", " b", " 1", " 1 2"],
            "rejected": [" 3 2 1", " b", " b", " 2", " 2 1"],
            "id": ["a", "b", "c", "d", "e"],
            "lang": ["en", "en", "en", "en", None],
        }
    )
    spec = PrepareSpec(str(tiny_dir), None, False, "id", "lang", 64, "keep_start")
    out = prepare_rows(rows, spec, "train")
    assert out.column("_reason").to_pylist() == [
        None,
        "null_prompt",
        "chosen_equals_rejected",
        "prompt_too_long",
        "missing_lang",
    ]
    valid = select_rows(out, "train", valid=True)
    assert valid.column("id").to_pylist() == ["a"] and "_reason" not in valid.column_names
    assert select_rows(out, "train", valid=False).num_rows == 4 and select_rows(out, "eval", valid=True).num_rows == 0


def test_shards_are_contiguous_near_equal_key_ranges_padded_alike():
    from congrad_ray.train.data import PreparedData, cap_per_language, key_range, order_key, pad_shard

    ids = [f"id-{i}" for i in range(11)]
    keys = sorted(order_key(i) for i in ids)
    prepared = PreparedData(None, len(ids), {"en": 11}, pa.table({}), [], keys)
    cuts = prepared.cut_keys(3)
    table = pa.table({"_id": ids, "_order": [order_key(i) for i in ids], "_lang": ["en"] * 11})
    edges = [None, *cuts, None]
    shards = [key_range(table, edges[r], edges[r + 1]) for r in range(3)]
    assert sorted(sum((s.column("_id").to_pylist() for s in shards), [])) == sorted(ids)  # a partition
    assert [s.num_rows for s in shards] == [3, 4, 4] and prepared.shard_rows(3) == 4
    # the same rows whatever the order they come in
    shuffled = table.take(pa.array([5, 2, 9, 0, 1, 10, 3, 8, 4, 7, 6]))
    assert key_range(shuffled, edges[1], edges[2]).sort_by("_order").equals(shards[1].sort_by("_order"))
    padded = pad_shard(shards[0], 4)
    assert padded.num_rows == 4 and padded.column("_id")[3] == padded.column("_id")[0]
    assert pad_shard(shards[0], 7).num_rows == 7
    capped = cap_per_language(table, 2)
    assert capped.column("_id").to_pylist() == ["id-0", "id-1"]


def test_max_steps_from_epochs():
    from congrad_ray.train.config import load_train_config
    from congrad_ray.train.run import max_steps

    cfg = load_train_config(
        None, ["optim.batch_size=4", "optim.gradient_accumulation_steps=2", "optim.epochs=1.5"], check_paths=False
    )
    assert max_steps(cfg, 17) == math.ceil(1.5 * math.ceil(math.ceil(17 / 4) / 2))
    cfg = load_train_config(None, ["optim.max_steps=3"], check_paths=False)
    assert max_steps(cfg, 10_000) == 3
