"""Stage B (actors, GPU when there is one): one id-hash bucket at a time -> ``S(g_i)`` for every pair.

Inside a bucket, duplicates of an id keep the row with the smallest ``_row`` and the others are recorded as
``duplicate_id``; the kept rows are tokenised (a pair whose tokens cannot be trained on is recorded with that
reason: ``empty_completion``, ``prompt_too_long``); pairs are ordered by (length, id) and cut into micro-batches,
so each pair's sketch depends on the bucket's content only, never on which actor or which block it came in. Two
files per bucket, each atomic:
``sketches/<bucket>.parquet`` (id, _row, lang, status, sketch, loss, margin, policy_margin, n_tokens) and then
``partials/<bucket>.parquet`` (per-language sum and count, float64, summed in id order), whose presence marks the
bucket done.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..config import FilterConfig
from ..core import LanguageSums
from ..errors import ConfigError
from ..storage import Location
from ..tokenization import TokenizedPair
from .prepare import tokenize_prepared
from .sketch_codec import encode_sketches


def bucket_name(bucket: int) -> str:
    return f"bucket-{bucket:06d}"


def partials_table(sums: LanguageSums) -> pa.Table:
    return pa.table(
        {
            "lang": pa.array(sums.langs, pa.string()),
            "count": pa.array(sums.counts.tolist(), pa.int64()),
            "sum": pa.array([row.tolist() for row in sums.sums], pa.list_(pa.float64())),
        }
    )


def read_partials(table: pa.Table, k: int) -> LanguageSums:
    langs = table.column("lang").to_pylist()
    sums = torch.tensor(table.column("sum").to_pylist(), dtype=torch.float64).reshape(len(langs), k)
    return LanguageSums(langs, sums, torch.tensor(table.column("count").to_pylist(), dtype=torch.int64))


class GradientSketcher:
    """Ray Data actor: ``map_groups`` body over ``bucket`` groups of prepared rows, returning one summary row per
    bucket. A user error (a model that does not load, a run directory that cannot be written) is returned in the
    summary's ``error`` rather than raised: Ray Data logs a ``map_groups`` exception with its worker traceback, and
    the driver turns the error into one line (:func:`sketch_errors`)."""

    def __init__(self, config_json: str, run_uri: str):
        from ..engine import SketchEngine
        from ..ray_env import placement

        cfg = FilterConfig.model_validate_json(config_json)
        self.placement = placement()  # GPUs Ray gave this actor vs the device torch can use: not the same thing
        if self.placement["device"] == "cpu":
            torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.error = ""
        try:
            self.engine = SketchEngine.from_config(cfg, self.placement["device"])
        except ConfigError as e:
            self.error = str(e)
            return
        self.batch_size = cfg.resources.batch_size
        self.max_length, self.truncation_mode = cfg.dpo.max_length, cfg.dpo.truncation_mode
        self.store_dtype = cfg.sketch.store_dtype
        self.use_ref_columns = self.engine.reference_mode == "columns"
        self.run = Location.of(run_uri)

    def __call__(self, group: pa.Table) -> dict[str, np.ndarray]:
        bucket = int(group.column("bucket")[0].as_py())
        if not self.error:
            try:
                return self._sketch_bucket(bucket, group)
            except ConfigError as e:
                self.error = str(e)
        return {**self._summary(bucket, 0, 0, time.time(), 0.0), "error": np.array([self.error])}

    def _sketch_bucket(self, bucket: int, group: pa.Table) -> dict[str, np.ndarray]:
        started, start = time.time(), time.perf_counter()
        winners, duplicates = _deduplicate(group)
        pairs, reasons = tokenize_prepared(self.engine.tokenizer, winners, self.max_length, self.truncation_mode)
        usable = pa.array([r is None for r in reasons], pa.bool_())
        n_pairs, n_duplicates = sum(r is None for r in reasons), duplicates.num_rows
        sketch_table, sums = self._sketch_rows(winners.filter(usable), [p for p, r in zip(pairs, reasons) if r is None])
        unusable = winners.filter(pc.invert(usable))
        rejected = [
            _status_rows(duplicates, ["duplicate_id"] * n_duplicates),
            _status_rows(unusable, [r for r in reasons if r is not None]),
        ]
        out = pa.concat_tables([sketch_table, *rejected], promote_options="default")
        self.run.join("sketches", f"{bucket_name(bucket)}.parquet").write_table(out)
        self.run.join("partials", f"{bucket_name(bucket)}.parquet").write_table(partials_table(sums))
        del group, winners, duplicates, unusable, sketch_table, rejected, out
        _return_freed_memory()
        summary = self._summary(bucket, n_pairs, n_duplicates, started, time.perf_counter() - start)
        return {**summary, "error": np.array([""])}

    def _summary(
        self, bucket: int, pairs: int, duplicates: int, started: float, seconds: float
    ) -> dict[str, np.ndarray]:
        """``started``: wall-clock time (epoch seconds) the bucket's sketching began; ``seconds``: how long it took."""
        return {
            "bucket": np.array([bucket]),
            "pairs": np.array([pairs]),
            "duplicates": np.array([duplicates]),
            "started": np.array([started]),
            "seconds": np.array([seconds]),
            "pid": np.array([os.getpid()]),
            "node": np.array([self.placement["node"]]),
            "gpu_ids": np.array([",".join(self.placement["gpu_ids"])]),
            "device": np.array([self.placement["device"]]),
            "peak_rss_mb": np.array([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]),
        }

    def _sketch_rows(self, rows: pa.Table, tokens: list[TokenizedPair]) -> tuple[pa.Table, LanguageSums]:
        """Sketch every row (its ``tokens``; micro-batches in (length, id) order); results and partial sums in id
        order."""
        data = rows.select(["id", "_row", "lang", "ref_chosen", "ref_rejected"]).to_pydict()
        n = rows.num_rows
        lengths = [len(t.prompt_ids) + max(len(t.chosen_ids), len(t.rejected_ids)) for t in tokens]
        order = sorted(range(n), key=lambda i: (lengths[i], data["id"][i]))
        k = self.engine.sketch.k
        sketches = torch.zeros(n, k)
        loss, margin, n_tokens = torch.zeros(n), torch.zeros(n), torch.zeros(n, dtype=torch.long)
        policy_margin = torch.full((n,), float("nan"), dtype=torch.float64)
        for s in range(0, n, self.batch_size):
            idx = order[s : s + self.batch_size]
            pairs = [tokens[i] for i in idx]
            ref = None
            if self.use_ref_columns:
                ref = torch.tensor([data["ref_chosen"][i] for i in idx] + [data["ref_rejected"][i] for i in idx])
            out = self.engine.sketch_pairs(pairs, ref)
            sketches[idx], loss[idx], margin[idx], n_tokens[idx] = out.sketch, out.loss, out.z, out.n_tokens
            if out.policy_margin is not None:
                policy_margin[idx] = out.policy_margin.to(torch.float64)
        by_id = sorted(range(n), key=lambda i: data["id"][i])
        langs = [data["lang"][i] for i in by_id]
        sums = (
            LanguageSums.of(sketches[by_id], langs)
            if n
            else LanguageSums([], torch.zeros(0, k, dtype=torch.float64), torch.zeros(0, dtype=torch.int64))
        )
        table = pa.table(
            {
                "id": pa.array([data["id"][i] for i in by_id], pa.string()),
                "_row": pa.array([data["_row"][i] for i in by_id], pa.string()),
                "lang": pa.array(langs, pa.string()),
                "status": pa.array(["ok"] * n, pa.string()),
                "sketch": encode_sketches(sketches[by_id], self.store_dtype),
                "loss": pa.array(loss[by_id].numpy(), pa.float32()),
                "margin": pa.array(margin[by_id].numpy(), pa.float32()),
                "policy_margin": pa.array(policy_margin[by_id].numpy(), pa.float32()),
                "n_tokens": pa.array(n_tokens[by_id].numpy(), pa.int64()),
            }
        )
        return table, sums


def _return_freed_memory() -> None:
    """Hand the heap a finished bucket freed back to the OS (glibc ``malloc_trim``; a no-op elsewhere): a long-lived
    actor sketches hundreds of buckets of varying shapes, and a fragmented heap would grow its RSS with the bucket
    count rather than the bucket size."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def sketch_errors(summaries: list[dict]) -> ConfigError | None:
    """The user errors the sketch actors returned, as one :class:`ConfigError` (each problem once), or None."""
    problems = sorted({line for s in summaries if s["error"] for line in str(s["error"]).splitlines()})
    return ConfigError(problems) if problems else None


def _status_rows(rows: pa.Table, status: list[str]) -> pa.Table:
    """Rows stored without a sketch, with why: ``duplicate_id``, or a reason from their tokens."""
    return pa.table(
        {
            "id": rows.column("id"),
            "_row": rows.column("_row"),
            "lang": rows.column("lang"),
            "status": pa.array(status, pa.string()),
        }
    )


def _deduplicate(group: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Per id, the row with the smallest ``_row`` wins; the rest are duplicates."""
    ordered = group.sort_by([("id", "ascending"), ("_row", "ascending")])
    ids = ordered.column("id").to_pylist()
    first = np.array([i == 0 or ids[i] != ids[i - 1] for i in range(len(ids))], dtype=bool)
    return ordered.filter(pa.array(first)), ordered.filter(pa.array(~first))


class ResourceShortage(ConfigError):
    """The cluster cannot offer what the config asks for (one line, exit 2)."""

    def __init__(self, line: str):
        super().__init__([line])


def take_all_or_explain(sketched: Any, cfg: FilterConfig) -> list[dict[str, Any]]:
    """Run the sketch pass; sketch actors that cannot start in ``resources.actor_start_timeout_s`` (the cluster, and
    any autoscaler, cannot offer what one needs) become one line naming what is missing, not a hang."""
    import ray

    from ..ray_env import cluster_summary

    r = cfg.resources
    sketched.context.wait_for_min_actors_s = int(max(1, r.actor_start_timeout_s))  # this dataset's own context
    try:
        return sketched.take_all()
    except ray.exceptions.GetTimeoutError as e:
        if "starting actors" not in str(e):
            raise
        have = cluster_summary()
        offers = ", ".join(f"{k} {v:g}" for k, v in sorted(have["resources"].items()))
        raise ResourceShortage(
            f"resources: {r.actors_min} sketch actor(s) needing CPU {r.cpus_per_actor:g}, GPU {r.gpus_per_actor:g} "
            f"each did not start within {r.actor_start_timeout_s:g} s; the cluster has {have['nodes']} node(s) "
            f"offering {offers or 'nothing'}: add nodes (or an autoscaler worker type) with those resources, lower "
            "resources.gpus_per_actor / cpus_per_actor, or raise resources.actor_start_timeout_s"
        ) from None


def actor_records(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per sketch actor: node, pid, the GPUs Ray scheduled it with, the device it computed on."""
    seen: dict[int, dict[str, Any]] = {}
    for s in summaries:
        gpus = str(s["gpu_ids"])
        seen.setdefault(
            int(s["pid"]),
            {
                "node": str(s["node"]),
                "pid": int(s["pid"]),
                "gpu_ids": gpus.split(",") if gpus else [],
                "device": str(s["device"]),
            },
        )
    return [seen[pid] for pid in sorted(seen)]
