"""Bundled demo data: a seeded, offline multilingual preference benchmark with known conflicts (see ``corpus``).

Modules: ``languages`` (the languages and their task phrasings), ``corpus`` (the spec and the pairs),
``writing`` (ground-truth summaries and Parquet shards)."""

from .corpus import (
    COLUMNS,
    CONFLICT_KINDS,
    CORRUPTIONS,
    CorpusSpec,
    default_demo_spec,
    demo_tokenizer_corpus,
    generate_pairs,
)
from .languages import DEMO_LANGUAGES, TEMPLATES, LanguageInfo
from .writing import summarize, write_corpus

__all__ = [
    "COLUMNS",
    "CONFLICT_KINDS",
    "CORRUPTIONS",
    "DEMO_LANGUAGES",
    "TEMPLATES",
    "CorpusSpec",
    "LanguageInfo",
    "default_demo_spec",
    "demo_tokenizer_corpus",
    "generate_pairs",
    "summarize",
    "write_corpus",
]
