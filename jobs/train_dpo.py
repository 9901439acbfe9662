"""The DPO job: LP-DPO on Ray Train over a filter run's kept pairs, then per-language held-out evaluation.

Laptop (embedded Ray):   python jobs/train_dpo.py --config configs/train-tiny-cpu.yaml
Cluster:                 ray job submit --working-dir . -- python jobs/train_dpo.py --config configs/train-llama3-8b.yaml \
                             --train s3://bucket/runs/r1 --eval s3://bucket/heldout/ --output s3://bucket/train/r1
Options: --train, --eval, --output, --set dotted.key=value (repeatable), --fresh, --verbose.
Re-submitting resumes from the last Ray Train checkpoint.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo (ray job submit --working-dir .)

from congrad_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
