"""Starting or joining Ray: embedded on a laptop, the cluster's when ``RAY_ADDRESS`` is set (``ray job submit``)."""

from __future__ import annotations

import logging
import os
import sys

logging.getLogger("ray").setLevel(logging.WARNING)


def ensure_ray(num_cpus: int | None = None) -> None:
    if not os.environ.get("RAY_ADDRESS"):
        _embedded_defaults()  # before `import ray`: Ray reads its auth mode when it is first imported
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # a submitted job: the cluster fixes resources, the job its runtime env
    else:
        env = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "CONGRAD_RAY_", "TOKENIZERS_"))}
        # The dashboard serves Ray's State API, which Ray Train's placement-group cleaner polls every second (it
        # warns on each failed query); bound to loopback like the rest of an embedded Ray.
        ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", runtime_env={"env_vars": env})
    from ray.data import DataContext

    # The console shows progress from the run's own records; Ray Data's bars only with --verbose.
    DataContext.get_current().enable_progress_bars = os.environ.get("CONGRAD_RAY_VERBOSE", "") not in ("", "0")


def _embedded_defaults() -> None:
    """Settings an embedded (one-machine) Ray is started with, each chosen explicitly where Ray would warn:

    * ``RAY_AUTH_MODE=token``: Ray 2.60's default for a new local cluster, which it announces with a warning
      unless the mode is set (``disabled`` opts out, as Ray says); Ray reads the mode once, when it is imported,
      so a process that imported Ray before keeps Ray's own default;
    * no Ray Train preemption watcher: it polls for nodes being drained (spot preemption on a cloud cluster),
      which cannot happen to the only node, and Ray logs an error when it starts it (its constructor takes the
      workers' actor handles, https://github.com/ray-project/ray/issues/53727).
    """
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
