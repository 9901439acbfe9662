"""Per-round statistics (``round-XX/stats.json``) and the round-over-round report (``report/rounds.json``,
``report/rounds.png``, ``report/summary.md``)."""

from __future__ import annotations

import io
from typing import Any

from ..storage import Location


def round_stats(index: int, model_in: str, records: dict[str, dict | None]) -> dict[str, Any]:
    """One round's numbers from its stage records: generation throughput, judge-score statistics per language,
    pair counts and drop reasons, ConGrad kept fractions, and the DPO step's metrics (per-language eval included)."""
    gen, jud, prs, flt, trn = (records.get(s) or {} for s in ("generate", "judge", "pairs", "filter", "train"))
    return {
        "round": index,
        "model_in": model_in,
        "model_out": trn.get("model_out", model_in),
        "generation": {k: gen.get(k) for k in ("backend", "prompts", "candidates", "empty", "tokens",
                                                "tokens_per_s_wall", "tokens_per_s_engine", "finish_reasons")},
        "judge": {k: jud.get(k) for k in ("mode", "judgements", "statuses", "parse_failure_rate", "per_language")},
        "pairs": {k: prs.get(k) for k in ("prompts", "pairs", "dropped", "reasons", "per_language", "mean_gap")},
        "filter": {k: flt.get(k) for k in ("skipped", "totals", "per_language", "kept_fraction")},
        "train": {k: v for k, v in trn.items() if k not in ("stage", "round", "model_in")},
        "seconds": {s: (r or {}).get("seconds") for s, r in records.items()},
    }  # fmt: skip


def _series(stats: list[dict], getter: Any) -> dict[str, list]:
    """lang -> values per round (None where a round has no value for that language)."""
    langs = sorted({lang for s in stats for lang in (getter(s) or {})})
    return {lang: [(getter(s) or {}).get(lang) for s in stats] for lang in langs}


def eval_per_language(train: dict[str, Any], stat: str = "accuracy") -> dict[str, float]:
    """The DPO step's held-out evaluation of the trained model: lang -> ``stat`` (reward accuracy by default)."""
    per_lang = train.get("eval_per_language") or {}
    return {lang: float(v[stat]) for lang, v in per_lang.items() if isinstance(v, dict) and v.get(stat) is not None}


def plot_rounds(stats: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [s["round"] for s in stats]
    panels = [
        ("mean judge score", _series(stats, lambda s: {k: v["mean"] for k, v in (s["judge"]["per_language"] or {}).items()})),
        ("pairs made", _series(stats, lambda s: {k: v.get("ok", 0) for k, v in (s["pairs"]["per_language"] or {}).items()})),
        ("ConGrad kept fraction", _series(stats, lambda s: s["filter"]["kept_fraction"])),
        ("held-out reward accuracy after DPO", _series(stats, lambda s: eval_per_language(s["train"]))),
    ]  # fmt: skip
    langs = sorted({lang for _, series in panels for lang in series})
    cmap = plt.get_cmap("tab20" if len(langs) > 10 else "tab10")
    color = {lang: cmap(i % cmap.N) for i, lang in enumerate(langs)}  # one colour per language in every panel
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (title, series) in zip(axes.flat, panels):
        for lang, values in series.items():
            xs = [r for r, v in zip(rounds, values) if v is not None]
            ax.plot(xs, [v for v in values if v is not None], marker="o", color=color[lang], label=lang)
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.set_xticks(rounds)
        if not series:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if langs:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=color[lang], marker="o", label=lang) for lang in langs]
        fig.legend(handles=handles, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def summary_md(stats: list[dict]) -> str:
    lines = ["# Self-rewarding loop", "", "| round | prompts | tokens/s | parse failures | pairs | kept | model out |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for s in stats:
        g, j, p, f = s["generation"], s["judge"], s["pairs"], s["filter"]
        kept = (f.get("totals") or {}).get("kept", 0)
        rate = j.get("parse_failure_rate")
        lines.append(
            f"| {s['round']} | {g.get('prompts')} | {g.get('tokens_per_s_wall')} | "
            f"{'-' if rate is None else f'{rate:.1%}'} | {p.get('pairs')} | {kept} | {s['model_out']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(root: Location, stats: list[dict]) -> None:
    report = root.join("report")
    report.join("rounds.json").write_json(stats)
    report.join("rounds.png").write_bytes(plot_rounds(stats))
    report.join("summary.md").write_bytes(summary_md(stats).encode())
