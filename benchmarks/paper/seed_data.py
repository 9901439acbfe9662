"""What each seed of a setting builds: the corpus (:mod:`.corpora`), the clean prose for the alignment tax and the
model (:mod:`.models`); policy = reference at the start of every arm."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .corpora import build_demo_corpus, build_prose_corpus
from .models import build_model
from .settings import SettingConfig

# ------------------------------------------------------------------------------------------------ seed data


@dataclass
class SeedData:
    """What one seed of a setting trains and measures on."""

    seed: int
    train_dir: Path  # Parquet pairs of the seen languages, ground-truth columns included
    heldout_dir: Path  # clean held-out pairs of every language
    prose: list[tuple[str, str]]  # (lang, clean text) for the alignment tax
    model_path: str  # the policy (= reference) every arm starts from
    ground_truth: dict[str, Any]
    build_s: dict[str, float]


def build_seed(cfg: SettingConfig, seed: int, work: Path) -> SeedData:
    """Corpus, prose and model of one seed under ``work`` (reused when already built with the same config)."""
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = work / "data"
    if cfg.corpus.kind == "demo":
        truth, prose = build_demo_corpus(cfg.corpus, seed, data)
    else:
        truth, prose = build_prose_corpus(cfg.corpus, seed, data)
    timings["corpus"] = round(time.perf_counter() - t0, 3)
    t1 = time.perf_counter()
    model_path = build_model(cfg, seed, work / "model")
    timings["model"] = round(time.perf_counter() - t1, 3)
    return SeedData(seed, data / "train", data / "heldout", prose, model_path, truth, timings)
