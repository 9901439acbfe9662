"""The Markdown sections of issue 15 in ``results.md``: the two training protocols, the paired bootstrap intervals
of every arm against all-data DPO and the margin filter, and the per-language diagnosis of every selection."""

from __future__ import annotations

import math
from typing import Any

PROTOCOL_TITLES = {
    "steps": "Equal optimizer steps (every arm the same number of DPO steps)",
    "epochs": "Equal epochs (every arm the same passes over its own kept set: a kept half takes half the steps)",
}
GROUP_TITLES = {"seen": "seen", "unseen": "unseen", "all": "all languages"}


def interval_cell(iv: dict[str, float] | None) -> str:
    """``+0.031 [-0.010, +0.072]`` (bold when the interval excludes zero)."""
    if not iv or not math.isfinite(iv.get("estimate", math.nan)):
        return "–"
    text = f"{iv['estimate']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]"
    return f"**{text}**" if iv["low"] > 0 or iv["high"] < 0 else text


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def intervals_table(agg: dict[str, Any], protocol: str, label: Any) -> str | None:
    """Rows: arms; columns: difference in held-out accuracy vs all data and vs the margin filter, per group."""
    ivs = agg.get("intervals", {}).get(protocol) or {}
    if not ivs:
        return None
    header = ["arm"] + [f"vs {b}: {GROUP_TITLES[g]}" for b in ("all data", "margin") for g in GROUP_TITLES]
    rows = []
    for name, by_base in ivs.items():
        cells = [interval_cell(by_base.get(base, {}).get(g)) for base in ("all", "margin") for g in GROUP_TITLES]
        rows.append([label(name), *cells])
    return markdown_table(header, rows)


def _mean(stat: dict[str, float] | None, digits: int = 2, signed: bool = True) -> str:
    if not stat or not stat.get("n") or not math.isfinite(stat.get("mean", math.nan)):
        return "–"
    return f"{stat['mean']:+.{digits}f}" if signed else f"{stat['mean']:.{digits}f}"


def diagnosis_table(diag: dict[str, dict[str, Any]], lang_label: Any = str) -> str | None:
    """Per language (means over seeds of each figure): pairs, ground-truth conflicting pairs and how many were kept,
    the language's agreement with the consensus, the mean score of clean / conflicting pairs and the separation."""
    if not diag:
        return None
    rows = [
        [
            lang_label(lang),
            _mean(d.get("n"), 1, signed=False),
            _mean(d.get("conflicting"), 1, signed=False),
            _mean(d.get("conflicting_kept"), 1, signed=False),
            _mean(d.get("before")),
            _mean(d.get("after")),
            _mean(d.get("others")),
            f"{_mean(d.get('clean_mean'))} / {_mean(d.get('conflicting_mean'))}",
            _mean(d.get("auroc"), signed=False),
        ]
        for lang, d in diag.items()
    ]
    header = [
        "language",
        "pairs",
        "conflicting",
        "conflicting kept",
        "cos(G_l, g*) before",
        "cos(p_l, g*) after",
        "cos(G_l, others)",
        "mean score clean / conflicting",
        "separation (AUROC)",
    ]
    return markdown_table(header, rows)


def separation_table(agg: dict[str, Any], names: list[str], langs: list[str], label: Any) -> str | None:
    """Rows: selections (ConGrad, its ablations, the rules beyond the paper, the margin filter); columns: each
    language's separation AUROC, then the conflicting pairs kept (all languages)."""
    diag = agg.get("diagnosis", {})
    rows = []
    for name in names:
        d = diag.get(name) or {}
        if not d:
            continue
        kept_bad = sum(d[lg]["conflicting_kept"]["mean"] for lg in d if "conflicting_kept" in d[lg])
        rows.append(
            [label(name), *[_mean(d.get(lg, {}).get("auroc"), signed=False) for lg in langs], f"{kept_bad:.1f}"]
        )
    if not rows:
        return None
    return markdown_table(["selection", *[f"{lg} AUROC" for lg in langs], "conflicting pairs kept"], rows)


def sections(summary: dict[str, Any], label: Any, main_tables: dict[str, str]) -> list[str]:
    """The Markdown lines of the protocol, interval and diagnosis sections."""
    cfg, agg = summary["config"], summary["aggregate"]
    roles = agg["roles"]
    protocols = cfg.get("protocols") or ["steps"]
    parts: list[str] = []
    for protocol in protocols:
        parts += [f"## {PROTOCOL_TITLES[protocol]}", ""]
        if f"main_{protocol}" in main_tables:
            parts += [main_tables[f"main_{protocol}"], ""]
        t = intervals_table(agg, protocol, label)
        if t:
            parts += [
                "Arm minus baseline, held-out accuracy (macro over the group's languages, mean over seeds), with a "
                f"95 % paired bootstrap interval over seeds and held-out pairs ({cfg.get('bootstrap', 2000)} "
                "resamples; bold: the interval excludes zero):",
                "",
                t,
                "",
            ]
    seen_conflicted = [lg for lg in cfg["corpus"]["seen"] if roles.get(lg) in ("noisy", "clean")]
    names = [n for n in [*cfg["arms"], *cfg["ablations"]] if n not in ("all", "random")]
    sep = separation_table(agg, names, seen_conflicted, label)
    congrad = diagnosis_table(agg.get("diagnosis", {}).get("congrad") or {}, lambda lg: f"{lg} ({roles.get(lg, '?')})")
    if congrad or sep:
        parts += [
            "## Per-language diagnosis",
            "",
            "For ConGrad: each language's gradient against the consensus before (`G_l`) and after (`p_l`) PCGrad and "
            "against the mean of the other languages (`others`, what agreement budgets read); how its ground-truth "
            "conflicting pairs score against its clean ones (separation: the probability that a clean pair outscores "
            "a conflicting one; – where a language has no clean or no conflicting pair). Means over seeds.",
            "",
        ]
        parts += [congrad, ""] if congrad else []
        parts += ["Separation by selection (sketch width, scope, rules):", "", sep, ""] if sep else []
    return parts
