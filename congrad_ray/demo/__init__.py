"""Bundled demo data: a seeded, offline multilingual preference benchmark with known conflicts (see ``corpus``)."""

from .corpus import (
    COLUMNS,
    CONFLICT_KINDS,
    CORRUPTIONS,
    DEMO_LANGUAGES,
    TEMPLATES,
    CorpusSpec,
    LanguageInfo,
    default_demo_spec,
    demo_tokenizer_corpus,
    generate_pairs,
    summarize,
    write_corpus,
)

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
