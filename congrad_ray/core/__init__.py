"""The math of CONGRAD on tensors: no Ray, no file I/O, runs on CPU. Notation as in docs/design.md."""

from .aggregate import EMASegment, LanguageSums, ema_combine, ema_segment, ema_sequential, minibatch_means
from .count_sketch import CountSketch, axis_hash, stream_seed
from .dpo import DPOParams, DPOTerms, PreferenceBatch, lp_dpo_terms, sequence_logps, token_logps
from .evaluate import RewardStats, group_stats, macro_average, per_language_stats, reward_stats
from .judge import ParsedScore, ScoreSummary, parse_score, summarize_scores
from .measures import (
    Interval,
    auroc,
    chrf,
    conflict_rate,
    language_separation,
    lm_loss,
    lm_loss_by_group,
    logprob_margin,
    mean_and_std,
    paired_bootstrap,
    token_nll,
)
from .pairs import Candidate, PairDecision, PairRules, choose_pair, merge_duplicates, pair_id
from .per_sample import SketchedPairs, reference_logps, sketch_pair_gradients
from .per_sample_loop import per_sample_gradients_loop, sketch_pair_gradients_loop
from .scope import Scope, scoped_linears, transformer_blocks
from .selection import Decision, SelectionRule, agreement_budgets, hybrid_scores, score, select
from .surgery import Direction, LanguageAgreement, cosine_matrix, language_agreement, mean_direction, pcgrad

__all__ = [
    "chrf",
    "language_separation",
    "language_agreement",
    "LanguageAgreement",
    "hybrid_scores",
    "agreement_budgets",
    "paired_bootstrap",
    "auroc",
    "Interval",
    "Candidate",
    "CountSketch",
    "DPOParams",
    "DPOTerms",
    "Decision",
    "Direction",
    "EMASegment",
    "LanguageSums",
    "PairDecision",
    "PairRules",
    "ParsedScore",
    "PreferenceBatch",
    "RewardStats",
    "ScoreSummary",
    "Scope",
    "SelectionRule",
    "SketchedPairs",
    "axis_hash",
    "choose_pair",
    "conflict_rate",
    "cosine_matrix",
    "ema_combine",
    "ema_segment",
    "ema_sequential",
    "group_stats",
    "lm_loss",
    "lm_loss_by_group",
    "logprob_margin",
    "lp_dpo_terms",
    "macro_average",
    "mean_and_std",
    "mean_direction",
    "merge_duplicates",
    "minibatch_means",
    "pair_id",
    "parse_score",
    "pcgrad",
    "per_language_stats",
    "per_sample_gradients_loop",
    "reference_logps",
    "reward_stats",
    "score",
    "scoped_linears",
    "select",
    "sequence_logps",
    "sketch_pair_gradients",
    "sketch_pair_gradients_loop",
    "stream_seed",
    "summarize_scores",
    "token_logps",
    "token_nll",
    "transformer_blocks",
]
