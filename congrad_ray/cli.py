"""``congrad-ray``: ConGrad-filter multilingual preference data, re-select, train DPO, run the self-rewarding loop.

Subcommands: ``run`` (filter -> DPO -> evaluation), ``filter``, ``plan`` (what a filter run will cost), ``select``, ``train``, ``iterate``, ``demo-data``.
Configs are validated before Ray starts, every problem at once. A user error (config, input, model, paths) prints
one line per problem and exits 2, without a traceback, also when it is raised inside a Ray worker; a run that
finishes with nothing to score exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .console import Session, log_location
from .errors import ConfigError, user_error
from .storage import Location


def _filter(args: argparse.Namespace) -> int:
    from .pipeline.filter_run import run_filter

    cfg = _appending(args) if args.append else _filter_config(args)
    with Session("filter", log_location(cfg.run.output, "filter"), args.verbose) as ui:
        manifest = run_filter(cfg, fresh=args.fresh, progress=ui.progress)
        _show_filter(ui, manifest)
        return _exit_code(ui, manifest)


def _plan(args: argparse.Namespace) -> int:
    """What ``filter`` would do and cost, without Ray and without writing the run directory; ``--calibrate`` first
    measures the sketch pass's cost per token on this machine and stores it beside the config."""
    import json

    from rich.console import Console

    from .config import calibration_path, load_filter_config
    from .console.screens import plan_view
    from .models import check_loadable
    from .pipeline.cost import CALIBRATION_PAIRS, calibrate, sample_pairs
    from .pipeline.filter_run import describe, survey

    cfg = load_filter_config(args.config, args.set, args.input, args.output, check_paths=True)
    check_loadable(cfg.model.name_or_path, cfg.model.revision, cfg.model.trust_remote_code)  # its tokenizer samples
    console = Console(stderr=args.json)
    if args.calibrate:
        s = survey(cfg, with_cost=False)
        target = Location.of(cfg.resources.calibration or str(calibration_path(args.config)))
        pairs = sample_pairs(s.cfg, s.units)
        console.print(f"calibrating the sketch pass on {min(len(pairs), CALIBRATION_PAIRS)} sampled pairs ...")
        target.write_json(calibrate(s.cfg, pairs))
        console.print(f"calibration written to {target.uri}")
        cfg = cfg.model_copy(update={"resources": cfg.resources.model_copy(update={"calibration": target.uri})})
    s = survey(cfg)
    plan = describe(s)
    console.print(plan_view(plan))
    if args.json:
        print(json.dumps({"plan": plan, "estimate": s.cost.get("estimate")}))
    return 0


def _filter_config(args: argparse.Namespace):
    from .config import load_filter_config

    if not args.config:
        raise ConfigError(["filter needs --config (e.g. configs/tiny-cpu.yaml), or --append PATHS --run-dir R"])
    return load_filter_config(args.config, args.set, args.input, args.output, check_paths=True)


def _appending(args: argparse.Namespace):
    """``filter --append NEW --run-dir R``: the run's own config, with NEW as one more input segment."""
    from .config import load_filter_config
    from .config_loading import Command
    from .pipeline.filter_run import select_problems

    problems = [] if args.run_dir else ["--append needs --run-dir: the finished run to grow"]
    problems += ["--append grows the run in place: drop --fresh"] if args.fresh else []
    problems += [
        f"--append takes its config from --run-dir; drop {flag}"
        for flag in ("--config", "--input", "--output")
        if getattr(args, flag[2:])
    ]
    if problems:
        raise ConfigError(problems)
    run_dir = args.run_dir.rstrip("/") or "/"
    if not Location.of(run_dir).join("_state", "sketch.json").exists():
        raise ConfigError(
            [f"--run-dir {args.run_dir} is not a filter run that finished sketching; run `congrad-ray filter` first"]
        )
    if problems := select_problems(args.set):
        raise ConfigError(problems)
    command = Command(flags={"input.paths": "restore the run's input: an append re-reads it"})
    cfg = load_filter_config(f"{run_dir}/config.yaml", args.set, check_paths=True, command=command)
    appended = [*cfg.input.appended, list(args.append)]
    return cfg.model_copy(update={"input": cfg.input.model_copy(update={"appended": appended})})


def _select(args: argparse.Namespace) -> int:
    from .config import load_filter_config
    from .config_loading import Command
    from .pipeline.filter_run import reselect, select_problems

    run_dir = args.run_dir.rstrip("/") or "/"
    if not Location.of(run_dir).join("config.yaml").exists():
        raise ConfigError(
            [
                f"--run-dir {args.run_dir} is not a filter run (no config.yaml); pass the --output of a `congrad-ray filter` run"
            ]
        )
    if problems := select_problems(args.set):
        raise ConfigError(problems)
    command = Command(flags={"input.paths": "restore the run's input: select re-reads it"})
    cfg = load_filter_config(f"{run_dir}/config.yaml", args.set, check_paths=True, command=command)
    with Session("select", log_location(cfg.run.output, "select"), args.verbose) as ui:
        manifest = reselect(cfg, progress=ui.progress)
        _show_filter(ui, manifest)
        return _exit_code(ui, manifest)


def _show_filter(ui: Session, manifest: dict, kept: bool = True) -> None:
    from .console.screens import filter_outputs, filter_view

    ui.show(filter_view(manifest))
    for line in filter_outputs(manifest, kept):
        ui.line(line)


def _exit_code(ui: Session, manifest: dict) -> int:
    """1 when nothing could be scored (every row invalid or unseen): the run wrote its outputs but cannot proceed."""
    totals = manifest["counts"]["totals"]
    if totals["kept"] + totals["dropped"] == 0:
        ui.error(
            f"no valid pairs: all {manifest['counts']['input_rows']} rows are in invalid/ (reasons in manifest.json)"
        )
        return 1
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from .demo import default_demo_spec, write_corpus

    summary = write_corpus(default_demo_spec(args.seed), args.out)
    print(f"wrote {summary['counts']['total']} pairs to {args.out}" if "counts" in summary else f"wrote {args.out}")
    return 0


def _iterate(args: argparse.Namespace) -> int:
    """The self-rewarding loop: rounds of generate -> judge -> pairs -> filter -> train (resumes by stage)."""
    import json

    from .selfreward import load_iterate_config, run_iterate

    cfg = load_iterate_config(args.config, args.set, args.output)
    with Session("iterate", log_location(cfg.run.output, "iterate"), args.verbose) as ui:
        summary = run_iterate(cfg, fresh=args.fresh, stop_after=args.stop_after)
        for s in summary["rounds"]:
            kept = (s["filter"].get("totals") or {}).get("kept", 0)
            ui.line(f"round {s['round']}: {s['pairs']['pairs']} pairs, {kept} kept, model -> {s['model_out']}")
        ui.line(json.dumps({k: summary[k] for k in ("run_dir", "final_model", "resumed_stages", "stopped_after")}))
    return 0


def _train(args: argparse.Namespace) -> int:
    """DPO (LP-DPO) on Ray Train over a filter run's kept pairs; per-language held-out evaluation."""
    from .train.config import load_train_config
    from .train.run import run_training

    cfg = load_train_config(args.config, args.set, args.train, args.eval, args.output, check_paths=True)
    with Session("train", log_location(cfg.run.output, "train"), args.verbose) as ui:
        _show_training(ui, run_training(cfg, fresh=args.fresh, progress=ui.progress))
    return 0


def _show_training(ui: Session, metrics: dict, manifest: dict | None = None) -> None:
    from .console.screens import ACCURACY_NOTE, language_lines, training_lines, training_outputs

    for line in training_lines(metrics) + training_outputs(metrics):
        ui.line(line)
    if metrics["eval"]["final"]:
        ui.show(language_lines(metrics, manifest))
        ui.line(ACCURACY_NOTE)


def _run(args: argparse.Namespace) -> int:
    """The main job: ConGrad-filter, then DPO on the kept pairs, then the per-language held-out evaluation."""
    from .config import load_filter_config
    from .config_loading import Command
    from .pipeline.filter_run import run_filter
    from .train.config import load_train_config
    from .train.run import check_storage as check_train_storage
    from .train.run import run_training

    out = args.output.rstrip("/") if args.output else None
    flags = {"input.paths": "--input", "run.output": "--output"}
    fcmd = Command(config_flag="--filter", set_flag="--set-filter", flags=flags)
    fcfg = load_filter_config(args.filter, args.set_filter, args.input, out and f"{out}/filter", command=fcmd)
    # the filter's run directory (its kept/) does not exist yet, so that path is checked when training starts
    tcmd = Command(config_flag="--train", set_flag="--set-train", flags={"run.output": "--output"})
    tcfg = load_train_config(
        args.train, args.set_train, [fcfg.run.output], None, out and f"{out}/train", check_paths=False, command=tcmd
    )
    check_train_storage(tcfg)  # both steps' paths refused before the filter starts, not after it
    log = Location.of(out).join("logs", "run.log") if out else log_location(fcfg.run.output, "run")
    with Session("run: filter → DPO → held-out evaluation", log, args.verbose) as ui:
        manifest = run_filter(fcfg, fresh=args.fresh, progress=ui.progress)
        _show_filter(ui, manifest, kept=False)  # the training step names its data
        if _exit_code(ui, manifest):
            return 1
        _show_training(ui, run_training(tcfg, fresh=args.fresh, progress=ui.progress), manifest)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="congrad-ray", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("filter", help="sketch, score and select a Parquet preference dataset")
    f.add_argument("--config", help="YAML config, e.g. configs/tiny-cpu.yaml (not with --append)")
    f.add_argument("--input", nargs="+", help="override input.paths (files, dirs, globs, URLs; demo:// = demo data)")
    f.add_argument("--output", help="override run.output (the run directory)")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    f.add_argument("--fresh", action="store_true", help="delete the run directory first instead of resuming")
    f.add_argument(
        "--append",
        nargs="+",
        metavar="PATH",
        help="grow a finished run (--run-dir) by these new input files: sketch only their rows, then select over all",
    )
    f.add_argument("--run-dir", help="with --append: the run directory to grow")
    f.add_argument("--verbose", action="store_true", help="show Ray's and the libraries' output as it comes")
    f.set_defaults(func=_filter)
    pl = sub.add_parser("plan", help="what a filter run will do and cost (tokens, sketch store, actor-hours); no Ray")
    pl.add_argument("--config", required=True, help="the filter config, e.g. configs/tiny-cpu.yaml")
    pl.add_argument("--input", nargs="+", help="override input.paths")
    pl.add_argument("--output", help="override run.output")
    pl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    pl.add_argument(
        "--calibrate",
        action="store_true",
        help="first time the sketch pass on a sample, on this machine as an actor runs it, and store the cost per "
        "token beside the config (<config>.calibration.json, or resources.calibration)",
    )
    pl.add_argument("--json", action="store_true", help="also print the plan and the estimate as one JSON line")
    pl.set_defaults(func=_plan)
    r = sub.add_parser("run", help="the main job: filter, then DPO on the kept pairs, then per-language evaluation")
    r.add_argument("--filter", default="configs/tiny-cpu.yaml", help="filter config (default: the tiny CPU demo)")
    r.add_argument("--train", default="configs/train-tiny-cpu.yaml", help="training config (its data.train is set)")
    r.add_argument("--input", nargs="+", help="override the filter's input.paths")
    r.add_argument("--output", help="run directory; the filter and training runs go in its filter/ and train/")
    r.add_argument("--set-filter", action="append", default=[], metavar="KEY=VALUE", help="override a filter value")
    r.add_argument("--set-train", action="append", default=[], metavar="KEY=VALUE", help="override a training value")
    r.add_argument("--fresh", action="store_true", help="start both steps over instead of resuming")
    r.add_argument("--verbose", action="store_true", help="show Ray's and the libraries' output as it comes")
    r.set_defaults(func=_run)
    s = sub.add_parser("select", help="re-score and re-select a finished run from its stored sketches (no model)")
    s.add_argument("--run-dir", required=True)
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. selection.rho=0.3")
    s.add_argument("--verbose", action="store_true", help="show Ray's and the libraries' output as it comes")
    s.set_defaults(func=_select)
    d = sub.add_parser("demo-data", help="write the bundled multilingual demo corpus as Parquet")
    d.add_argument("out")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo_data)
    it = sub.add_parser("iterate", help="self-rewarding loop: generate, judge, pair, ConGrad-filter, DPO; T rounds")
    it.add_argument("--config", required=True, help="YAML config, e.g. configs/iterate-tiny-cpu.yaml")
    it.add_argument("--output", help="override run.output (the loop directory)")
    it.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    it.add_argument("--fresh", action="store_true", help="delete the loop directory first instead of resuming")
    it.add_argument("--stop-after", metavar="ROUND:STAGE", help="stop once that stage is done, e.g. 1:judge")
    it.add_argument("--verbose", action="store_true", help="show Ray's and the libraries' output as it comes")
    it.set_defaults(func=_iterate)
    t = sub.add_parser("train", help="DPO on Ray Train over the kept pairs (LoRA or full), per-language evaluation")
    t.add_argument("--config", required=True, help="YAML config, e.g. configs/train-tiny-cpu.yaml")
    t.add_argument("--train", nargs="+", help="override data.train (a filter run dir, Parquet paths, demo://train)")
    t.add_argument("--eval", nargs="+", help="override data.eval (held-out Parquet paths, demo://heldout)")
    t.add_argument("--output", help="override run.output (the training run directory)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    t.add_argument("--fresh", action="store_true", help="delete the run directory first instead of resuming")
    t.add_argument("--verbose", action="store_true", help="show Ray's and the libraries' output as it comes")
    t.set_defaults(func=_train)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as e:
        error = user_error(e)
        if error is None:
            raise  # a bug: keep the traceback
        for line in str(error).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
