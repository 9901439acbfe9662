"""The paper benchmark (issue 6): does our CONGRAD reproduce the paper's direction at small scale?

Group ``paper`` of ``python -m benchmarks``: runs the **small** setting (``configs/small.yaml``: the demo counting
task in 6 seen + 3 unseen languages with noisy flips and a systematically conflicting language, the tiny model after
a round-0 SFT, 3 seeds) and yields one figure per arm and measure (reported, not judged: no goals). The full run
writes ``benchmarks/results/small/``; ``--quick`` writes under ``runs/paper/small-quick/`` only.

Stand-alone: ``python -m benchmarks.paper --setting small|real [--seeds N] [--quick]`` (see ``__main__``).
Modules: ``settings`` (the validated setting configs), ``seed_data`` / ``corpora`` / ``models`` (what each seed
builds), ``arms`` (arms and ablations), ``measures``, ``run`` (orchestration), ``training`` (the DPO step of every
arm under the equal-steps and equal-epochs protocols), ``diagnosis`` (per-language agreement and separation),
``aggregate`` (mean and spread over seeds, paired bootstrap intervals), ``report`` / ``stats_tables`` (Markdown
tables) and ``plots``. The self-rewarding setting: ``selfreward`` (``python -m benchmarks.paper.selfreward``, one
``congrad-ray iterate`` loop per arm) and ``selfreward_report``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

GROUP = "paper"


def run(quick: bool) -> Iterator[dict[str, Any]]:
    from .._common import figure
    from .run import ROOT, run_setting
    from .settings import load_setting

    cfg = load_setting("small", quick=quick)
    out = ROOT / "runs" / "paper" / ("small-quick" if quick else "small")
    results = out / "results" if quick else ROOT / "benchmarks" / "results" / "small"
    summary = run_setting(cfg, out, results, quick=quick)
    agg = summary["aggregate"]
    base = {"quick": quick, "seeds": len(summary["seeds"]), "results": str(results)}
    yield figure("paper_small_wall_time", "minutes", summary["wall_s"] / 60, None, base, GROUP)
    for arm, g in agg["arms"].items():
        for key, metric in (
            ("seen_accuracy", "accuracy"),
            ("unseen_accuracy", "accuracy"),
            ("conflict_kept", "rate"),
            ("tax_seen", "nats_per_token"),
            ("train_s", "seconds"),
        ):
            s = g.get(key)
            if s and s["n"]:
                details = {**base, "arm": arm, "std": round(s["std"], 4), "n": s["n"]}
                yield figure(f"paper_small_{arm}_{key}", metric, s["mean"], None, details, GROUP)
