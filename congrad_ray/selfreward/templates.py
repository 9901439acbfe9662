"""Judge prompt templates: the additive 5-point LLM-as-a-judge prompt (Yuan et al. 2024, "Self-Rewarding Language
Models"), one shared template or one per language, with ``{prompt}``, ``{response}``, ``{language}`` (English name)
and ``{lang}`` (code) placeholders. Filling is plain replacement, so braces elsewhere in a template are kept."""

from __future__ import annotations

import re
from pathlib import Path

ADDITIVE_5 = """Review the user's question and the corresponding response using the additive 5-point scoring system \
described below. Points are accumulated based on the satisfaction of each criterion:
- Add 1 point if the response is relevant and provides some information related to the user's inquiry, even if it \
is incomplete or contains some irrelevant content.
- Add another point if the response addresses a substantial portion of the user's question, but does not completely \
resolve the query or provide a direct answer.
- Award a third point if the response answers the basic elements of the user's question in a useful way, regardless \
of whether it seems to have been written by an AI Assistant or if it has elements typically found in blogs or search \
results.
- Grant a fourth point if the response is clearly written from an AI Assistant's perspective, addressing the user's \
question directly and comprehensively, and is well-organized and helpful, even if there is slight room for \
improvement in clarity, conciseness or focus.
- Bestow a fifth point for a response that is impeccably tailored to the user's question by an AI Assistant, without \
extraneous information, reflecting expert knowledge, and demonstrating a high-quality, engaging, and insightful answer.
The question is written in {language}; a response in another language than the question's earns at most 1 point.

User: {prompt}
<response>{response}</response>

After examining the user's instruction and the response:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Score: <total points>"
Remember to assess from the AI Assistant perspective. To evaluate the response in alignment with this additive \
scoring model, we'll systematically attribute points based on the outlined criteria."""

SHORT_5 = """Rate the response to the question on a scale of 0 to 5 (5 = a correct, complete, helpful answer in \
{language}). Question: {prompt}
Response: {response}
Answer with "Score: <0-5>"."""

BUILTIN = {"additive-5": ADDITIVE_5, "short-5": SHORT_5}
REQUIRED = ("{prompt}", "{response}")
_PLACEHOLDER = re.compile(r"\{(?:prompt|response|language|lang)\}")

LANGUAGE_NAMES = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "vi": "Vietnamese",
    "sw": "Swahili",
    "ru": "Russian",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "ar": "Arabic",
    "hi": "Hindi",
}


def resolve_template(spec: str, base_dir: Path | None = None) -> str:
    """``builtin:NAME`` | ``file:PATH`` (relative: cwd, then ``base_dir``) | the template text itself."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name not in BUILTIN:
            raise ValueError(f"unknown builtin template {name!r}; use one of {sorted(BUILTIN)}")
        return BUILTIN[name]
    if spec.startswith("file:"):
        path = Path(spec.removeprefix("file:")).expanduser()
        if not path.is_absolute() and not path.exists() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ValueError(f"template file {path} not found")
        return path.read_text()
    return spec


def template_problems(shared: str, per_language: dict[str, str], base_dir: Path | None) -> list[str]:
    problems = []
    for where, spec in [("judge.template", shared), *((f"judge.templates.{k}", v) for k, v in per_language.items())]:
        try:
            text = resolve_template(spec, base_dir)
        except ValueError as e:
            problems.append(f"{where}: {e}")
            continue
        missing = [p for p in REQUIRED if p not in text]
        if missing:
            problems.append(f"{where}: the template lacks {', '.join(missing)} (it must show the prompt and response)")
    return problems


def fill(template: str, prompt: str, response: str, lang: str) -> str:
    """The judge's user message for one candidate."""
    values = {"{language}": LANGUAGE_NAMES.get(lang, lang), "{lang}": lang, "{prompt}": prompt, "{response}": response}
    return _PLACEHOLDER.sub(lambda m: values[m.group(0)], template)  # one pass: inserted text is never re-filled
