"""Multi-node Ray clusters of `ray start` processes on this one machine, for the integration tests.

* Every node has its own temp dir under the cluster's root (short: Ray's socket paths must stay < 108 bytes), is
  started with ``--node-ip-address=127.0.0.1`` (which Ray keeps only where loopback is the sole interface: the test
  session's own network namespace, tests/loopback.py; elsewhere it rewrites it to the machine's address) and runs
  with token authentication, one token per cluster, passed to every ``ray`` command, node and driver as
  ``RAY_AUTH_TOKEN`` (``~/.ray/auth_token`` is never read or written).
* A cluster is stopped by the PIDs of its own processes, never with ``ray stop`` (which ends every Ray process on the
  machine): :func:`stop_processes_under` is the one way, used by the tests and by ``.ci/run``'s exit trap
  (``python -m tests.ray_cluster kill-under DIR``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _processes_under(path: str) -> list:
    """Processes whose command line names ``path``, and all their descendants (a raylet's workers and agents)."""
    import psutil

    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != os.getpid() and path in " ".join(proc.info["cmdline"] or []):
            found[proc.pid] = proc
            with contextlib.suppress(psutil.NoSuchProcess):
                found.update({c.pid: c for c in proc.children(recursive=True)})
    return list(found.values())


def stop_processes_under(path: str | Path, grace_s: float = 15.0) -> int:
    """Stop every process of the Ray nodes whose temp dirs lie under ``path`` (SIGTERM, then SIGKILL after
    ``grace_s``; ``grace_s=0`` kills at once, as a lost machine would); returns how many there were."""
    import psutil

    procs = _processes_under(str(path))
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill() if grace_s <= 0 else p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=max(grace_s, 5.0))
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env() -> dict[str, str]:
    """This process's environment without a cluster address, with this venv first on PATH (jobs run `python`).
    Without the embedded Ray's loopback-only switch either (an embedded Ray of this process set it): `ray start`
    refuses to join a node to a cluster under it."""
    dropped = ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


@dataclass
class Node:
    name: str
    temp_dir: Path
    num_cpus: float
    num_gpus: int = 0


@dataclass
class LocalCluster:
    """A head (no CPUs for work by default) and worker nodes, each a `ray start` on loopback with its own temp dir."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="c", dir=os.environ.get("RAY_TMPDIR"))))
    port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    nodes: list[Node] = field(default_factory=list)
    workers_started: int = 0  # names stay unique: a replacement never reuses a killed node's temp dir

    @property
    def env(self) -> dict[str, str]:
        """The environment of every `ray` command, node and driver of this cluster (same token everywhere)."""
        return {**base_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def driver_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, "RAY_ADDRESS": self.address, **extra}

    def ray(self, *args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        cmd = [str(BIN / "ray"), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or self.env)

    def job_info(self, submission_id: str) -> dict:
        """A submitted job's details from the dashboard's REST API (status, driver pid), with the cluster's token:
        cheap enough to poll, unlike a `ray job status` process."""
        import urllib.request

        request = urllib.request.Request(
            f"{self.dashboard}/api/jobs/{submission_id}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def _start(self, name: str, num_cpus: float, num_gpus: int, *args: str) -> Node:
        node = Node(name, self.root / name, num_cpus, num_gpus)
        common = ["--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}"]
        # every fixed default port of a node chosen free, so that nodes (and other clusters here) never collide
        ports = ("dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent", "metrics-export")
        common += [f"--{name}-port={free_port()}" for name in ports]
        extra = ["--temp-dir", str(node.temp_dir), "--disable-usage-stats", "--object-store-memory=200000000"]
        started = self.ray("start", *args, *common, *extra, timeout=180)
        if started.returncode != 0:  # a node that timed out starting on a loaded machine: clear it, once more
            stop_processes_under(node.temp_dir)
            started = self.ray("start", *args, *common, *extra, timeout=180)
        assert started.returncode == 0, f"ray start {name} failed:\n{started.stdout[-2000:]}\n{started.stderr[-3000:]}"
        self.nodes.append(node)
        return node

    def start_head(self, num_cpus: float = 0) -> LocalCluster:
        head = ["--head", f"--port={self.port}", f"--dashboard-port={self.dashboard_port}"]
        self._start("h", num_cpus, 0, *head, "--dashboard-host=127.0.0.1", f"--ray-client-server-port={free_port()}")
        return self

    def add_worker(self, num_cpus: float = 1, num_gpus: int = 0) -> Node:
        self.workers_started += 1
        node = self._start(f"w{self.workers_started}", num_cpus, num_gpus, f"--address={self.address}")
        self.wait_for_nodes()
        return node

    def kill_node(self, node: Node) -> None:
        """The machine is gone: every process of ``node`` SIGKILLed at once, no grace (as
        ``Cluster.remove_node(node, allow_graceful=False)``)."""
        stop_processes_under(node.temp_dir, grace_s=0)
        self.nodes.remove(node)

    def alive_nodes(self) -> list[dict]:
        out = self.ray("list", "nodes", "--format=json", "--filter", "state=ALIVE", "--address", self.dashboard)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout)

    def wait_for_nodes(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while len(self.alive_nodes()) != len(self.nodes):
            assert time.time() < deadline, f"{len(self.nodes)} nodes started, {len(self.alive_nodes())} alive"
            time.sleep(0.5)

    def stop(self) -> None:
        stop_processes_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def run_driver(cmd: list[str], env: dict[str, str], log: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """A driver process (``python jobs/X.py ...``) with its output in ``log``; the tail is in the assertion."""
    with log.open("w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT)
    proc.output = log.read_text()
    return proc


def start_driver(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A driver in its own process group (``os.killpg`` ends it and its children, as a lost driver machine)."""
    with log.open("w") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def kill_driver(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


if __name__ == "__main__":  # .ci/run's exit trap: python -m tests.ray_cluster kill-under "$RAY_TMPDIR"
    if len(sys.argv) != 3 or sys.argv[1] != "kill-under":
        sys.exit("usage: python -m tests.ray_cluster kill-under DIR")
    print(f"stopped {stop_processes_under(sys.argv[2])} Ray processes under {sys.argv[2]}")
