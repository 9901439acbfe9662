"""The judge stage: one request per non-empty candidate (its language's template filled with the user prompt and
the response), ``k`` judgements each, every judgement parsed by :func:`congrad_ray.core.judge.parse_score` and
stored with its status (a failure is recorded, never guessed).

``mode: constrained`` asks for the verdict only: the assistant turn starts with ``Score:`` and the one generated
token is restricted to the scale's digits (the model's own choice among valid answers; this is what lets a random
tiny model produce readable verdicts in the CPU demo). Its text is parsed by the same parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from ..core.judge import parse_score
from ..errors import ConfigError
from .config import JudgeSection
from .inference import derive_seed
from .templates import fill, resolve_template

JUDGEMENT_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("candidate_index", pa.int32()),
        ("judge_index", pa.int32()),
        ("raw", pa.string()),
        ("score", pa.float64()),
        ("status", pa.string()),
    ]
)


def score_prefix(tokenizer: Any, low: int, high: int) -> tuple[str, tuple[int, ...]]:
    """The assistant prefix and the token ids of the digits ``low..high`` that continue it as single tokens."""
    for prefix, sep in (("Score:", " "), ("Score: ", "")):
        base = tokenizer(prefix, add_special_tokens=False).input_ids
        ids = []
        for digit in range(low, high + 1):
            full = tokenizer(prefix + sep + str(digit), add_special_tokens=False).input_ids
            if full[: len(base)] != base or len(full) != len(base) + 1:
                break
            ids.append(full[-1])
        else:
            return prefix, tuple(ids)
    raise ConfigError(["judge.mode constrained: this tokenizer does not write each score digit as one token"])


def templates_by_lang(judge: JudgeSection, base_dir: Path | None) -> tuple[str, dict[str, str]]:
    shared = resolve_template(judge.template, base_dir)
    return shared, {lang: resolve_template(t, base_dir) for lang, t in judge.templates.items()}


def judge_requests(
    candidates: list[dict], shared: str, per_lang: dict[str, str], prefix: str, seed: int, round_index: int
) -> pa.Table:
    """Rows ``request_id, user, prefix, seed`` for every candidate with a non-empty text."""
    rows = []
    for c in candidates:
        if not c["text"].strip():
            continue
        template = per_lang.get(c["lang"], shared)
        rows.append(
            {
                "request_id": f"{c['prompt_id']}#{c['candidate_index']}",
                "user": fill(template, c["instruction"], c["text"], c["lang"]),
                "prefix": prefix,
                "seed": derive_seed(seed, "judge", round_index, c["prompt_id"], c["candidate_index"]),
            }
        )
    schema = pa.schema(
        [("request_id", pa.string()), ("user", pa.string()), ("prefix", pa.string()), ("seed", pa.int64())]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def parse_judgements(outputs: pa.Table, prefix: str, low: int, high: int) -> pa.Table:
    """One row per judgement: the raw text (prefix included), the parsed score and its status."""
    rows = []
    for out in outputs.to_pylist():
        prompt_id, _, index = out["request_id"].rpartition("#")
        raw = prefix + out["text"]
        parsed = parse_score(raw, low, high)
        rows.append(
            {
                "prompt_id": prompt_id,
                "candidate_index": int(index),
                "judge_index": int(out["index"]),
                "raw": raw,
                "score": parsed.score,
                "status": parsed.status,
            }
        )
    rows.sort(key=lambda r: (r["prompt_id"], r["candidate_index"], r["judge_index"]))
    return pa.Table.from_pylist(rows, schema=JUDGEMENT_SCHEMA)
