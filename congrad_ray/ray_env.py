"""Starting or joining Ray: embedded on a laptop, the cluster's when ``RAY_ADDRESS`` is set (``ray job submit``).

An embedded Ray is always a new single-node one (``address="local"``): it never attaches by accident to a cluster
some other process recorded in ``$RAY_TMPDIR/ray/ray_current_cluster``. On a cluster, :func:`require_shared_storage`
refuses node-local paths before any work starts: each node would read or write its own copy of them.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from .errors import ConfigError

logging.getLogger("ray").setLevel(logging.WARNING)
log = logging.getLogger("congrad_ray")

SHARED_FIX = (
    "use an object store URL (s3://bucket/..., gs://..., abfs://...) or a path mounted at the same place on every "
    "node, declared with run.shared_filesystem: true"
)


def on_cluster() -> bool:
    """A submitted job or a driver given ``RAY_ADDRESS``: the work runs on the cluster's nodes."""
    return bool(os.environ.get("RAY_ADDRESS"))


def ensure_ray(num_cpus: int | None = None) -> None:
    if not os.environ.get("RAY_ADDRESS"):
        _embedded_defaults()  # before `import ray`: Ray reads its auth mode when it is first imported
    import ray

    if ray.is_initialized():
        return
    if on_cluster():
        try:
            ray.init()  # a submitted job: the cluster fixes resources, the job its runtime env
        except ConnectionError as e:
            reason = " ".join(str(e).split())[:200]
            raise ConfigError(
                [
                    f"RAY_ADDRESS={os.environ['RAY_ADDRESS']}: cannot join the Ray cluster ({reason}); start it or unset RAY_ADDRESS"
                ]
            ) from None
    else:
        env = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "CONGRAD_RAY_", "TOKENIZERS_"))}
        # The dashboard serves Ray's State API, which Ray Train's placement-group cleaner polls every second (it
        # warns on each failed query); bound to loopback like the rest of an embedded Ray.
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            runtime_env={"env_vars": env},
        )
    quiet_data_progress()


def quiet_data_progress() -> None:
    """The console shows progress from the run's own records; Ray Data's bars only with --verbose (call it in every
    process that starts a Ray Data job: the driver, and a task that runs one)."""
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = os.environ.get("CONGRAD_RAY_VERBOSE", "") not in ("", "0")


def cluster_summary() -> dict[str, Any]:
    """Alive nodes and the resources they offer now (an autoscaler may add more)."""
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    totals: dict[str, float] = {}
    for n in nodes:
        for key in ("CPU", "GPU"):
            totals[key] = totals.get(key, 0.0) + float(n["Resources"].get(key, 0.0))
    return {"nodes": len(nodes), "resources": totals, "embedded": not on_cluster()}


def _spreads(needs: dict[str, float]) -> str | None:
    """Why work may run on a node other than the driver's, or None: more than one node, or a single node that
    lacks what one task or actor needs (an autoscaler will add nodes for it)."""
    summary = cluster_summary()
    if summary["nodes"] > 1:
        return f"this cluster has {summary['nodes']} nodes"
    short = {k: v for k, v in needs.items() if v and summary["resources"].get(k, 0.0) < v}
    if short:
        wanted = ", ".join(f"{k} {v:g}" for k, v in short.items())
        return f"the work ({wanted} each) cannot run on this cluster's only node, so it will run on added nodes"
    return None


def require_shared_storage(paths: dict[str, list[str]], shared_filesystem: bool, needs: dict[str, float]) -> None:
    """Refuse node-local ``paths`` (by config key) on a cluster whose work can leave the driver's node, one line
    per path, unless the config declares them on a shared filesystem. Embedded Ray: nothing to check."""
    from .errors import ConfigError
    from .storage import is_local_path

    # demo:// is generated into the driver's local cache: as node-local as a plain path
    local = {key: [p for p in ps if is_local_path(p) or p.startswith("demo://")] for key, ps in paths.items()}
    local = {key: ps for key, ps in local.items() if ps}
    if shared_filesystem or not local or not on_cluster():
        return
    ensure_ray()
    why = _spreads(needs)
    if why is None:
        return
    problems = [f"{key}: {p} is node-local but {why}: {SHARED_FIX}" for key, ps in local.items() for p in ps]
    raise ConfigError(problems)


def placement() -> dict[str, Any]:
    """Where this task or actor runs and on what: its node, the GPUs Ray *scheduled* it with, and the device it
    computes on (CUDA only if torch sees a device: a fake or misconfigured GPU node runs on CPU)."""
    import ray
    import torch

    ctx = ray.get_runtime_context()
    gpu_ids = [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])]
    device = "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"
    if gpu_ids and device == "cpu":
        log.warning(
            "scheduled with GPU %s on node %s but CUDA is not available to torch %s: computing on CPU",
            ",".join(gpu_ids),
            ctx.get_node_id()[:12],
            torch.__version__,
        )
    return {"node": ctx.get_node_id(), "pid": os.getpid(), "gpu_ids": gpu_ids, "device": device}


def _embedded_defaults() -> None:
    """Settings an embedded (one-machine) Ray is started with, each chosen explicitly where Ray would warn:

    * ``RAY_AUTH_MODE=token``: Ray 2.60's default for a new local cluster, which it announces with a warning
      unless the mode is set (``disabled`` opts out, as Ray says); Ray reads the mode once, when it is imported,
      so a process that imported Ray before keeps Ray's own default;
    * loopback only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when Ray is imported): an embedded Ray serves
      this machine, so its node address is 127.0.0.1 and its GCS, raylet and workers listen there only, as Ray
      does on macOS, instead of on the machine's network address;
    * no Ray Train preemption watcher: it polls for nodes being drained (spot preemption on a cloud cluster),
      which cannot happen to the only node, and Ray logs an error when it starts it (its constructor takes the
      workers' actor handles, https://github.com/ray-project/ray/issues/53727).
    """
    if "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
