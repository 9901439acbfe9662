"""The main job: ConGrad-filter a preference dataset, DPO on the kept pairs (Ray Train), per-language evaluation.

Laptop (embedded Ray, the README's Quick start):   python jobs/congrad.py
Cluster:   ray job submit --working-dir . -- python jobs/congrad.py --filter configs/gemma2-2b.yaml \
               --train configs/train-gemma2-2b.yaml --input s3://bucket/prefs/ --output s3://bucket/runs/r1
Options: --filter, --train, --input, --output, --set-filter KEY=VALUE, --set-train KEY=VALUE, --fresh, --verbose.
Re-submitting resumes both steps.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo (ray job submit --working-dir .)

from congrad_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
