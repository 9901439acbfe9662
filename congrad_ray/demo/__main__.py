"""``python -m congrad_ray.demo OUT_DIR``: write the demo corpus (train/ and heldout/ Parquet, ground_truth.json)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from .corpus import default_demo_spec
from .writing import write_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m congrad_ray.demo", description=__doc__)
    parser.add_argument("out_dir", help="directory to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs-per-language", type=int, default=None, help="train pairs per seen language")
    parser.add_argument("--heldout-per-language", type=int, default=None)
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args(argv)
    spec = default_demo_spec(seed=args.seed)
    if args.pairs_per_language is not None:
        spec = dataclasses.replace(spec, pairs_per_language=args.pairs_per_language)
    if args.heldout_per_language is not None:
        spec = dataclasses.replace(spec, heldout_per_language=args.heldout_per_language)
    summary = write_corpus(spec, args.out_dir, shards=args.shards)
    counts = {lang: entry["train"]["total"] for lang, entry in summary["languages"].items()}
    print(
        json.dumps(
            {
                "out_dir": args.out_dir,
                "n_train": summary["n_train"],
                "n_heldout": summary["n_heldout"],
                "n_flipped_train": summary["n_flipped_train"],
                "train_per_language": counts,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
