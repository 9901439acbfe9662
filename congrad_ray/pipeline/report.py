"""``report/``: cosine heatmaps before/after surgery, score histograms and kept fractions per language, and a short
Markdown + HTML summary; plus the one-screen console summary."""

from __future__ import annotations

import html
import io
from typing import Any

import numpy as np
import pyarrow as pa

from ..storage import Location
from .manifest import count_outcomes
from .reduce import load_direction


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _heatmaps(direction: dict[str, np.ndarray]) -> bytes:
    import matplotlib.pyplot as plt

    langs = [str(x) for x in direction["langs"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, key, title in zip(axes, ("cosine_before", "cosine_after"), ("G_l before PCGrad", "p_l after PCGrad")):
        im = ax.imshow(direction[key], vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(len(langs)), langs, rotation=90)
        ax.set_yticks(range(len(langs)), langs)
        ax.set_title(f"cosine, {title}")
        for (r, c), v in np.ndenumerate(direction[key]):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.8)
    out = _png(fig)
    plt.close(fig)
    return out


def _histograms(decisions: pa.Table) -> bytes:
    import matplotlib.pyplot as plt

    langs = decisions.column("lang").to_numpy(zero_copy_only=False).astype(str)
    scores = decisions.column("score").to_numpy(zero_copy_only=False)
    keep = decisions.column("keep").to_numpy(zero_copy_only=False)
    names = sorted(set(langs[np.isfinite(scores)]))
    cols = 4
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    bins = np.linspace(-1, 1, 41) if np.nanmax(np.abs(scores), initial=0) <= 1 else 40
    for ax, lang in zip(axes.flat, names):
        m = (langs == lang) & np.isfinite(scores)
        ax.hist(scores[m & keep], bins=bins, color="tab:green", alpha=0.7, label="kept")
        ax.hist(scores[m & ~keep], bins=bins, color="tab:red", alpha=0.6, label="dropped")
        ax.set_title(lang)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if names:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle("score = cos(S(g_i), g*) per language")
    out = _png(fig)
    plt.close(fig)
    return out


def _kept_fraction(per_lang: dict[str, dict[str, int]]) -> bytes:
    import matplotlib.pyplot as plt

    langs = [lang for lang in per_lang if per_lang[lang]["kept"] + per_lang[lang]["dropped"] > 0]
    frac = [per_lang[x]["kept"] / (per_lang[x]["kept"] + per_lang[x]["dropped"]) for x in langs]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(langs)), 3))
    ax.bar(langs, frac, color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_ylabel("kept / (kept + dropped)")
    out = _png(fig)
    plt.close(fig)
    return out


def summary_markdown(counts: dict[str, Any], direction: dict[str, np.ndarray] | None) -> str:
    lines = ["# congrad-ray filter report", ""]
    t = counts["totals"]
    lines.append(
        f"Input rows: {counts['input_rows']} - kept {t['kept']}, dropped {t['dropped']}, invalid {t['invalid']}."
    )
    lines += ["", "| language | kept | dropped | invalid |", "|---|---:|---:|---:|"]
    for lang, c in counts["per_language"].items():
        lines.append(f"| {lang} | {c['kept']} | {c['dropped']} | {c['invalid']} |")
    lines += ["", "| reason | rows |", "|---|---:|"] + [f"| {r} | {n} |" for r, n in counts["reasons"].items()]
    if direction is not None:
        langs = [str(x) for x in direction["langs"]]
        before = direction["cosine_before"]
        worst = min(
            ((before[i, j], langs[i], langs[j]) for i in range(len(langs)) for j in range(i + 1, len(langs))),
            default=None,
        )
        if worst:
            lines += [
                "",
                f"Most conflicting languages: {worst[1]} vs {worst[2]} (cosine {worst[0]:.3f} before surgery).",
            ]
    lines += [
        "",
        "![conflicts](conflict_heatmap.png)",
        "![scores](score_histograms.png)",
        "![kept](kept_fraction.png)",
        "",
    ]
    return "\n".join(lines)


def _html(markdown: str) -> str:
    body = []
    for line in markdown.splitlines():
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            body.append(f'<img src="{html.escape(src)}" style="max-width:100%">')
        elif line.startswith("|") and "---" not in line:
            cells = "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|"))
            body.append(f"<tr>{cells}</tr>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    joined = (
        "\n".join(body).replace("</p>\n<tr>", "</p>\n<table border=1><tr>").replace("</tr>\n<p>", "</tr></table>\n<p>")
    )
    return f"<!doctype html><html><meta charset='utf-8'><title>congrad-ray report</title><body>{joined}</body></html>"


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


def write_report(
    run: Location, decisions: pa.Table, records: list[dict[str, Any]], truth_column: str | None = None
) -> Location:
    import matplotlib

    matplotlib.use("Agg")
    report = run.join("report")
    counts = count_outcomes(records)
    direction = load_direction(run) if run.join("direction", "direction.npz").exists() else None
    if direction is not None:
        report.join("conflict_heatmap.png").write_bytes(_heatmaps(direction))
    report.join("score_histograms.png").write_bytes(_histograms(decisions))
    report.join("kept_fraction.png").write_bytes(_kept_fraction(counts["per_language"]))
    agreement = run.join("direction", "direction.json").read_json().get("agreement") if direction else None
    diagnosis = language_diagnosis(decisions, agreement, _truth(run, truth_column))
    report.join("diagnosis.json").write_json(diagnosis)
    md = summary_markdown(counts, direction) + "\n".join(diagnosis_markdown(diagnosis)) + "\n"
    report.join("summary.md").write_bytes(md.encode())
    report.join("summary.html").write_bytes(_html(md).encode())
    return report


def print_summary(manifest: dict[str, Any]) -> None:
    """One screen: per-language outcomes, reasons, timings and where the outputs are."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    counts = manifest["counts"]
    table = Table(title=f"congrad-ray filter: {counts['input_rows']} rows")
    for col in ("language", "kept", "dropped", "invalid"):
        table.add_column(col, justify="left" if col == "language" else "right")
    for lang, c in counts["per_language"].items():
        table.add_row(lang, str(c["kept"]), str(c["dropped"]), str(c["invalid"]))
    t = counts["totals"]
    table.add_row("total", str(t["kept"]), str(t["dropped"]), str(t["invalid"]), style="bold")
    console.print(table)
    if counts["reasons"]:
        console.print("reasons: " + ", ".join(f"{r}={n}" for r, n in counts["reasons"].items()))
    d = manifest.get("direction") or {}
    if d:
        console.print(f"PCGrad projections: {d.get('projections')} over {len(d.get('langs', []))} languages")
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in manifest["timings_s"].items())
    console.print(
        f"timings: {timings}"
        + (f" (resumed: {', '.join(manifest['resumed_stages'])})" if manifest["resumed_stages"] else "")
    )
    # Paths are printed unwrapped so they can be copied (and grepped) whatever the terminal width.
    console.print(f"kept pairs: {manifest['outputs']['kept']}", soft_wrap=True)
    console.print(f"report: {manifest['outputs']['report']}/summary.html", soft_wrap=True)
