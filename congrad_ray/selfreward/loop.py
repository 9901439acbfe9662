"""The self-rewarding loop: rounds t = 1..T of generate -> judge -> pairs -> filter -> train -> eval.

Round t runs with model ``M_t`` (round 1: ``model.name_or_path``): ``M_t`` writes N candidates per prompt, judges
them (or ``judge.model`` does), the judgements become pairs, ConGrad filters them with ``M_t`` as policy and
reference, DPO trains ``M_t`` on the kept pairs with ``M_t`` as reference, and the trained model is ``M_{t+1}``.
A round that yields no pair (or keeps none) leaves the model unchanged.

Layout (``run.output``)::

    iterate.yaml  prompts.parquet (the frozen pool)  _state/fingerprint.json  report/ (rounds.json, rounds.png)
    round-01/  prompts.parquet  candidates.parquet  judgements.parquet  pairs/part-00000.parquet
               dropped_prompts.parquet  filter/ (a filter run)  train/ (a DPO run)  stats.json
               _state/<stage>.json    (one completion record per stage)

Resume at stage granularity: every stage writes its outputs atomically (:class:`~congrad_ray.storage.Location`),
then its record; a re-run skips every stage that has a record and restarts at the first that has none (the filter
and train steps resume inside themselves too). A directory belongs to one data configuration (fingerprint): raising
``run.rounds`` continues a finished loop, anything else needs a new ``run.output`` or ``--fresh``.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConfigError
from ..models import resolve_model_path
from ..storage import Location, claim_run_dir
from .config import IterateConfig, resolve_backend
from .context import RoundContext
from .stages import STAGE_NAMES, STAGES


def prepare_root(cfg: IterateConfig, fresh: bool) -> Location:
    holds = "a loop of another configuration (only run.rounds may change)"
    root = claim_run_dir(cfg.run.output, "data", cfg.data_fingerprint(), holds, fresh)
    root.join("iterate.yaml").write_bytes(cfg.to_yaml().encode())
    return root


def frozen_pool(cfg: IterateConfig, root: Location) -> list[dict]:
    """The prompt pool, built once per loop directory (so every round draws from the same pool)."""
    from .prompts import demo_pool, parquet_pool

    target = root.join("prompts.parquet")
    if not target.exists():
        p = cfg.prompts
        demo = [x for x in p.paths if x.startswith("demo://")]
        files = [x for x in p.paths if not x.startswith("demo://")]
        tables = []
        if demo:
            d = p.demo
            tables.append(demo_pool(d.source, d.languages, d.per_language, d.max_chars, cfg.run.seed))
        if files:
            tables.append(parquet_pool(files, p.prompt_column, p.lang_column, p.id_column)[0])
        pool = pa.concat_tables(tables)
        if p.languages is not None:
            pool = pool.filter(pc.is_in(pool.column("lang"), pa.array(p.languages)))
        if pool.num_rows == 0:
            raise ConfigError([f"the prompt pool {p.paths} is empty (check prompts.paths and prompts.languages)"])
        target.write_table(pool)
    return target.read_table().to_pylist()


def _remove(loc: Location) -> None:
    import pyarrow.fs as pafs

    kind = loc.fs.get_file_info(loc.path).type
    if kind == pafs.FileType.Directory:
        loc.delete_dir()
    elif kind == pafs.FileType.File:
        loc.fs.delete_file(loc.path)


def invalidate_after(rc: RoundContext, stage: str) -> None:
    """A stage about to run makes everything downstream stale: later stages of its round that have a record
    (possible only after a record was deleted by hand) lose their outputs and records, later rounds their
    directories. In a normal run or resume there is nothing downstream yet, and nothing is deleted."""
    later = STAGES[STAGE_NAMES.index(stage) + 1 :]
    if any(rc.record(s.name).exists() for s in later):
        for s in later:
            for target in [*(rc.dir.join(name) for name in s.outputs), rc.record(s.name)]:
                _remove(target)
    t = rc.index + 1
    while rc.root.join(f"round-{t:02d}").exists():
        rc.root.join(f"round-{t:02d}").delete_dir()
        t += 1


def run_iterate(cfg: IterateConfig, fresh: bool = False, stop_after: str | None = None) -> dict[str, Any]:
    """Run (or resume) the loop; returns a summary. ``stop_after="ROUND:STAGE"`` stops once that stage is recorded
    (as if the job had been killed there; for tests and step-by-step runs)."""
    from ..ray_env import ensure_ray
    from .report import write_report

    if stop_after is not None and not _valid_stop(stop_after):
        stages = ", ".join(STAGE_NAMES)
        raise ConfigError([f"--stop-after {stop_after!r}: expected ROUND:STAGE with STAGE one of {stages}"])
    t0 = time.perf_counter()
    root = prepare_root(cfg, fresh)
    pool = frozen_pool(cfg, root)
    ensure_ray(cfg.run.num_cpus)
    model = resolve_model_path(cfg.model.name_or_path)
    resumed, ran, stats = [], [], []
    for t in range(1, cfg.run.rounds + 1):
        rc = RoundContext(cfg, root, t, model, pool)
        for stage in STAGES:
            name = f"round-{t:02d}/{stage.name}"
            if rc.done(stage.name) is not None:
                resumed.append(name)
                continue
            invalidate_after(rc, stage.name)
            s0 = time.perf_counter()
            summary = stage.run(rc)
            seconds = round(time.perf_counter() - s0, 3)
            record = {"stage": stage.name, "round": t, "model_in": model, "seconds": seconds}
            rc.record(stage.name).write_json({**record, **summary})
            ran.append(name)
            if stop_after == f"{t}:{stage.name}":
                return _summary(root, model, resumed, ran, stats, t0, stopped=name)
        stats.append(rc.dir.join("stats.json").read_json())
        model = rc.done("train").get("model_out") or model
        write_report(root, stats)
    return _summary(root, model, resumed, ran, stats, t0)


def _valid_stop(spec: str) -> bool:
    round_, _, stage = spec.partition(":")
    return round_.isdigit() and stage in STAGE_NAMES


def _summary(
    root: Location, model: str, resumed: list, ran: list, stats: list, t0: float, stopped: str | None = None
) -> dict[str, Any]:
    summary = {
        "run_dir": root.uri,
        "rounds_done": len(stats),
        "final_model": model,
        "resumed_stages": resumed,
        "ran_stages": ran,
        "stopped_after": stopped,
        "seconds": round(time.perf_counter() - t0, 3),
        "rounds": stats,
    }
    if stopped is None:
        root.join("summary.json").write_json({k: v for k, v in summary.items() if k != "rounds"})
    return summary


__all__ = ["RoundContext", "frozen_pool", "prepare_root", "resolve_backend", "run_iterate"]
