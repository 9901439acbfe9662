"""The test session in a network namespace of its own, with only a loopback interface.

Ray 2.60 cannot be bound to loopback on a machine with a default route: it rewrites ``127.0.0.1`` (``ray start
--node-ip-address``, ``--address``, ``ray.init(_node_ip_address=...)``) to the address it would reach the internet
from (``resolve_ip_for_localhost``), and its GCS, raylet and agents listen on every interface whatever the node
address. In a namespace whose only interface is ``lo``, that address *is* 127.0.0.1, and everything the tests start
(Ray nodes, embedded Rays, the S3 server, drivers, ``ray job`` commands, which all inherit the namespace) is reachable
from nothing outside the session and collides with no one's ports.

:func:`enter` moves this process into such a namespace (needs root: ``unshare(CLONE_NEWNET)``); it must run before
any other thread starts, since a namespace is per thread and only threads started later inherit it. Where it cannot,
the tests run in the machine's namespace as before. ``CONGRAD_TEST_NETNS=0`` opts out.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading

CLONE_NEWNET = 0x40000000


def _netns() -> str:
    return os.readlink("/proc/self/ns/net")


def enter() -> str | None:
    """Enter a new network namespace with ``lo`` up; returns why not, or None once inside."""
    if os.environ.get("CONGRAD_TEST_NETNS") == "0":
        return "CONGRAD_TEST_NETNS=0"
    if os.environ.get("CONGRAD_TEST_NETNS") == _netns():
        return None  # a child process of the session (e.g. pytest run by a test): already inside
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("ip"):
        return "iproute2 `ip` is missing"
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        return "other threads are already running"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}"
    up = subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if up.returncode != 0:
        raise RuntimeError(f"in a new network namespace, `ip link set lo up` failed: {up.stderr.strip()}")
    os.environ["CONGRAD_TEST_NETNS"] = _netns()
    return None
