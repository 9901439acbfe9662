"""PNG plots of a setting's results: accuracy / conflict / tax per arm, accuracy per language, ablations, cost."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .aggregate import NAN
from .arms import label as _label


def _bars(ax: Any, names: list[str], series: dict[str, Callable[[str], dict | None]], title: str, ylabel: str) -> None:
    import numpy as np

    x = np.arange(len(names))
    width = 0.8 / max(1, len(series))
    for i, (label, get) in enumerate(series.items()):
        stats = [get(n) or {"mean": NAN, "std": 0} for n in names]
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            [s["mean"] for s in stats],
            width,
            yerr=[s["std"] if math.isfinite(s.get("std", NAN)) else 0 for s in stats],
            capsize=3,
            label=label,
        )
    ax.set_xticks(x)
    ax.set_xticklabels([_label(n) for n in names], rotation=25, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def plots(summary: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cfg, agg = summary["config"], summary["aggregate"]
    arms = [a for a in cfg["arms"] if a in agg["arms"]]
    A = agg["arms"]
    written = []

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    _bars(
        axes[0],
        arms,
        {
            "seen": lambda n: A[n].get("seen_accuracy"),
            "unseen": lambda n: A[n].get("unseen_accuracy"),
            "systematic lang": lambda n: A[n].get("systematic_accuracy"),
        },
        "held-out preference accuracy (macro)",
        "accuracy",
    )
    axes[0].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[0].set_ylim(0, 1)
    _bars(
        axes[1],
        arms,
        {"kept set": lambda n: A[n].get("conflict_kept")},
        "conflict rate of the kept set (ground truth)",
        "fraction of pairs against the task",
    )
    if arms and A[arms[0]].get("conflict_input"):
        axes[1].axhline(A[arms[0]]["conflict_input"]["mean"], color="red", lw=0.8, ls="--", label="input")
        axes[1].legend(fontsize=8)
    _bars(
        axes[2],
        arms,
        {"seen": lambda n: A[n].get("tax_seen"), "unseen": lambda n: A[n].get("tax_unseen")},
        "alignment tax (Δ LM loss on clean text)",
        "nats/token (positive = worse)",
    )
    axes[2].axhline(0, color="grey", lw=0.8)
    fig.suptitle(f"{summary['setting']} setting, {len(summary['seeds'])} seed(s): mean ± std", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=100)
    plt.close(fig)
    written.append("accuracy.png")

    langs = [*cfg["corpus"]["seen"], *cfg["corpus"]["unseen"]]
    trained = [a for a in arms if A[a].get("accuracy_per_language")]
    if trained:
        grid = np.array(
            [[(A[a]["accuracy_per_language"].get(lg) or {"mean": NAN})["mean"] for lg in langs] for a in trained]
        )
        fig, ax = plt.subplots(figsize=(1.1 * len(langs) + 3, 0.6 * len(trained) + 2))
        im = ax.imshow(grid, vmin=0.3, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(langs)))
        ax.set_xticklabels([f"{lg}\n{agg['roles'][lg]}" for lg in langs], fontsize=8)
        ax.set_yticks(range(len(trained)))
        ax.set_yticklabels([_label(a) for a in trained], fontsize=8)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if math.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white")
        fig.colorbar(im, ax=ax, label="held-out accuracy")
        ax.set_title("held-out preference accuracy per language (mean over seeds)", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "per_language.png", dpi=100)
        plt.close(fig)
        written.append("per_language.png")

    abl = ["congrad", *[a for a in cfg["ablations"] if a in agg["ablations"]]] if cfg["ablations"] else []
    if len(abl) > 1:
        G = {**agg["ablations"], "congrad": A.get("congrad", {})}
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
        _bars(
            axes[0],
            abl,
            {
                "noisy flips removed": lambda n: G[n].get("noisy_removed"),
                "systematic pairs removed": lambda n: G[n].get("systematic_removed"),
            },
            "what each variant removes (ground truth)",
            "fraction removed",
        )
        axes[0].axhline(1 - cfg["rho"], color="grey", lw=0.8, ls="--")
        axes[0].set_ylim(0, 1.05)
        _bars(
            axes[1],
            abl,
            {"Jaccard vs ConGrad": lambda n: G[n].get("jaccard_vs_congrad")},
            "kept-set overlap with the ConGrad arm",
            "Jaccard",
        )
        axes[1].set_ylim(0, 1.05)
        fig.tight_layout()
        fig.savefig(out / "ablations.png", dpi=100)
        plt.close(fig)
        written.append("ablations.png")

    fig, ax = plt.subplots(figsize=(9, 4.2))
    x = np.arange(len(arms))
    sketch = [(A[a].get("sketch_s") or {"mean": 0})["mean"] for a in arms]
    select = [(A[a].get("select_s") or {"mean": 0})["mean"] for a in arms]
    train = [(A[a].get("train_s") or {"mean": 0})["mean"] for a in arms]
    sketch = [0 if not math.isfinite(v) else v for v in sketch]
    select = [0 if not math.isfinite(v) else v for v in select]
    train = [0 if not math.isfinite(v) else v for v in train]
    ax.bar(x, sketch, label="sketch pass (shared)")
    ax.bar(x, select, bottom=sketch, label="selection")
    ax.bar(x, train, bottom=[a + b for a, b in zip(sketch, select)], label="DPO step")
    ax.set_xticks(x)
    ax.set_xticklabels([_label(a) for a in arms], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("seconds (mean over seeds)")
    ax.set_title("cost per arm (wall time, noisy on a shared machine)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "cost.png", dpi=100)
    plt.close(fig)
    written.append("cost.png")
    return written
