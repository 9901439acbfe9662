"""Shared fixtures: a tiny Llama saved to disk once per session, loaded through the real from_pretrained path."""

from __future__ import annotations

import os

import pytest

from tests import loopback

# first, before any thread starts: every Ray, server and driver of the session on a loopback of its own
NETNS_PROBLEM = loopback.enter()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
if NETNS_PROBLEM:  # on the machine's network: every embedded Ray of the session still listens on loopback only
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def pytest_report_header(config):
    if NETNS_PROBLEM:
        return f"network: the machine's (no namespace of its own: {NETNS_PROBLEM}); embedded Rays on 127.0.0.1"
    return "network: a namespace of its own with only loopback (tests/loopback.py); Ray nodes on 127.0.0.1"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from congrad_ray.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    from congrad_ray.models import load_tokenizer

    return load_tokenizer(str(tiny_dir))


@pytest.fixture(scope="session")
def reference_model(tiny_dir):
    from congrad_ray.models import load_model

    return load_model(str(tiny_dir))


@pytest.fixture(scope="session")
def policy_model(tokenizer):
    """A different random init than the reference, so the DPO logit is not 0 for every pair."""
    from congrad_ray.models import TinyModelSpec, build_tiny_model

    return build_tiny_model(tokenizer, TinyModelSpec(seed=7))


MIXED_PAIRS = [
    ("Translate to French: good morning", " bonjour", " bonsoir et bonne nuit à tous"),
    ("Réponds poliment : merci beaucoup pour ton aide aujourd'hui, c'était vraiment utile", " de rien", " non"),
    ("Wie spät ist es?", " Es ist drei Uhr nachmittags, glaube ich, aber ich bin mir nicht sicher.", " drei"),
    ("Q:", " yes", " no"),
    (
        "Сколько будет два плюс два? Ответь одним словом, пожалуйста, и объясни.",
        " четыре",
        " пять, конечно, потому что",
    ),
]


@pytest.fixture(scope="session")
def mixed_pairs(tokenizer):
    """Short and long pairs mixed, several scripts."""
    from congrad_ray.tokenization import tokenize_pair

    return [tokenize_pair(tokenizer, p, c, r) for p, c, r in MIXED_PAIRS]


@pytest.fixture(scope="session")
def small_reference(tmp_path_factory):
    """``(corpus, run)``: the small corpus and its filter on an embedded single-node Ray, the result every cluster
    run (multi-node, node loss, S3, autoscaled) must equal bitwise; one run for the session.

    This machine's current cluster is recorded as a stale address, where a bare ``ray.init()`` would try to join
    (and fail): the driver must start an embedded Ray of its own all the same."""
    import json
    import sys
    import tempfile
    from pathlib import Path

    from tests.filter_helpers import small_config, small_corpus
    from tests.ray_cluster import ROOT, base_env, free_port, run_driver

    corpus = small_corpus(tmp_path_factory.mktemp("corpus"))
    run = tmp_path_factory.mktemp("single") / "run"
    cfg = run.parent / "run.yaml"
    cfg.write_text(small_config(str(corpus), run).to_yaml())
    stray = Path(tempfile.mkdtemp(prefix="s", dir=os.environ.get("RAY_TMPDIR") or None))  # short: Ray's sockets
    (stray / "ray").mkdir(parents=True)
    (stray / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    cmd = [sys.executable, str(ROOT / "jobs" / "filter.py"), "--config", str(cfg)]
    done = run_driver(cmd, {**base_env(), "RAY_TMPDIR": str(stray)}, run.parent / "log.txt")
    assert done.returncode == 0, done.output[-3000:]
    embedded = json.loads((run / "manifest.json").read_text())["cluster"]
    assert embedded["embedded"] and embedded["nodes"] == 1, embedded
    return corpus, run
