"""What the console prints, each from plain data: a step's plan (a dict), the filter's manifest, the training
metrics. Rich renderables only; where they go is the session's business."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return " · ".join(f"{k} {_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    return str(v)


def plan_rows(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, text)`` rows of a plan dict: known keys merged into readable lines, any other key as it is."""
    p = {k: v for k, v in plan.items() if v not in (None, [], {}, "")}
    p.pop("step", None)
    rows = []
    if "input" in p:
        sizes = [f"{p.pop(k):,} {k}" for k in ("rows", "files") if k in p]
        rows.append(("input", " · ".join([_value(p.pop("input")), *sizes])))
    if "languages" in p:
        langs, seen = p.pop("languages"), p.pop("seen", None)
        note = f" (seen: {_value(seen)})" if seen else ""
        rows.append(("languages", f"{len(langs)}: " + "  ".join(f"{k} {n:,}" for k, n in langs.items()) + note))
    if "model" in p and "sketch" in p:
        rows.append(("model", f"{p.pop('model')} · sketch {_value(p.pop('sketch'))}"))
    if p.get("ground_truth"):
        rows.append(("ground truth", f"column {p.pop('ground_truth')} (read for the report only)"))
    rows += [(key.replace("_", " "), _value(value)) for key, value in p.items()]
    return rows


def plan_view(plan: dict[str, Any]) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    for label, text in plan_rows(plan):
        grid.add_row(label, text)
    return grid


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def filter_view(manifest: dict[str, Any]) -> RenderableType:
    """Per-language outcomes, with what ground truth says of them when the input has it, and the totals."""
    counts, truth = manifest["counts"], manifest.get("ground_truth")
    gt = (truth or {}).get("per_language", {})
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col in ("language", "kept", "dropped", "invalid"):
        table.add_column(col, justify="left" if col == "language" else "right")
    if truth:
        table.add_column("known conflicts dropped", justify="right")
        table.add_column("clean dropped", justify="right")
        table.add_column("conflict rate in → kept", justify="right")
    rows = [*counts["per_language"].items(), ("total", counts["totals"])]
    for lang, c in rows:
        cells = [lang, f"{c['kept']:,}", f"{c['dropped']:,}", f"{c['invalid']:,}"]
        g = gt.get(lang)
        if truth and g:
            cells += [
                f"{g['conflicts_dropped']:,}/{g['conflicts']:,} {_pct(g['conflicts_removed'])}",
                f"{g['clean_dropped']:,}/{g['clean']:,} {_pct(g['clean_removed'])}",
                f"{_pct(g['input_rate'])} → {_pct(g['kept_rate'])}",
            ]
        elif truth:
            cells += ["", "", ""]
        table.add_row(*cells, style="bold" if lang == "total" else None)
    parts: list[RenderableType] = [table]
    if truth:
        from ..pipeline.report import ground_truth_sentence

        parts.append(Text(f"Ground truth ({truth['column']}): " + ground_truth_sentence(truth)))
    return Group(*parts)


def filter_outputs(manifest: dict[str, Any], kept: bool = True) -> list[str]:
    out = manifest["outputs"]
    resumed = manifest.get("resumed_stages") or []
    lines = [f"report: {out['report']}/summary.html"] + ([f"kept pairs: {out['kept']}"] if kept else [])
    if resumed:
        lines.append(f"resumed: {', '.join(resumed)} done by an earlier run")
    return lines


def _delta(before: float | None, after: float | None) -> Text:
    if before is None or after is None:
        return Text("")
    d = after - before
    return Text(f"{d:+.2f}", style="green" if d > 0.005 else "red" if d < -0.005 else "")


def language_lines(metrics: dict[str, Any], manifest: dict[str, Any] | None = None) -> RenderableType:
    """One line per held-out language: seen/unseen, kept fraction (with the filter's manifest), the policy's
    preference accuracy before and after DPO, the DPO reward accuracy; then the seen / unseen groups."""
    final = metrics["eval"]["final"] or {}
    pref = final.get("preference") or {}
    before, after = pref.get("before", {}), pref.get("after", {})
    seen = set(metrics["languages"]["seen"])
    kept = (manifest or {}).get("counts", {}).get("per_language", {})
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("held-out")
    table.add_column("")
    if manifest is not None:
        table.add_column("kept", justify="right")
    for col in ("accuracy before → after DPO", "change", "reward acc.", "n"):
        table.add_column(col, justify="right")

    def row(name: str, role: str, b: dict, a: dict, reward: dict, style: str | None = None):
        cells: list[Any] = [Text(name), role]
        if manifest is not None:
            c = kept.get(name)
            total = c["kept"] + c["dropped"] + c["invalid"] if c else 0
            cells.append(f"{c['kept']:,}/{total:,} ({c['kept'] / total:.0%})" if total else "–")
        acc_b, acc_a = b.get("accuracy"), a.get("accuracy")
        both = acc_b is not None and acc_a is not None
        cells += [f"{acc_b:.2f} → {acc_a:.2f}" if both else "–", _delta(acc_b, acc_a)]
        cells += [f"{reward['accuracy']:.2f}" if reward else "–", f"{reward.get('n', a.get('n', 0)):,}"]
        table.add_row(*cells, style=style)

    for lang in final.get("per_language", {}):
        role = "seen" if lang in seen else "unseen"
        b, a = before.get("per_language", {}).get(lang, {}), after.get("per_language", {}).get(lang, {})
        row(lang, role, b, a, final["per_language"][lang])
    for group in ("seen", "unseen"):
        if group in final.get("groups", {}):
            b, a = before.get("groups", {}).get(group, {}), after.get("groups", {}).get(group, {})
            row(f"all {group}", "", b, a, final["groups"][group], style="bold")
    return table


def training_lines(metrics: dict[str, Any]) -> list[str]:
    t, d = metrics["training"], metrics["data"]["train"]
    loss = "" if t["loss_first"] is None else f"; loss {t['loss_first']:.3f} → {t['loss_last']:.3f}"
    lines = [
        f"trained {t['global_step']} steps on {d['valid']:,} pairs ({d['rows'] - d['valid']:,} skipped) with "
        f"{t['num_workers']} workers{loss}"
    ]
    if t["resumed_from"]:
        lines.append(f"resumed from step(s) {t['resumed_from']}")
    return lines


def training_outputs(metrics: dict[str, Any]) -> list[str]:
    model, out = metrics["model"], metrics["run"]["output"]
    adapter = f" · adapter: {model['adapter']}" if model.get("adapter") else ""
    return [f"model: {model['path']}{adapter} · metrics: {out}/metrics.json · plot: {out}/eval.png"]


ACCURACY_NOTE = (
    "accuracy: the model prefers the chosen answer (length-normalised log-prob); reward acc.: DPO's implicit reward"
)
