"""The body of the autoscaling test, run by tests/test_autoscaling.py in its own network, PID and mount namespaces
(``AutoscalingCluster.start()`` and ``.shutdown()`` run ``ray stop --force``, which there can only reach this
namespace's processes).

Ray's fake multi-node autoscaler (v1) with the config inline (the pip wheel lacks ``fake_multi_node/example.yaml``):
a head with no CPUs, a CPU worker type and a fake-GPU worker type, both from 0 nodes. The filter with
``resources.gpus_per_actor: 1`` runs as the driver here; a thread records the alive nodes meanwhile. Writes a JSON
summary to ``sys.argv[1]``: python -m tests.autoscaling_body OUT.json CONFIG.yaml
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from ray.cluster_utils import AutoscalingCluster

WORKER_TYPES = {
    "cpu": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 2},
    "fake-gpu": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2},
}


class InlineAutoscalingCluster(AutoscalingCluster):
    """``AutoscalingCluster`` whose fake-provider config is built here instead of read from the missing file."""

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        return {
            "cluster_name": "congrad-fake",
            "max_workers": 4,
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": 0.1,
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
            },
            "available_node_types": {
                **worker_node_types,
                "ray.head.default": {"resources": head_resources, "node_config": {}, "max_workers": 0},
            },
            "head_node_type": "ray.head.default",
            "auth": {"ssh_user": "ray"},
            "docker": {},
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "rsync_exclude": [],
            "rsync_filter": [],
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
            **config_kwargs,
        }


def _gpu_nodes() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0)


def main(out: str, config: str) -> None:
    import ray

    from congrad_ray.config import load_filter_config
    from congrad_ray.pipeline.filter_run import run_filter

    # RAY_AUTH_MODE / RAY_AUTH_TOKEN come from the parent (Ray reads them at import): this driver, the head and
    # every node the autoscaler starts share the one token
    assert os.environ.get("RAY_AUTH_MODE") == "token" and os.environ.get("RAY_AUTH_TOKEN")
    cluster = InlineAutoscalingCluster(head_resources={"CPU": 0}, worker_node_types=WORKER_TYPES)
    cluster.start()
    timeline: list[tuple[float, int]] = []
    stop = threading.Event()
    try:
        os.environ["RAY_ADDRESS"] = "auto"
        ray.init()
        t0 = time.time()
        timeline.append((0.0, _gpu_nodes()))

        def watch():
            while not stop.wait(0.5):
                timeline.append((round(time.time() - t0, 1), _gpu_nodes()))

        threading.Thread(target=watch, daemon=True).start()
        manifest = run_filter(load_filter_config(config), report=False)
        deadline = time.time() + 120
        while _gpu_nodes() and time.time() < deadline:  # idle GPU nodes are removed after idle_timeout_minutes
            time.sleep(0.5)
        stop.set()
        result = {"manifest": manifest, "timeline": timeline, "gpu_nodes_at_end": _gpu_nodes()}
        with open(out, "w") as f:
            json.dump(result, f, default=str)
    finally:
        stop.set()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
