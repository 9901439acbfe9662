"""``python -m benchmarks [--only GROUP ...] [--quick] [--strict] [--list]``: one JSON line per figure on stdout."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import groups, run_groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--only", nargs="+", action="extend", metavar="GROUP", help="run only these groups (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute per group): a smoke run")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any figure misses its goal")
    parser.add_argument("--list", action="store_true", help="print the available groups and exit")
    args = parser.parse_args(argv)

    available = groups()
    if args.list:
        print("\n".join(available))
        return 0
    selected = args.only or available
    unknown = [name for name in selected if name not in available]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; available: {', '.join(available)}")

    # Benchmarks run offline, like the tests.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Every Ray a benchmark starts is embedded: on loopback only (see congrad_ray.ray_env._embedded_defaults).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

    missed = 0
    for record in run_groups(selected, quick=args.quick):
        print(json.dumps(record, sort_keys=False), flush=True)
        missed += record["met"] is False
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
