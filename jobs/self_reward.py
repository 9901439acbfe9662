"""The self-rewarding job: rounds of generate -> judge -> pairs -> ConGrad filter -> DPO, each in its own directory.

Laptop (embedded Ray):   python jobs/self_reward.py --config configs/iterate-tiny-cpu.yaml
Cluster:                 ray job submit --working-dir . -- python jobs/self_reward.py \
                             --config configs/iterate-gemma2-2b.yaml --output s3://bucket/runs/sr1
Options: --output, --set dotted.key=value (repeatable), --fresh, --verbose, --stop-after ROUND:STAGE.
Re-submitting resumes at the first stage without a completion record.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo (ray job submit --working-dir .)

from congrad_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["iterate", *sys.argv[1:]]))
