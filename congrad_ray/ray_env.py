"""Starting or joining Ray: embedded on a laptop, the cluster's when ``RAY_ADDRESS`` is set (``ray job submit``)."""

from __future__ import annotations

import logging
import os

from .errors import ConfigError

logging.getLogger("ray").setLevel(logging.WARNING)


def ensure_ray(num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address := os.environ.get("RAY_ADDRESS"):
        try:
            ray.init()  # a submitted job: the cluster fixes resources, the job its runtime env
        except ConnectionError as e:
            reason = " ".join(str(e).split())[:200]
            raise ConfigError(
                [f"RAY_ADDRESS={address}: cannot join the Ray cluster ({reason}); start it or unset RAY_ADDRESS"]
            ) from None
    else:
        env = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "CONGRAD_RAY_", "TOKENIZERS_"))}
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": env})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = True
