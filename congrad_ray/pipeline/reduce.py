"""The reducer on the driver: per-language gradients ``G_l`` (float64, fixed order), then ``g*``.

``mean`` merges the per-bucket partial sums in bucket order (so the result is bitwise the same for any number of
actors or block layout). ``ema`` orders each language's pairs by id, cuts mini-batches, and combines contiguous
segments computed in parallel with the exact rule of :func:`congrad_ray.core.ema_combine`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..config import FilterConfig
from ..core import (
    Direction,
    EMASegment,
    LanguageAgreement,
    LanguageSums,
    ema_combine,
    ema_segment,
    mean_direction,
    pcgrad,
)
from ..storage import Location
from .sketch_codec import sketch_matrix
from .sketch_stage import read_partials

EMA_SEGMENT_BATCHES = 64


def merged_partials(run: Location, k: int) -> LanguageSums:
    total = LanguageSums([], torch.zeros(0, k, dtype=torch.float64), torch.zeros(0, dtype=torch.int64))
    for f in run.join("partials").list(".parquet"):
        total = total.merge(read_partials(f.read_table(), k))
    return total


def language_gradients(
    run: Location, cfg: FilterConfig, seen: list[str], sums: LanguageSums
) -> tuple[list[str], torch.Tensor, list[int]]:
    """``(langs, G [L, k], counts)`` over the seen languages that have data, sorted by name; ``sums``: the run's
    :func:`merged_partials` (read once per selection)."""
    langs = [lang for lang in sums.langs if lang in seen]
    rows = [sums.langs.index(lang) for lang in langs]
    counts = [int(sums.counts[r]) for r in rows]
    if cfg.aggregation.method == "mean":
        return langs, sums.means()[rows], counts
    return langs, _ema_gradients(run, cfg, langs), counts


def _ema_gradients(run: Location, cfg: FilterConfig, langs: list[str]) -> torch.Tensor:
    import ray.data

    agg = cfg.aggregation
    ds = ray.data.read_parquet(run.join("sketches").uri, columns=["id", "lang", "status", "sketch"])
    wanted = set(langs)

    def usable(batch: pa.Table) -> pa.Table:
        """The ok rows of the wanted languages, their sketches decoded to float32 (whatever the store's type)."""
        keep = pc.and_(pc.equal(batch["status"], "ok"), pc.is_in(batch["lang"], value_set=pa.array(sorted(wanted))))
        rows = batch.filter(keep)
        values = sketch_matrix(rows["sketch"])
        decoded = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), cfg.sketch.k)
        return rows.set_column(rows.schema.get_field_index("sketch"), "sketch", decoded)

    ds = ds.map_batches(usable, batch_format="pyarrow")
    index = ds.select_columns(["id", "lang"]).to_pandas().sort_values(["lang", "id"])
    index["batch"] = index.groupby("lang").cumcount() // agg.ema_batch_size
    batch_of = dict(zip(index["id"], index["batch"]))
    batch_ref = ray.put(batch_of)

    def tag(batch: dict) -> dict:
        lookup = ray.get(batch_ref)
        b = np.array([lookup[i] for i in batch["id"]], dtype=np.int64)
        return {**batch, "batch": b, "segment": b // EMA_SEGMENT_BATCHES}

    def segment(group: pa.Table) -> dict:
        t = group.sort_by([("batch", "ascending"), ("id", "ascending")])
        sketches = torch.tensor(np.stack(t.column("sketch").to_numpy(zero_copy_only=False)), dtype=torch.float64)
        batch = torch.tensor(t.column("batch").to_numpy())
        first = int(batch.min())
        means = torch.zeros(int(batch.max()) - first + 1, sketches.shape[1], dtype=torch.float64)
        means.index_add_(0, batch - first, sketches)
        means /= torch.bincount(batch - first).to(torch.float64)[:, None]
        e = ema_segment(means, agg.gamma)
        return {
            "lang": np.array([t.column("lang")[0].as_py()]),
            "segment": np.array([t.column("segment")[0].as_py()]),
            "n_batches": np.array([e.n_batches]),
            "value": np.array([e.value.numpy()]),
        }

    tagged = ds.map_batches(tag, batch_format="numpy")
    parts = tagged.groupby(["lang", "segment"]).map_groups(segment, batch_format="pyarrow").take_all()
    g = torch.zeros(len(langs), cfg.sketch.k, dtype=torch.float64)
    for j, lang in enumerate(langs):
        mine = sorted((p for p in parts if p["lang"] == lang), key=lambda p: p["segment"])
        segs = [EMASegment(torch.tensor(np.asarray(p["value"])), int(p["n_batches"])) for p in mine]
        g[j] = ema_combine(segs, agg.gamma, agg.debias)
    return g


def direction_of(cfg: FilterConfig, langs: list[str], g: torch.Tensor) -> Direction:
    if not langs:
        raise ValueError("no seen language has valid pairs: check languages.seen and the invalid/ rows")
    if cfg.surgery.method == "pcgrad":
        return pcgrad(g, langs, cfg.surgery.seed)
    return mean_direction(g, langs)  # "mean", and the reported g* of "per_language"


def save_direction(
    run: Location, d: Direction, g: torch.Tensor, counts: list[int], agreement: LanguageAgreement | None = None
) -> None:
    import io

    buf = io.BytesIO()
    np.savez(
        buf,
        langs=np.array(d.langs),
        g_star=d.g_star.numpy(),
        language_gradients=g.numpy(),
        projected=d.projected.numpy(),
        cosine_before=d.cosine_before.numpy(),
        cosine_after=d.cosine_after.numpy(),
    )
    run.join("direction", "direction.npz").write_bytes(buf.getvalue())
    run.join("direction", "direction.json").write_json(
        {
            "langs": d.langs,
            "counts": dict(zip(d.langs, counts)),
            "projections": d.projections,
            "g_star_norm": float(d.g_star.norm()),
            "cosine_before": d.cosine_before.tolist(),
            "cosine_after": d.cosine_after.tolist(),
            **({"agreement": agreement.as_dict()} if agreement is not None else {}),
        }
    )


def load_direction(run: Location) -> dict[str, np.ndarray]:
    import io

    with np.load(io.BytesIO(run.join("direction", "direction.npz").read_bytes())) as z:
        return {key: z[key] for key in z.files}
