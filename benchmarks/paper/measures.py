"""What the benchmark measures, built on :mod:`congrad_ray.core` (no math here):

* **held-out preference accuracy** per language (seen, unseen): read from ``run_training``'s metrics (the implicit
  DPO reward of the trained policy against the reference prefers the chosen answer; a tie is a miss), with the mean
  reward margin; group figures are macro-averages over languages;
* **conflict rate** of a kept set against its input: the fraction of pairs whose ground truth says they go against
  the shared task (``is_flipped``), carried through ``kept/`` by the filter
  (:func:`congrad_ray.core.conflict_rate`);
* **alignment tax**: per-token LM loss on clean held-out text of each language, after DPO minus before
  (:func:`congrad_ray.core.token_nll`, :func:`congrad_ray.core.lm_loss_by_group`); positive = worse;
* **cost**: wall time of each phase, and the peak resident memory (RSS) of the whole process tree (driver + the
  embedded Ray's processes, sampled every 0.2 s) and of its largest single process.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# ------------------------------------------------------------------------------------------------ cost


class PeakRSS:
    """Samples the RSS of this process and all its descendants (an embedded Ray's raylet, workers and actors are
    descendants) in a background thread; ``peak_tree_mb`` / ``peak_process_mb`` are the maxima seen."""

    def __init__(self, interval_s: float = 0.2):
        self.interval = interval_s
        self.peak_tree_mb = 0.0
        self.peak_process_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil comes with ray[default]
            import resource

            mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.peak_tree_mb = max(self.peak_tree_mb, mb)
            self.peak_process_mb = max(self.peak_process_mb, mb)
            return
        me = psutil.Process(os.getpid())
        total, largest = 0.0, 0.0
        for p in [me, *me.children(recursive=True)]:
            try:
                mb = p.memory_info().rss / 2**20
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += mb
            largest = max(largest, mb)
        self.peak_tree_mb = max(self.peak_tree_mb, total)
        self.peak_process_mb = max(self.peak_process_mb, largest)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakRSS:
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def as_dict(self) -> dict[str, float]:
        return {"peak_tree_rss_mb": round(self.peak_tree_mb, 1), "peak_process_rss_mb": round(self.peak_process_mb, 1)}


class Phase:
    """``with Phase() as p:`` -> ``p.seconds`` and the peak RSS of the phase."""

    def __enter__(self) -> Phase:
        self.rss = PeakRSS().__enter__()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.rss.__exit__(*exc)

    def as_dict(self) -> dict[str, float]:
        return {"seconds": round(self.seconds, 3), **self.rss.as_dict()}


# ------------------------------------------------------------------------------------------------ kept sets


def read_pairs(directory: str | Path, columns: Sequence[str] | None = None) -> Any:
    """All Parquet files under ``directory`` as one pyarrow table (``columns`` only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(glob.glob(str(Path(directory) / "*.parquet")))
    if not files:
        return None
    tables = [pq.read_table(f, columns=list(columns) if columns else None) for f in files]
    return pa.concat_tables(tables, promote_options="permissive")


def kept_set_stats(kept_dir: str | Path, input_dir: str | Path) -> dict[str, Any]:
    """Sizes and conflict rates (overall and per language) of a kept set and of its input, by ground truth."""
    from congrad_ray.core import conflict_rate

    cols = ["id", "lang", "is_flipped", "conflict"]
    inp = read_pairs(input_dir, cols)
    kept = read_pairs(kept_dir, cols)
    out: dict[str, Any] = {"input": conflict_rate(inp["is_flipped"].to_pylist(), inp["lang"].to_pylist())}
    if kept is None:
        out["kept"] = {"n": 0, "conflicts": 0, "rate": float("nan")}
        out["kept_ids"] = []
        return out
    flags, langs = kept["is_flipped"].to_pylist(), kept["lang"].to_pylist()
    out["kept"] = conflict_rate(flags, langs)
    kinds = kept["conflict"].to_pylist()
    out["kept"]["noisy_flip"] = int(sum(k == "noisy_flip" for k in kinds))
    out["kept"]["systematic"] = int(sum(k == "systematic" for k in kinds))
    in_kinds = inp["conflict"].to_pylist()
    out["input"]["noisy_flip"] = int(sum(k == "noisy_flip" for k in in_kinds))
    out["input"]["systematic"] = int(sum(k == "systematic" for k in in_kinds))
    # recall of the flips removed: 1 - kept conflicts / input conflicts, per kind
    out["kept_fraction"] = out["kept"]["n"] / max(1, out["input"]["n"])
    out["kept_ids"] = sorted(str(i) for i in kept["id"].to_pylist())
    return out


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


# ------------------------------------------------------------------------------------------------ model passes


def _load(model_dir: str, dtype: str, attn: str | None, device: str) -> tuple[Any, Any]:
    from congrad_ray.models import load_model, load_tokenizer

    return load_tokenizer(model_dir), load_model(model_dir, dtype, attn_implementation=attn).to(device)


def lm_losses(
    model_dir: str,
    texts: Sequence[tuple[str, str]],
    *,
    dtype: str = "float32",
    attn: str | None = "sdpa",
    device: str = "cpu",
    batch_size: int = 16,
    max_tokens: int = 128,
) -> dict[str, float]:
    """Per-token LM loss of ``model_dir`` on clean ``(lang, text)`` rows, per language (every token but the first
    of a row is predicted; rows truncated to ``max_tokens``)."""
    import torch

    from congrad_ray.core import lm_loss_by_group, token_nll

    tokenizer, model = _load(model_dir, dtype, attn, device)
    tokenizer.padding_side = "right"
    nll, count = [], []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            chunk = [t for _, t in texts[start : start + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_tokens)
            n, c = token_nll(model, enc["input_ids"].to(device), enc["attention_mask"].to(device))
            nll.append(n.cpu())
            count.append(c.cpu())
    del model
    return lm_loss_by_group(torch.cat(nll), torch.cat(count), [lang for lang, _ in texts])


def policy_margins(
    model_dir: str,
    rows: Sequence[dict[str, Any]],
    *,
    length_normalized: bool = True,
    dtype: str = "float32",
    attn: str | None = "sdpa",
    device: str = "cpu",
    batch_size: int = 32,
    max_length: int | None = None,
    truncation_mode: str = "keep_start",
) -> np.ndarray:
    """The policy's own margin of every pair (TRL tokenisation, completion log-probs summed, as the DPO step)."""
    import torch

    from congrad_ray.core import logprob_margin, sequence_logps
    from congrad_ray.tokenization import collate, tokenize_pair

    tokenizer, model = _load(model_dir, dtype, attn, device)
    pairs = [tokenize_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    out = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = collate(pairs[start : start + batch_size], tokenizer.pad_token_id, max_length, truncation_mode)
            logps = sequence_logps(model, batch.to(device)).cpu()
            out.append(logprob_margin(logps, batch.completion_lengths, length_normalized))
    del model
    return torch.cat(out).numpy() if out else np.zeros(0)


# ------------------------------------------------------------------------------------------------ accuracy


def accuracy_figures(metrics: dict[str, Any], seen: Sequence[str], unseen: Sequence[str]) -> dict[str, Any]:
    """Per-language held-out accuracy / margin of a training run, and macro-averages over seen and unseen."""
    from congrad_ray.core import mean_and_std

    final = metrics["eval"]["final"]["per_language"]
    per_language = {lang: {"accuracy": s["accuracy"], "margin": s["margin"], "n": s["n"]} for lang, s in final.items()}

    def macro(langs: Sequence[str], key: str) -> float:
        return mean_and_std([per_language[lg][key] for lg in langs if lg in per_language])[0]

    return {
        "per_language": per_language,
        "seen_accuracy": macro(seen, "accuracy"),
        "unseen_accuracy": macro(unseen, "accuracy"),
        "seen_margin": macro(seen, "margin"),
        "unseen_margin": macro(unseen, "margin"),
    }
