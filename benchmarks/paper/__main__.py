"""``python -m benchmarks.paper --setting small|real [--seeds N] [--quick] [--set key=value ...]``.

Runs one setting of the paper benchmark (arms, ablations, seeds) and writes ``results.json``, ``results.md`` and
plots into ``--results`` (default ``benchmarks/results/<setting>``; ``runs/paper/<setting>-quick/results`` with
``--quick``, so a smoke run never overwrites committed results). Work files go to ``--out``
(default ``runs/paper/<setting>[-quick]``). ``--report-only DIR`` redraws tables and plots from ``DIR/results.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .run import ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper", description=__doc__)
    parser.add_argument("--setting", default="small", help="small, real, or a setting YAML (configs/*.yaml)")
    parser.add_argument("--seeds", type=int, default=None, help="run seeds 0..N-1 (default: the config's)")
    parser.add_argument("--quick", action="store_true", help="the config's quick: block (a smoke run)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted config override")
    parser.add_argument("--out", type=Path, default=None, help="work directory")
    parser.add_argument("--results", type=Path, default=None, help="results directory")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse finished seeds of the same config (in --out, or committed in --results/results.json)",
    )
    parser.add_argument("--keep-models", action="store_true", help="keep every arm's trained model and checkpoints")
    parser.add_argument("--report-only", type=Path, default=None, metavar="DIR", help="redraw DIR/results.json")
    args = parser.parse_args(argv)

    from congrad_ray.errors import ConfigError

    from .report import redraw
    from .run import run_setting
    from .settings import load_setting

    if args.report_only is not None:
        redraw(args.report_only)
        return 0
    try:
        cfg = load_setting(args.setting, args.set, quick=args.quick, seeds=args.seeds)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = cfg.setting + ("-quick" if args.quick else "")
    out = args.out or ROOT / "runs" / "paper" / name
    results = args.results or (out / "results" if args.quick else ROOT / "benchmarks" / "results" / cfg.setting)
    run_setting(cfg, out, results, quick=args.quick, fresh=not args.resume, keep_models=args.keep_models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
