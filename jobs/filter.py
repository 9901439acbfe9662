"""The filter job: ConGrad-filter a Parquet preference dataset into kept/ dropped/ invalid/ + report.

Laptop (embedded Ray):   python jobs/filter.py --config configs/tiny-cpu.yaml
Cluster:                 ray job submit --working-dir . -- python jobs/filter.py --config configs/gemma2-2b.yaml \
                             --input s3://bucket/prefs/ --output s3://bucket/runs/r1
Options: --input, --output, --set dotted.key=value (repeatable), --fresh, --verbose. Re-submitting resumes the run.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo (ray job submit --working-dir .)

from congrad_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["filter", *sys.argv[1:]]))
