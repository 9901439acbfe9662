"""The math of CONGRAD on tensors: no Ray, no file I/O, runs on CPU. Notation as in DESIGN.md."""

from .aggregate import EMASegment, LanguageSums, ema_combine, ema_segment, ema_sequential, minibatch_means
from .count_sketch import CountSketch, axis_hash, stream_seed
from .dpo import DPOParams, DPOTerms, PreferenceBatch, lp_dpo_terms, sequence_logps, token_logps
from .per_sample import SketchedPairs, reference_logps, sketch_pair_gradients
from .per_sample_loop import per_sample_gradients_loop, sketch_pair_gradients_loop
from .scope import Scope, scoped_linears, transformer_blocks
from .selection import Decision, SelectionRule, score, select
from .surgery import Direction, cosine_matrix, mean_direction, pcgrad

__all__ = [
    "CountSketch",
    "DPOParams",
    "DPOTerms",
    "Decision",
    "Direction",
    "EMASegment",
    "LanguageSums",
    "PreferenceBatch",
    "Scope",
    "SelectionRule",
    "SketchedPairs",
    "axis_hash",
    "cosine_matrix",
    "ema_combine",
    "ema_segment",
    "ema_sequential",
    "lp_dpo_terms",
    "mean_direction",
    "minibatch_means",
    "pcgrad",
    "per_sample_gradients_loop",
    "reference_logps",
    "score",
    "scoped_linears",
    "select",
    "sequence_logps",
    "sketch_pair_gradients",
    "sketch_pair_gradients_loop",
    "stream_seed",
    "token_logps",
    "transformer_blocks",
]
