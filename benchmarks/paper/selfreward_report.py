"""``results.json`` and ``results.md`` of the self-rewarding setting: per arm and round, held-out accuracy (seen,
unseen, all languages) against the fixed reference judgement, alignment tax, pairs kept and conflicting (chrF
reference), paired bootstrap intervals against no filter and the margin filter, and ConGrad's per-language
diagnosis."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .stats_tables import diagnosis_table, interval_cell, markdown_table

LABELS = {
    "all": "No filter (all pairs)",
    "random": "Random half",
    "margin": "Margin filter",
    "congrad": "ConGrad (PCGrad)",
    "budget_hybrid": "Hybrid + agreement budgets",
}


def _stat(values: list[float]) -> dict[str, float]:
    from congrad_ray.core import mean_and_std

    mean, std, n = mean_and_std([v for v in values if v is not None])
    return {"mean": mean, "std": std, "n": n}


def _fmt(s: dict[str, float] | None, digits: int = 3, signed: bool = False) -> str:
    if not s or not s.get("n") or not math.isfinite(s["mean"]):
        return "–"
    body = f"{s['mean']:{'+' if signed else ''}.{digits}f}"
    return body if s["n"] < 2 else f"{body} ± {s['std']:.{digits}f}"


def _macro(per_language: dict[str, Any], langs: list[str]) -> float | None:
    vals = [per_language[lg]["accuracy"] for lg in langs if lg in per_language]
    return sum(vals) / len(vals) if vals else None


def round_figures(r: dict[str, Any], base: dict[str, Any], seen: list[str], unseen: list[str]) -> dict[str, Any]:
    per = r["eval"]["per_language"]
    tax = {lg: r["lm"][lg] - base["lm"][lg] for lg in r["lm"] if lg in base["lm"]}
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "seen_accuracy": _macro(per, seen),
        "unseen_accuracy": _macro(per, unseen),
        "all_accuracy": _macro(per, [*seen, *unseen]),
        "tax_seen": mean([tax[lg] for lg in seen if lg in tax]),
        "tax_unseen": mean([tax[lg] for lg in unseen if lg in tax]),
        "pairs": r.get("pairs"),
        "kept": r.get("kept"),
        "conflict_input": r["conflicting"] / r["pairs"] if r.get("pairs") and "conflicting" in r else None,
        "conflict_kept": r["conflicting_kept"] / r["kept"] if r.get("kept") else None,
    }


def _outcomes(summary: dict[str, Any], arm: str, t: int, langs: list[str]) -> tuple[np.ndarray, list[str]] | None:
    rows, groups = [], None
    for s in summary["seeds"]:
        rounds = s["arms"].get(arm) or []
        if len(rounds) < t or not rounds[t - 1].get("heldout_pairs"):
            return None
        p = rounds[t - 1]["heldout_pairs"]
        mine = [(lg, m) for lg, m in zip(p["lang"], p["margin"]) if lg in langs]
        if groups is not None and [lg for lg, _ in mine] != groups:
            return None
        groups = [lg for lg, _ in mine]
        rows.append([1.0 if m > 0 else 0.0 for _, m in mine])
    return (np.array(rows), groups) if rows else None


def _round_records(summary: dict[str, Any], arm: str, t: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(round ``t``'s record of ``arm``, the seed's base record) for every seed whose arm finished round ``t``."""
    return [(s["arms"][arm][t - 1], s["base"]) for s in summary["seeds"] if len(s["arms"].get(arm) or []) >= t]


def aggregate(summary: dict[str, Any]) -> dict[str, Any]:
    from congrad_ray.core import paired_bootstrap

    cfg = summary["config"]
    seen, unseen = list(cfg["corpus"]["seen"]), list(cfg["corpus"]["unseen"])
    groups = {"seen": seen, "unseen": unseen, "all": [*seen, *unseen]}
    out: dict[str, Any] = {"arms": {}, "intervals": {}, "diagnosis": {}, "judge_conflict": {}}
    for arm in cfg["arms"]:
        per_round = []
        for t in range(1, cfg["rounds"] + 1):
            figs = [round_figures(rec, base, seen, unseen) for rec, base in _round_records(summary, arm, t)]
            keys = sorted({k for f in figs for k in f})
            per_round.append({k: _stat([f[k] for f in figs if f.get(k) is not None]) for k in keys})
        out["arms"][arm] = per_round
    for base in ("all", "margin"):
        for arm in cfg["arms"]:
            if arm == base or base not in cfg["arms"]:
                continue
            for t in range(1, cfg["rounds"] + 1):
                for g, langs in groups.items():
                    a, b = _outcomes(summary, arm, t, langs), _outcomes(summary, base, t, langs)
                    if a is None or b is None or a[1] != b[1]:
                        continue
                    iv = paired_bootstrap(a[0], b[0], a[1], n_boot=cfg.get("bootstrap", 2000), seed=0)
                    out["intervals"].setdefault(arm, {}).setdefault(base, {}).setdefault(str(t), {})[g] = iv.as_dict()
    for arm in ("congrad",):
        for t in range(1, cfg["rounds"] + 1):
            diags = [rec.get("diagnosis") or {} for rec, _ in _round_records(summary, arm, t)]
            diags = [d for d in diags if d]
            langs = sorted({lg for d in diags for lg in d})
            out["diagnosis"][str(t)] = {
                lg: {
                    k: _stat([d[lg][k] for d in diags if isinstance(d.get(lg, {}).get(k), (int, float))])
                    for k in (
                        "before",
                        "after",
                        "others",
                        "n",
                        "kept",
                        "conflicting",
                        "conflicting_kept",
                        "auroc",
                        "clean_mean",
                        "conflicting_mean",
                    )
                }
                for lg in langs
            }
    return out


def markdown(summary: dict[str, Any], agg: dict[str, Any]) -> str:
    cfg = summary["config"]
    seeds = [s["seed"] for s in summary["seeds"]]
    parts = [
        "# Paper benchmark: self-rewarding setting" + (" (quick)" if summary.get("quick") else ""),
        "",
        *(
            ["**Partial**: the rounds and seeds that finished so far (the rest: re-run with `--resume`).", ""]
            if summary.get("partial")
            else []
        ),
        f"{len(seeds)} seed(s) {seeds}, {cfg['rounds']} round(s); mean ± sample std over seeds. Wall time "
        f"{summary['wall_s'] / 3600:.2f} h on this machine (load averages at the end of each seed: "
        f"{[s.get('load_avg_1m') for s in summary['seeds']]}), finished {summary['finished_at']}.",
        "",
        f"* model: {cfg['model']} (round 1), then each arm's own trained model; prompts: the first "
        f"{cfg['corpus']['prompt_words']} words of prose paragraphs in {', '.join(cfg['corpus']['seen'])}, "
        f"{cfg['prompts_per_language']} per language and round; candidates, judge and pairs: "
        f"{json.dumps(cfg['iterate'])}",
        f"* arms (filter overrides): {json.dumps(cfg['arms'])}; the same DPO step for every arm: {cfg['train']}",
        "* held-out accuracy: implicit reward of the round's model against the round-1 model on held-out pairs "
        "(true continuation vs shuffled / another paragraph's words), seen and unseen "
        f"({', '.join(cfg['corpus']['unseen'])}) languages; tax: per-token LM loss on clean prose minus the "
        "round-1 model's; conflicting pair: its chosen continuation is further from the true one than its "
        "rejected one (chrF), a reference judgement the model did not make",
        "",
    ]
    for t in range(1, cfg["rounds"] + 1):
        rows = []
        for arm, per_round in agg["arms"].items():
            g = per_round[t - 1] if len(per_round) >= t else {}
            rows.append(
                [
                    LABELS.get(arm, arm),
                    _fmt(g.get("pairs"), 1),
                    _fmt(g.get("kept"), 1),
                    _fmt(g.get("conflict_input"), 2),
                    _fmt(g.get("conflict_kept"), 2),
                    _fmt(g.get("seen_accuracy")),
                    _fmt(g.get("unseen_accuracy")),
                    _fmt(g.get("all_accuracy")),
                    _fmt(g.get("tax_seen"), signed=True),
                    _fmt(g.get("tax_unseen"), signed=True),
                ]
            )
        head = [
            "arm",
            "pairs",
            "kept",
            "conflicting (chrF) in pairs",
            "conflicting in kept",
            "seen acc",
            "unseen acc",
            "all-language acc",
            "tax seen",
            "tax unseen",
        ]
        parts += [f"## After round {t}", "", markdown_table(head, rows), ""]
        ivs = [(arm, b) for arm, bb in agg["intervals"].items() for b in bb if str(t) in bb[b]]
        if ivs:
            rows = [
                [f"{LABELS.get(arm, arm)} − {LABELS.get(b, b)}"]
                + [interval_cell(agg["intervals"][arm][b][str(t)].get(g)) for g in ("seen", "unseen", "all")]
                for arm, b in ivs
            ]
            parts += [
                "Differences in held-out accuracy with 95 % paired bootstrap intervals over seeds and pairs (bold: "
                "excludes zero):",
                "",
                markdown_table(["difference", "seen", "unseen", "all languages"], rows),
                "",
            ]
        diag = diagnosis_table(agg["diagnosis"].get(str(t)) or {})
        if diag:
            parts += ["Per-language diagnosis of the ConGrad arm's filter step:", "", diag, ""]
    return "\n".join(parts)


def write_results(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(summary)
    (out / "results.json").write_text(json.dumps({**summary, "aggregate": agg}, indent=1, default=str) + "\n")
    (out / "results.md").write_text(markdown(summary, agg))
