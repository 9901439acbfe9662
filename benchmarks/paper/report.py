"""``results.json`` and ``results.md`` (Markdown tables) of a setting, plus its plots (:mod:`.plots`), into
``benchmarks/results/<setting>/``. ``python -m benchmarks.paper --report-only RESULTS_DIR`` redraws them from a
``results.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .aggregate import aggregate
from .arms import label
from .plots import plots
from .settings import flatten


def _fmt(s: dict[str, float] | None, digits: int = 3, signed: bool = False) -> str:
    if not s or s.get("n", 0) == 0 or not math.isfinite(s["mean"]):
        return "–"
    sign = "+" if signed else ""
    body = f"{s['mean']:{sign}.{digits}f}"
    return body if s["n"] < 2 else f"{body} ± {s['std']:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main_table(by_arm: dict[str, Any], arms: list[str], noisy: list[str], sys_lang: str | None) -> str:
    """Kept pairs, conflict rate, held-out accuracy (seen, unseen, all languages, by role) and tax of every arm."""
    rows = []
    for a in arms:
        g = by_arm.get(a, {})
        rows.append(
            [
                label(a),
                _fmt(g.get("kept_n"), 0),
                _fmt(g.get("conflict_kept")),
                _fmt(g.get("seen_accuracy")),
                _fmt(g.get("unseen_accuracy")),
                _fmt(g.get("all_accuracy")),
                _fmt(g.get("clean_accuracy")),
                _fmt(g.get("noisy_accuracy")),
                _fmt(g.get("systematic_accuracy")),
                _fmt(g.get("tax_seen"), signed=True),
                _fmt(g.get("tax_unseen"), signed=True),
                _fmt(g.get("global_step"), 0),
            ]
        )
    conflict_in = by_arm[arms[0]].get("conflict_input") if arms and arms[0] in by_arm else None
    return _table(
        [
            "arm",
            "kept pairs",
            f"conflict rate of kept (input {_fmt(conflict_in)})",
            "seen acc",
            "unseen acc",
            "all-language acc",
            "clean-seen acc",
            f"noisy acc ({', '.join(noisy)})",
            f"systematic acc ({sys_lang})",
            "tax seen",
            "tax unseen",
            "DPO steps",
        ],
        rows,
    )


def tables(summary: dict[str, Any]) -> dict[str, str]:
    """The Markdown tables, by name (also used for the README section)."""
    cfg, agg = summary["config"], summary["aggregate"]
    roles = agg["roles"]
    arms = [a for a in cfg["arms"] if a in agg["arms"]]
    seen = list(cfg["corpus"]["seen"])
    unseen = list(cfg["corpus"]["unseen"])
    sys_lang = cfg["corpus"].get("systematic_language")
    noisy = [lg for lg in seen if roles[lg] == "noisy"]
    out: dict[str, str] = {}

    out["main"] = main_table(agg["arms"], arms, noisy, sys_lang)
    for protocol, section in agg.get("protocols", {}).items():
        out[f"main_{protocol}"] = main_table(section["arms"], arms, noisy, sys_lang)

    langs = [*seen, *unseen]
    head = ["arm"] + [f"{lg} ({roles[lg]})" for lg in langs]
    rows = [
        [label(a)] + [_fmt(agg["arms"][a].get("accuracy_per_language", {}).get(lg), 2) for lg in langs] for a in arms
    ]
    out["accuracy_per_language"] = _table(head, rows)

    rows = [["input"] + [_fmt(agg["input_conflict_per_language"].get(lg), 2) for lg in seen]]
    rows += [
        [label(a)] + [_fmt(agg["arms"][a].get("conflict_per_language", {}).get(lg), 2) for lg in seen] for a in arms
    ]
    rows_extra = []
    for a in arms:
        g = agg["arms"][a]
        rows_extra.append(
            [
                label(a),
                _fmt(g.get("noisy_removed"), 2),
                _fmt(g.get("systematic_removed"), 2),
                _fmt(g.get("jaccard_vs_congrad"), 2),
            ]
        )
    out["conflict_per_language"] = _table(["kept set"] + [f"{lg} ({roles[lg]})" for lg in seen], rows)
    out["conflict_removed"] = _table(
        ["arm", "noisy flips removed", "systematic pairs removed", "Jaccard vs ConGrad kept set"], rows_extra
    )

    head = ["arm"] + [f"{lg} ({roles[lg]})" for lg in langs]
    rows = [["LM loss before (nats/token)"] + [_fmt(agg["lm_before"].get(lg), 3) for lg in langs]]
    rows += [
        [label(a)] + [_fmt(agg["arms"][a].get("tax_per_language", {}).get(lg), 3, signed=True) for lg in langs]
        for a in arms
    ]
    out["tax_per_language"] = _table(head, rows)

    rows = []
    for a in arms:
        g = agg["arms"][a]
        rows.append(
            [
                label(a),
                _fmt(g.get("sketch_s"), 1),
                _fmt(g.get("select_s"), 1),
                _fmt(g.get("train_s"), 1),
                _fmt(g.get("actor_peak_rss_mb"), 0),
                _fmt(g.get("select_peak_tree_rss_mb"), 0),
                _fmt(g.get("train_peak_tree_rss_mb"), 0),
                _fmt(g.get("train_peak_process_rss_mb"), 0),
            ]
        )
    out["cost"] = _table(
        [
            "arm",
            "sketch pass s (shared)",
            "select s",
            "DPO s",
            "sketch actor peak RSS MB",
            "selection peak tree RSS MB",
            "DPO peak tree RSS MB",
            "DPO largest process RSS MB",
        ],
        rows,
    )

    abl = [a for a in cfg["ablations"] if a in agg["ablations"]]
    if abl:
        rows = []
        ref = agg["arms"].get("congrad", {})
        for name, g in [("congrad", ref), *[(a, agg["ablations"][a]) for a in abl]]:
            if not g:
                continue
            rows.append(
                [
                    label(name) + (" (reference)" if name == "congrad" else ""),
                    _fmt(g.get("conflict_kept")),
                    _fmt(g.get("noisy_removed"), 2),
                    _fmt(g.get("systematic_removed"), 2),
                    _fmt(g.get("kept_n"), 0),
                    _fmt(g.get("jaccard_vs_congrad"), 2),
                    _fmt(g.get("seen_accuracy")),
                    _fmt(g.get("unseen_accuracy")),
                    _fmt(g.get("sketch_s"), 1),
                    _fmt(g.get("select_s"), 1),
                    _fmt(g.get("actor_peak_rss_mb"), 0),
                ]
            )
        out["ablations"] = _table(
            [
                "variant",
                "conflict rate of kept",
                "noisy removed",
                "systematic removed",
                "kept",
                "Jaccard vs ConGrad",
                "seen acc",
                "unseen acc",
                "sketch pass s",
                "select s",
                "actor peak RSS MB",
            ],
            rows,
        )
    return out


def markdown(summary: dict[str, Any]) -> str:
    cfg = summary["config"]
    t = tables(summary)
    c = cfg["corpus"]
    env = summary["environment"]
    n_seeds = len(summary["seeds"])
    train = ", ".join(flatten(cfg["train"]))
    filt = ", ".join(flatten(cfg["filter"]))
    parts = [
        f"# Paper benchmark: {summary['setting']} setting" + (" (quick)" if summary.get("quick") else ""),
        "",
        f"{n_seeds} seed(s) ({', '.join(str(s['seed']) for s in summary['seeds'])}); mean ± sample std over seeds. "
        f"Wall time {summary['wall_s'] / 60:.1f} min on {env.get('cpus')} CPU(s) "
        f"(CUDA: {env.get('cuda')}), finished {summary['finished_at']}; 1-min load average samples "
        f"{env.get('load_avg_1m_samples')} (other jobs shared the machine: timings are noisy).",
        "",
        f"* corpus: {c['kind']}, seen {', '.join(c['seen'])} × {c['pairs_per_language']} pairs, unseen "
        f"{', '.join(c['unseen'])}; held-out {c['heldout_per_language']} clean pairs per language; noisy flips "
        f"{c['flip_rate']}; systematic conflict: {c.get('systematic_language')}",
        f"* model: {cfg['model']['kind']} {cfg['model']['name']}"
        + (f", LoRA {cfg['model']['lora']}" if cfg["model"].get("lora") else "")
        + (
            f", round-0 SFT {cfg['model']['sft']['steps']} steps"
            if cfg["model"]["kind"] == "tiny" and cfg["model"].get("sft")
            else ""
        ),
        f"* selection ratio rho = {cfg['rho']} per language; filter: {filt}",
        f"* the same DPO step for every arm: {train}",
        "* accuracy: held-out implicit-reward accuracy (trained policy vs the reference prefers the chosen answer), "
        "macro-averaged over languages; tax: per-token LM loss on clean held-out text, after DPO minus before "
        "(positive = worse)",
        "",
        "## Main results",
        "",
        t["main"],
        "",
        "## Held-out accuracy per language",
        "",
        t["accuracy_per_language"],
        "",
        "## Conflict rate of each kept set, per language (ground truth)",
        "",
        t["conflict_per_language"],
        "",
        t["conflict_removed"],
        "",
        "## Alignment tax per language (Δ LM loss, nats/token)",
        "",
        t["tax_per_language"],
        "",
        "## Cost",
        "",
        t["cost"],
        "",
        "The sketch pass is shared by every filter arm of a seed (the selection-side arms re-select from its stored "
        "sketches); the random subset needs no sketch. Peak RSS is sampled over the whole process tree "
        "(driver + embedded Ray).",
    ]
    if "ablations" in t:
        parts += [
            "",
            "## Ablations",
            "",
            "Kept-set measures"
            + (" and DPO accuracy" if cfg.get("ablation_dpo") else " (no DPO step per ablation: `ablation_dpo: false`)")
            + "; every variant changes one option of the ConGrad arm.",
            "",
            t["ablations"],
        ]
    from .stats_tables import sections

    parts += ["", *sections(summary, label, t)]
    parts += ["Plots: `accuracy.png`, `per_language.png`, `ablations.png`, `cost.png`.", ""]
    return "\n".join(parts)


def write_report(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str, allow_nan=True) + "\n")
    (out / "results.md").write_text(markdown(summary))
    plots(summary, out)


def redraw(results_dir: Path) -> None:
    summary = json.loads((results_dir / "results.json").read_text())
    summary["aggregate"] = aggregate(summary)
    write_report(summary, results_dir)
