"""Per-seed figures of every arm and ablation (kept-set ground truth, held-out accuracy, alignment tax, cost), then
mean and spread over seeds, per training protocol; per-language diagnosis means; and paired bootstrap intervals of
every arm-vs-baseline difference in held-out accuracy (:func:`congrad_ray.core.paired_bootstrap`, over seeds and
held-out pairs)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

NAN = float("nan")


def _stat(values: Sequence[float]) -> dict[str, float]:
    from congrad_ray.core import mean_and_std

    mean, std, n = mean_and_std([v for v in values if v is not None])
    return {"mean": mean, "std": std, "n": n}


def language_roles(config: dict[str, Any]) -> dict[str, str]:
    c = config["corpus"]
    roles = {}
    for lang in c["seen"]:
        if lang == c.get("systematic_language"):
            roles[lang] = "systematic"
        elif c.get("flip_rate", {}).get(lang, 0) > 0:
            roles[lang] = "noisy"
        else:
            roles[lang] = "clean"
    for lang in c["unseen"]:
        roles[lang] = "unseen"
    return roles


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else NAN


def arm_figures(seed: dict[str, Any], name: str, roles: dict[str, str], protocol: str = "steps") -> dict[str, Any]:
    """The figures of one arm in one seed under a training protocol (None where the arm was not trained)."""
    from .training import record_key

    sel = seed["selections"][name]
    st = sel["stats"]
    kept, inp = st["kept"], st["input"]
    f: dict[str, Any] = {
        "kept_n": kept["n"],
        "kept_fraction": kept["n"] / max(1, inp["n"]),
        "conflict_kept": kept["rate"],
        "conflict_input": inp["rate"],
        "noisy_kept": kept.get("noisy_flip", 0),
        "noisy_input": inp.get("noisy_flip", 0),
        "systematic_kept": kept.get("systematic", 0),
        "systematic_input": inp.get("systematic", 0),
        "noisy_removed": 1 - kept.get("noisy_flip", 0) / inp["noisy_flip"] if inp.get("noisy_flip") else NAN,
        "systematic_removed": 1 - kept.get("systematic", 0) / inp["systematic"] if inp.get("systematic") else NAN,
        "jaccard_vs_congrad": sel.get("jaccard_vs_congrad"),
        "sketch_s": (sel.get("sketch") or {}).get("seconds") if sel["kind"] == "filter" else None,
        "select_s": sel.get("select_s"),
        "actor_peak_rss_mb": (sel.get("sketch") or {}).get("actor_peak_rss_mb"),
        "select_peak_tree_rss_mb": max(
            ((sel.get("sketch") or {}).get("run_filter") or {}).get("peak_tree_rss_mb") or 0,
            (sel.get("select_phase") or {}).get("peak_tree_rss_mb") or 0,
        )
        or None,
        "conflict_per_language": {k.split("/", 1)[1]: v for k, v in kept.items() if k.startswith("rate/")},
    }
    if sel["kind"] == "filter" and name == "random":
        f["sketch_s"] = None  # a random subset needs no sketch; the harness merely reuses the run directory
    t = seed.get(record_key(protocol), {}).get(name)
    if t:
        per = t["per_language"]
        by_role = {
            role: _mean([per[lg]["accuracy"] for lg, r in roles.items() if r == role and lg in per])
            for role in ("clean", "noisy", "systematic", "unseen")
        }
        seen = [lg for lg, r in roles.items() if r != "unseen"]
        unseen = [lg for lg, r in roles.items() if r == "unseen"]
        f.update(
            {
                "seen_accuracy": t["seen_accuracy"],
                "unseen_accuracy": t["unseen_accuracy"],
                "all_accuracy": _mean([per[lg]["accuracy"] for lg in roles if lg in per]),
                "seen_margin": t["seen_margin"],
                "unseen_margin": t["unseen_margin"],
                **{f"{role}_accuracy": v for role, v in by_role.items()},
                "tax_seen": _mean([t["tax"].get(lg) for lg in seen]),
                "tax_unseen": _mean([t["tax"].get(lg) for lg in unseen]),
                "accuracy_per_language": {lg: s["accuracy"] for lg, s in per.items()},
                "margin_per_language": {lg: s["margin"] for lg, s in per.items()},
                "tax_per_language": dict(t["tax"]),
                "train_s": t["train_phase"]["seconds"] if not t.get("same_kept_set_as") else None,
                "train_peak_tree_rss_mb": t["train_phase"].get("peak_tree_rss_mb"),
                "train_peak_process_rss_mb": t["train_phase"].get("peak_process_rss_mb"),
                "global_step": t["global_step"],
                "same_kept_set_as": t.get("same_kept_set_as"),
            }
        )
    return f


def _arm_stats(summary: dict[str, Any], names: list[str], roles: dict[str, str], protocol: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        per_seed = [arm_figures(s, name, roles, protocol) for s in summary["seeds"] if name in s["selections"]]
        agg: dict[str, Any] = {}
        keys = {k for f in per_seed for k, v in f.items() if isinstance(v, (int, float)) or v is None}
        for key in sorted(keys):
            vals = [f.get(key) for f in per_seed]
            if any(isinstance(v, (int, float)) for v in vals):
                agg[key] = _stat([v for v in vals if isinstance(v, (int, float))])
        for key in ("conflict_per_language", "accuracy_per_language", "margin_per_language", "tax_per_language"):
            dicts = [f[key] for f in per_seed if key in f]
            if dicts:
                langs = sorted({lg for d in dicts for lg in d})
                agg[key] = {lg: _stat([d.get(lg) for d in dicts if d.get(lg) is not None]) for lg in langs}
        agg["same_kept_set_as"] = sorted({f["same_kept_set_as"] for f in per_seed if f.get("same_kept_set_as")})
        out[name] = agg
    return out


def diagnosis_stats(summary: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """``{lang: {key: stat}}`` over seeds of a selection's per-language diagnosis (agreement, separation)."""
    per_seed = [s["selections"][name].get("diagnosis") or {} for s in summary["seeds"] if name in s["selections"]]
    langs = sorted({lg for d in per_seed for lg in d})
    out = {}
    for lg in langs:
        keys = sorted({k for d in per_seed for k, v in d.get(lg, {}).items() if isinstance(v, (int, float))})
        out[lg] = {
            k: _stat([d[lg][k] for d in per_seed if isinstance(d.get(lg, {}).get(k), (int, float))]) for k in keys
        }
    return out


def outcome_matrix(summary: dict[str, Any], name: str, protocol: str, langs: list[str]) -> tuple[Any, list[str]] | None:
    """``([S, N] 1 if the held-out pair's reward margin is positive, groups [N])`` of an arm over the seeds, pairs of
    ``langs`` in (lang, id) order; None when a seed lacks per-pair outcomes or the seeds' layouts differ."""
    import numpy as np

    from .training import record_key

    rows, groups = [], None
    for s in summary["seeds"]:
        t = s.get(record_key(protocol), {}).get(name) or {}
        pairs = t.get("heldout_pairs")
        if not pairs:
            return None
        mine = [(lg, m) for lg, m in zip(pairs["lang"], pairs["margin"]) if lg in langs]
        g = [lg for lg, _ in mine]
        if groups is not None and g != groups:
            return None
        groups = g
        rows.append([1.0 if m > 0 else 0.0 for _, m in mine])
    return (np.array(rows), groups) if rows and groups else None


INTERVAL_GROUPS = ("seen", "unseen", "all")
BASELINES = ("all", "margin")


def intervals(summary: dict[str, Any], protocol: str, names: list[str], roles: dict[str, str]) -> dict[str, Any]:
    """``{arm: {baseline: {group: Interval dict}}}``: arm minus baseline held-out accuracy (macro over the group's
    languages, mean over seeds), paired bootstrap over seeds and pairs; groups seen, unseen and all languages."""
    from congrad_ray.core import paired_bootstrap

    cfg = summary["config"]
    members = {
        "seen": [lg for lg, r in roles.items() if r != "unseen"],
        "unseen": [lg for lg, r in roles.items() if r == "unseen"],
        "all": list(roles),
    }
    out: dict[str, Any] = {}
    for base in BASELINES:
        for name in names:
            if name == base:
                continue
            for group in INTERVAL_GROUPS:
                a = outcome_matrix(summary, name, protocol, members[group])
                b = outcome_matrix(summary, base, protocol, members[group])
                if a is None or b is None or a[1] != b[1]:
                    continue
                iv = paired_bootstrap(a[0], b[0], a[1], n_boot=cfg.get("bootstrap", 2000), seed=0)
                out.setdefault(name, {}).setdefault(base, {})[group] = iv.as_dict()
    return out


def aggregate(summary: dict[str, Any]) -> dict[str, Any]:
    """``{"arms": {name: {figure: {mean, std, n}}}, "ablations": {...}, "protocols": {protocol: {"arms", ...}},
    "diagnosis": {name: {lang: ...}}, "intervals": {protocol: ...}, "lm_before": ..., "roles": ...}``; ``arms`` is
    the first protocol's (``steps`` unless the setting runs only ``epochs``)."""
    cfg = summary["config"]
    roles = language_roles(cfg)
    protocols = cfg.get("protocols") or ["steps"]
    out: dict[str, Any] = {"roles": roles, "protocols": {}, "intervals": {}}
    for protocol in protocols:
        out["protocols"][protocol] = {
            "arms": _arm_stats(summary, cfg["arms"], roles, protocol),
            "ablations": _arm_stats(summary, cfg["ablations"], roles, protocol),
        }
        trained = [a for a in [*cfg["arms"], *(cfg["ablations"] if cfg.get("ablation_dpo") else [])]]
        out["intervals"][protocol] = intervals(summary, protocol, trained, roles)
    first = out["protocols"][protocols[0]]
    out["arms"], out["ablations"] = first["arms"], first["ablations"]
    out["diagnosis"] = {name: diagnosis_stats(summary, name) for name in [*cfg["arms"], *cfg["ablations"]]}
    langs = sorted({lg for s in summary["seeds"] for lg in s["lm_before"]})
    out["lm_before"] = {lg: _stat([s["lm_before"].get(lg) for s in summary["seeds"]]) for lg in langs}
    inp = [s["selections"][n]["stats"]["input"] for s in summary["seeds"] for n in list(s["selections"])[:1]]
    out["input_conflict_per_language"] = {
        lg: _stat([i.get(f"rate/{lg}") for i in inp if i.get(f"rate/{lg}") is not None]) for lg in cfg["corpus"]["seen"]
    }
    return out
