"""Training and held-out pairs on Ray Data: resolve inputs, check every row, deterministic shards per worker.

* inputs: ``demo://`` URIs are materialised, a filter run directory stands for its ``kept/``;
* every row is checked like the filter checks it (:func:`congrad_ray.core.rows.check_row`) and tokenised as
  TRL tokenises it; a row that cannot be trained on (``null_prompt``, ``prompt_too_long``, ...) is kept as data
  with its reason (``skipped-train.parquet``), never raised;
* shards: the valid rows are ordered by a hash of the sample id (``_order``) and cut into ``world_size``
  contiguous near-equal key ranges (:meth:`PreparedData.cut_keys`, :class:`.sharding.IdOrderedSplit`; no shuffle),
  so the same rows reach the same rank on every run whatever the file or block layout, and a resumed run sees the
  batches it would have seen. Shorter shards are padded with their own first rows (as ``DistributedSampler``
  pads) so that every worker takes the same number of steps.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError
from ..inputs import materialize_inputs
from ..storage import Location, expand_inputs

TEXT_COLUMNS = ("prompt", "chosen", "rejected")
ID, LANG, REASON, ORDER, SPLIT = "_id", "_lang", "_reason", "_order", "_split"


def resolve_paths(paths: list[str]) -> list[str]:
    """``demo://`` -> the local demo corpus; a finished filter run directory -> its ``kept/``."""
    out = []
    for p in materialize_inputs(list(paths)) or []:
        loc = Location.of(p)
        if loc.join("manifest.json").exists() and loc.join("kept").exists():
            out.append(loc.join("kept").uri)
        else:
            out.append(p)
    return out


def input_files(paths: list[str], key: str) -> list[str]:
    """The Parquet files under ``paths`` (resolved), sorted; :class:`InputError` naming ``key`` when there are none."""
    resolved = resolve_paths(paths)
    try:
        files = expand_inputs(resolved)
    except FileNotFoundError as e:
        raise InputError(f"{key}: {e}; check the path") from None
    if not files:
        raise InputError(f"{key}: no .parquet files under {paths}; check the path")
    return [f.uri for f in files]


def read_columns(files: list[str], id_column: str, lang_column: str) -> list[str]:
    """The columns to read: the text columns, and id / lang when the first file has them. Every file's footer is
    read here, on the driver, so a corrupt file or a missing column is an :class:`InputError` before Ray reads."""
    first = None
    for uri in files:
        loc = Location.of(uri)
        try:
            with loc.fs.open_input_file(loc.path) as f:
                names = pq.read_schema(f).names
        except (OSError, pa.ArrowInvalid) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise InputError(f"{uri} is not a readable Parquet file ({reason}); fix or remove it") from None
        missing = [c for c in TEXT_COLUMNS if c not in names]
        if missing:
            raise InputError(f"{uri} lacks the column(s) {missing}; preference data needs prompt, chosen, rejected")
        first = first or names
    return [*TEXT_COLUMNS, *(c for c in (id_column, lang_column) if c in first)]


@dataclass(frozen=True)
class PrepareSpec:
    tokenizer_path: str
    revision: str | None
    trust_remote_code: bool
    id_column: str
    lang_column: str
    max_length: int | None
    truncation_mode: str


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str, revision: str | None, trust_remote_code: bool) -> Any:
    from ..models import load_tokenizer, resolve_model_path

    return load_tokenizer(resolve_model_path(path), revision, trust_remote_code)


def order_key(sample_id: str, row: dict[str, Any] | None = None) -> str:
    """The shard order of a sample: a hash of its id (languages and files interleave across shards), and of its
    texts, so that rows sharing an id still have a fixed order."""
    texts = "" if row is None else json.dumps([row.get(c) for c in TEXT_COLUMNS], ensure_ascii=False, default=str)
    return hashlib.blake2b(f"{sample_id}\x00{texts}".encode(), digest_size=12).hexdigest()


def prepare_rows(batch: pa.Table, spec: PrepareSpec, split: str) -> pa.Table:
    """Adds ``_split``, ``_id``, ``_lang``, ``_reason`` (None: trainable) and ``_order`` to a batch of rows."""
    from ..core.rows import RowRules, check_row, check_tokens, decode_rows
    from ..tokenization import tokenize_pair

    tokenizer = _tokenizer(spec.tokenizer_path, spec.revision, spec.trust_remote_code)
    rules = RowRules(spec.id_column, spec.lang_column, None, None)
    ids, langs, reasons, orders = [], [], [], []
    rows, undecodable = decode_rows(batch)
    for row, bad in zip(rows, undecodable):
        sample_id, lang, reason = (None, None, bad) if bad is not None else check_row(row, rules)
        if reason is None:
            pair = tokenize_pair(tokenizer, row["prompt"], row["chosen"], row["rejected"])
            lens = (len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids))
            reason = check_tokens(*lens, spec.max_length, spec.truncation_mode)
        ids.append(sample_id)
        langs.append(lang)
        reasons.append(reason)
        orders.append(order_key(sample_id, row) if sample_id is not None else None)
    batch = batch.append_column(SPLIT, pa.array([split] * batch.num_rows, pa.string()))
    for name, values in ((ID, ids), (LANG, langs), (REASON, reasons), (ORDER, orders)):
        batch = batch.append_column(name, pa.array(values, pa.string()))
    return batch


def key_range(batch: pa.Table, low: str | None, high: str | None) -> pa.Table:
    """The rows with ``low <= _order < high`` (an open end when None)."""
    keep = pc.is_valid(batch[ORDER])
    if low is not None:
        keep = pc.and_(keep, pc.greater_equal(batch[ORDER], low))
    if high is not None:
        keep = pc.and_(keep, pc.less(batch[ORDER], high))
    return batch.filter(keep)


def select_rows(batch: pa.Table, split: str, valid: bool) -> pa.Table:
    """The rows of ``split`` that are trainable (without ``_reason``) or not (with it)."""
    batch = batch.filter(pc.equal(batch[SPLIT], split)).drop_columns([SPLIT])
    if valid:
        return batch.filter(pc.is_null(batch[REASON])).drop_columns([REASON])
    return batch.filter(pc.is_valid(batch[REASON]))


@dataclass
class PreparedData:
    """The trainable rows (a materialised Ray dataset) and what was skipped, with reasons."""

    dataset: Any
    rows: int
    languages: dict[str, int]
    skipped: pa.Table
    files: list[str]
    order_keys: list[str] = field(default_factory=list, repr=False)

    def cut_keys(self, world_size: int) -> list[str]:
        """The ``_order`` values where shards ``1..world_size-1`` start: shard ``r`` holds keys in
        ``[cut[r-1], cut[r])``, so the shards are contiguous in id-hash order and near-equal in size."""
        n = len(self.order_keys)
        return [self.order_keys[n * r // world_size] for r in range(1, world_size)]

    def shard_rows(self, world_size: int) -> int:
        """Rows of the largest shard (every shard is padded to it)."""
        edges = [0, *(bisect.bisect_left(self.order_keys, k) for k in self.cut_keys(world_size)), self.rows]
        return max(b - a for a, b in zip(edges, edges[1:]))

    def summary(self) -> dict[str, Any]:
        reasons = self.skipped.column(REASON).to_pylist() if self.skipped.num_rows else []
        return {
            "files": len(self.files),
            "rows": self.rows + self.skipped.num_rows,
            "valid": self.rows,
            "per_language": dict(sorted(self.languages.items())),
            "skipped": {r: reasons.count(r) for r in sorted(set(reasons))},
        }


def prepare(inputs: dict[str, list[str]], spec: PrepareSpec, num_cpus: float) -> dict[str, PreparedData]:
    """Read, check and tokenise-check each split's paths in one Ray Data execution (no shuffle); each split keeps
    its sorted ``_order`` keys for :meth:`PreparedData.cut_keys`. Raises :class:`InputError` only for paths that
    hold no Parquet files or lack the text columns."""
    import ray
    import ray.data

    files = {split: input_files(paths, f"data.{split}") for split, paths in inputs.items()}
    mapped = []
    for split, split_files in files.items():
        columns = read_columns(split_files, spec.id_column, spec.lang_column)
        ds = ray.data.read_parquet(split_files, columns=columns)
        kwargs = {"spec": spec, "split": split}
        mapped.append(
            ds.map_batches(prepare_rows, batch_size=None, fn_kwargs=kwargs, num_cpus=num_cpus, batch_format="pyarrow")
        )
    prepared = (mapped[0].union(*mapped[1:]) if len(mapped) > 1 else mapped[0]).materialize()
    out = {}
    for split, split_files in files.items():
        rows = functools.partial(prepared.map_batches, select_rows, batch_format="pyarrow", batch_size=None)
        skipped_parts = [
            t for t in ray.get(rows(fn_kwargs={"split": split, "valid": False}).to_arrow_refs()) if t.num_rows
        ]
        skipped = (
            pa.concat_tables(skipped_parts, promote_options="permissive") if skipped_parts else pa.table({REASON: []})
        )
        valid = rows(fn_kwargs={"split": split, "valid": True}).materialize()
        counts: dict[str, int] = {}
        keys: list[str] = []
        for t in ray.get(valid.select_columns([LANG, ORDER]).to_arrow_refs()):
            for lang in t.column(LANG).to_pylist():
                counts[lang] = counts.get(lang, 0) + 1
            if split == "train":
                keys += t.column(ORDER).to_pylist()
        out[split] = PreparedData(valid, sum(counts.values()), counts, skipped, split_files, sorted(keys))
    return out


def collect(iterator: Any) -> pa.Table:
    """A Ray Data shard as one Arrow table."""
    parts = [t for t in iterator.iter_batches(batch_format="pyarrow", batch_size=None) if t.num_rows]
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts, promote_options="permissive")


def pad_shard(table: pa.Table, rows: int) -> pa.Table:
    """``table`` sorted by ``_order`` and padded to ``rows`` rows with its own first rows (cycled if needed)."""
    if table.num_rows == 0:
        raise RuntimeError("a training shard is empty: more Ray Train workers than trainable pairs")
    table = table.sort_by(ORDER)
    parts = [table]
    missing = rows - table.num_rows
    while missing > 0:
        parts.append(table.slice(0, missing))
        missing -= parts[-1].num_rows
    return pa.concat_tables(parts) if len(parts) > 1 else table


def cap_per_language(table: pa.Table, limit: int | None) -> pa.Table:
    """Held-out rows sorted by (language, id), at most ``limit`` per language (all when None)."""
    if table.num_rows == 0:
        return table
    table = table.sort_by([(LANG, "ascending"), (ID, "ascending")])
    if limit is None:
        return table
    keep, seen = [], {}
    for i, lang in enumerate(table.column(LANG).to_pylist()):
        seen[lang] = seen.get(lang, 0) + 1
        if seen[lang] <= limit:
            keep.append(i)
    return table.take(pa.array(keep, pa.int64()))
