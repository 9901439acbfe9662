"""``report/``: cosine heatmaps before/after surgery, score histograms with each language's keep threshold, kept
fractions, conflict rates by ground truth (when the input has it), the per-language diagnosis (``diagnosis.json``:
agreement with the consensus and, with ground truth, how the scores separate known conflicts), and ``summary.md`` /
``summary.html``.

Every plot lists the languages in the same (sorted) order. ``summary.html`` is rendered from ``summary.md`` by
markdown-it-py with its images embedded as data URIs, so the one file can be mailed or attached to a tracker.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa

from ..report_html import render_html
from ..storage import Location
from .reduce import load_direction


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _figure(**kwargs: Any) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    return plt.subplots(layout="constrained", **kwargs)


def _heatmaps(direction: dict[str, np.ndarray]) -> bytes:
    langs = [str(x) for x in direction["langs"]]
    size = max(4.0, 0.45 * len(langs) + 2)
    fig, axes = _figure(ncols=2, figsize=(2 * size + 1, size))
    for ax, key, title in zip(axes, ("cosine_before", "cosine_after"), ("$G_l$ before PCGrad", "$p_l$ after PCGrad")):
        im = ax.imshow(direction[key], vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(len(langs)), langs, rotation=90)
        ax.set_yticks(range(len(langs)), langs)
        ax.set_xlabel("language")
        ax.set_ylabel("language")
        ax.set_title(f"cosine between languages, {title}", fontsize=10)
        for (r, c), v in np.ndenumerate(direction[key]):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if abs(v) > 0.6 else "black")
    fig.colorbar(im, ax=axes, shrink=0.8, label="cosine")
    return _png(fig)


def keep_thresholds(decisions: pa.Table) -> dict[str, float]:
    """Per language, the lowest score that was kept: the rule's effective threshold (languages with a kept pair)."""
    langs = decisions.column("lang").to_numpy(zero_copy_only=False).astype(str)
    scores = decisions.column("score").to_numpy(zero_copy_only=False)
    keep = decisions.column("keep").to_numpy(zero_copy_only=False).astype(bool)
    return {lang: float(scores[keep & (langs == lang)].min()) for lang in sorted(set(langs[keep]))}


def _histograms(decisions: pa.Table) -> bytes:
    from matplotlib.ticker import MaxNLocator

    langs = decisions.column("lang").to_numpy(zero_copy_only=False).astype(str)
    scores = decisions.column("score").to_numpy(zero_copy_only=False)
    keep = decisions.column("keep").to_numpy(zero_copy_only=False).astype(bool)
    names = sorted(set(langs[np.isfinite(scores)]))
    thresholds = keep_thresholds(decisions)
    cols = min(4, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig, axes = _figure(nrows=rows, ncols=cols, figsize=(3.2 * cols, 2.6 * rows + 0.6), squeeze=False)
    cosine = np.nanmax(np.abs(scores), initial=0) <= 1
    bins = np.linspace(-1, 1, 41) if cosine else np.histogram_bin_edges(scores[np.isfinite(scores)], 40)
    for ax, lang in zip(axes.flat, names):
        m = (langs == lang) & np.isfinite(scores)
        ax.hist(scores[m & keep], bins=bins, color="tab:green", alpha=0.7, label="kept")
        ax.hist(scores[m & ~keep], bins=bins, color="tab:red", alpha=0.6, label="dropped")
        if lang in thresholds:
            ax.axvline(thresholds[lang], color="black", lw=1, ls="--", label="keep threshold")
        ax.set_title(f"{lang} (keep >= {thresholds[lang]:.2f})" if lang in thresholds else lang, fontsize=9)
        ax.set_xlim(bins[0], bins[-1])
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[: len(names)]):
        if i + cols >= len(names):  # no panel below it
            ax.set_xlabel("score")
        if i % cols == 0:
            ax.set_ylabel("pairs")
    if names:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle("score = cos(S(g_i), g*) per language")
    return _png(fig)


def _kept_fraction(per_lang: dict[str, dict[str, int]]) -> bytes:
    langs = [lang for lang in sorted(per_lang) if per_lang[lang]["kept"] + per_lang[lang]["dropped"] > 0]
    frac = [per_lang[x]["kept"] / (per_lang[x]["kept"] + per_lang[x]["dropped"]) for x in langs]
    fig, ax = _figure(figsize=(max(4, 0.6 * len(langs) + 1), 3))
    ax.bar(langs, frac, color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_xlabel("language")
    ax.set_ylabel("kept / (kept + dropped)")
    ax.set_title("kept fraction per language", fontsize=10)
    return _png(fig)


def _conflict_rates(per_language: dict[str, dict[str, Any]]) -> bytes:
    langs = [lang for lang in per_language if lang != "total"]
    x = np.arange(len(langs))
    fig, ax = _figure(figsize=(max(4, 0.7 * len(langs) + 1), 3))
    for offset, key, label, color in (
        (-0.2, "input_rate", "input", "tab:gray"),
        (0.2, "kept_rate", "kept", "tab:blue"),
    ):
        values = [per_language[lang][key] or 0.0 for lang in langs]
        ax.bar(x + offset, values, width=0.4, label=label, color=color)
    ax.set_xticks(x, langs)
    ax.set_ylim(0, 1)
    ax.set_xlabel("language")
    ax.set_ylabel("known conflicts / pairs")
    ax.set_title("conflict rate by ground truth: input vs kept", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def ground_truth_sentence(truth: dict[str, Any]) -> str:
    t = truth["per_language"]["total"]
    return (
        f"The filter dropped {t['conflicts_dropped']:,} of the {t['conflicts']:,} known conflicting pairs "
        f"({_pct(t['conflicts_removed'])}) and {t['clean_dropped']:,} of the {t['clean']:,} clean ones "
        f"({_pct(t['clean_removed'])}); the conflict rate is {_pct(t['input_rate'])} in the input and "
        f"{_pct(t['kept_rate'])} in the kept set."
    )


def _ground_truth_lines(truth: dict[str, Any]) -> list[str]:
    lines = ["", f"## Ground truth (`{truth['column']}`)", "", ground_truth_sentence(truth), ""]
    lines += [
        "| language | pairs | known conflicts | conflicts dropped | clean dropped | conflict rate: input | kept |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lang, g in truth["per_language"].items():
        name = "**total**" if lang == "total" else lang
        lines.append(
            f"| {name} | {g['pairs']:,} | {g['conflicts']:,} | {_share(g['conflicts_dropped'], g['conflicts_removed'])} "
            f"| {_share(g['clean_dropped'], g['clean_removed'])} | {_pct(g['input_rate'])} | {_pct(g['kept_rate'])} |"
        )
    return lines


def _share(n: int, fraction: float | None) -> str:
    return f"{n:,}" if fraction is None else f"{n:,} ({fraction:.0%})"


def summary_markdown(
    counts: dict[str, Any],
    direction: dict[str, np.ndarray] | None,
    truth: dict[str, Any] | None = None,
    diagnosis: dict[str, dict[str, Any]] | None = None,
) -> str:
    t = counts["totals"]
    lines = [
        "# congrad-ray filter report",
        "",
        f"Input rows: {counts['input_rows']:,}: kept {t['kept']:,}, dropped {t['dropped']:,}, "
        f"invalid {t['invalid']:,}.",
        "",
        "## Outcomes per language",
        "",
        "| language | kept | dropped | invalid | kept fraction |",
        "|---|---:|---:|---:|---:|",
    ]
    for lang, c in counts["per_language"].items():
        scored = c["kept"] + c["dropped"]
        lines.append(
            f"| {lang} | {c['kept']:,} | {c['dropped']:,} | {c['invalid']:,} | {_pct(c['kept'] / scored if scored else None)} |"
        )
    lines.append(f"| **total** | {t['kept']:,} | {t['dropped']:,} | {t['invalid']:,} | |")
    if truth is not None:
        lines += _ground_truth_lines(truth)
    lines += ["", "## Reasons", "", "| reason | rows |", "|---|---:|"]
    lines += [f"| {r} | {n:,} |" for r, n in counts["reasons"].items()]
    images = [("Score histograms per language", "score_histograms.png"), ("Kept fraction", "kept_fraction.png")]
    if truth is not None:
        images.append(("Conflict rate by ground truth", "conflict_rates.png"))
    if direction is not None:
        images.insert(0, ("Cosine between languages", "conflict_heatmap.png"))
        lines += ["", "## Direction", "", _most_conflicting(direction)]
    lines += diagnosis_markdown(diagnosis or {})
    lines += ["", "## Plots", ""] + [f"![{alt}]({name})\n" for alt, name in images]
    return "\n".join(lines)


def _most_conflicting(direction: dict[str, np.ndarray]) -> str:
    langs = [str(x) for x in direction["langs"]]
    before = direction["cosine_before"]
    pairs = [(before[i, j], langs[i], langs[j]) for i in range(len(langs)) for j in range(i + 1, len(langs))]
    if not pairs:
        return f"One language ({', '.join(langs)}): no surgery."
    worst = min(pairs)
    return f"Most conflicting languages: {worst[1]} vs {worst[2]} (cosine {worst[0]:.3f} before surgery)."


def _truth(run: Location, column: str | None) -> dict[str, bool] | None:
    """``id -> conflicting`` from ``kept/`` and ``dropped/`` when the input carried ``column``, else None."""
    if not column:
        return None
    out: dict[str, bool] = {}
    for name in ("kept", "dropped"):
        for f in run.join(name).list(".parquet"):
            table = f.read_table()
            if column not in table.column_names:
                return None
            out.update(zip(table.column("id").to_pylist(), (bool(x) for x in table.column(column).to_pylist())))
    return out or None


def language_diagnosis(
    decisions: pa.Table, agreement: dict[str, dict[str, float]] | None, truth: dict[str, bool] | None
) -> dict[str, dict[str, Any]]:
    """Per seen language: rows scored and kept, its agreement with the consensus (``cos(G_l, g*)`` before surgery,
    ``cos(p_l, g*)`` after, ``cos(G_l, others)``) and, with ground truth, how the scores of its conflicting pairs sit
    against its clean ones (:func:`congrad_ray.core.language_separation`, on the ranking score)."""
    from ..core import language_separation

    agreement = agreement or {}
    status = decisions.column("status").to_numpy(zero_copy_only=False)
    ok = status == "ok"
    table = decisions.filter(pa.array(ok))
    langs = np.asarray(table.column("lang").to_pylist(), dtype=str)
    keep = np.asarray(table.column("keep").to_pylist(), dtype=bool)
    scores = table.column("score").to_numpy(zero_copy_only=False)
    out: dict[str, dict[str, Any]] = {}
    for lang in sorted(agreement):
        m = langs == lang
        out[lang] = {"n": int(m.sum()), "kept": int(keep[m].sum()), **agreement[lang]}
    if truth is not None:
        ids = table.column("id").to_pylist()
        flags = np.array([truth.get(i, False) for i in ids], dtype=bool)
        kept_bad = {lang: int((keep & flags & (langs == lang)).sum()) for lang in out}
        for lang, sep in language_separation(scores, langs, flags).items():
            if lang in out:
                out[lang].update(sep, conflicting_kept=kept_bad[lang])
    return out


def diagnosis_markdown(diagnosis: dict[str, dict[str, Any]]) -> list[str]:
    """The per-language diagnosis as Markdown lines (a heading, a table, a legend)."""
    if not diagnosis:
        return []
    truth = any("auroc" in d for d in diagnosis.values())

    def f(v: Any, digits: int = 2) -> str:
        return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:+.{digits}f}"

    head = "| language | scored | kept | cos(G_l, g*) before | cos(p_l, g*) after | cos(G_l, others) |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if truth:
        head += " conflicting (kept) | mean score clean / conflicting | separation (AUROC) |"
        rule += "---:|---:|---:|"
    lines = ["", "## Per-language diagnosis", "", head, rule]
    for lang, d in diagnosis.items():
        row = f"| {lang} | {d['n']} | {d['kept']} | {f(d.get('before'))} | {f(d.get('after'))} | {f(d.get('others'))} |"
        if truth:
            sep = d.get("auroc")
            row += (
                f" {d.get('conflicting', 0)} ({d.get('conflicting_kept', 0)}) |"
                f" {f(d.get('clean_mean'))} / {f(d.get('conflicting_mean'))} |"
                f" {'–' if sep is None or not np.isfinite(sep) else f'{sep:.2f}'} |"
            )
        lines.append(row)
    lines += [
        "",
        "cos(G_l, others): the language's gradient against the mean of the other languages' (negative: it conflicts;"
        " the agreement budgets read it). Separation: the probability that a clean pair of the language outscores a"
        " conflicting one (1 = every conflicting pair ranks below every clean one, 0.5 = none separated).",
    ]
    return lines


def write_report_from_scores(run_uri: str, counts: dict[str, Any], truth: dict[str, Any] | None) -> None:
    """Ray task body (pipeline/select_run.py): :func:`write_report` over the run's ``scores.parquet``."""
    run = Location.of(run_uri)
    columns = ["id", "lang", "status", "score", "keep"]
    write_report(run, run.join("scores.parquet").read_table(columns), counts, truth)


def write_report(
    run: Location, decisions: pa.Table, counts: dict[str, Any], truth: dict[str, Any] | None = None
) -> Location:
    import matplotlib

    matplotlib.use("Agg")
    report = run.join("report")
    direction = load_direction(run) if run.join("direction", "direction.npz").exists() else None
    images = {
        "score_histograms.png": _histograms(decisions),
        "kept_fraction.png": _kept_fraction(counts["per_language"]),
    }
    if direction is not None:
        images["conflict_heatmap.png"] = _heatmaps(direction)
    if truth is not None:
        images["conflict_rates.png"] = _conflict_rates(truth["per_language"])
    for name, data in images.items():
        report.join(name).write_bytes(data)
    agreement = run.join("direction", "direction.json").read_json().get("agreement") if direction else None
    diagnosis = language_diagnosis(decisions, agreement, _truth(run, truth and truth["column"]))
    report.join("diagnosis.json").write_json(diagnosis)
    md = summary_markdown(counts, direction, truth, diagnosis)
    report.join("summary.md").write_bytes(md.encode())
    report.join("summary.html").write_bytes(render_html(md, images, "congrad-ray filter report").encode())
    return report
