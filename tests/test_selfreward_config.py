"""The iterate config: every shipped one loads, every problem (nested filter/train configs too) reported at once;
and the backends' behaviour on the tiny model without Ray (seeds, n, greedy, constrained scoring, chat template)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from congrad_ray.errors import ConfigError
from congrad_ray.selfreward.config import IterateConfig, load_iterate_config, resolve_backend

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ITERATE_CONFIGS = sorted(CONFIGS.glob("iterate-*.yaml"))


@pytest.mark.parametrize("path", ITERATE_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_iterate_config_loads(path):
    cfg = load_iterate_config(path, check_paths=False)
    assert isinstance(cfg, IterateConfig) and cfg.run.rounds >= 1 and cfg.generation.n >= 2
    assert cfg.filter.config is None or Path(cfg.filter.config).is_absolute()  # resolved next to the YAML


def test_tiny_config_passes_the_full_check():
    cfg = load_iterate_config(CONFIGS / "iterate-tiny-cpu.yaml")
    assert cfg.model.name_or_path.startswith("tiny://") and resolve_backend(cfg) == "transformers"
    assert cfg.run.rounds == 2 and cfg.judge.mode == "constrained"


def test_gpu_config_asks_for_vllm_on_gpus():
    cfg = load_iterate_config(CONFIGS / "iterate-gemma2-2b.yaml", check_paths=False)
    assert cfg.generation.backend == "vllm" and cfg.generation.gpus_per_actor >= 1
    assert cfg.judge.mode == "generate" and cfg.judge.template == "builtin:additive-5"
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match="import vllm"):
            load_iterate_config(CONFIGS / "iterate-gemma2-2b.yaml", check_paths=True)


@pytest.mark.parametrize(
    ("actors", "cpus_per_actor", "num_cpus", "refused"),
    [(1, 2, 2, True), (2, 1, 2, True), (1, 1.75, 2, False), (1, 1, 2, False), (4, 1, 8, False)],
)
def test_generation_actors_must_leave_the_render_tasks_a_cpu(monkeypatch, actors, cpus_per_actor, num_cpus, refused):
    """Actors that take every CPU of an embedded Ray starve the tasks that render their prompts (the loop hangs);
    on a cluster (``RAY_ADDRESS``) the autoscaler adds nodes, so nothing is refused there."""
    from congrad_ray.selfreward.config import GenerationSection, embedded_cpu_problems

    g = GenerationSection(actors=actors, cpus_per_actor=cpus_per_actor)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    problems = embedded_cpu_problems(g, num_cpus)
    assert bool(problems) == refused, problems
    if refused:
        assert "raise run.num_cpus" in problems[0]
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert embedded_cpu_problems(g, num_cpus) == []


def test_all_problems_reported_together(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "generation:\n  n: 1\n  backend: tgi\n"
        "judge:\n  k: 2\n  min_valid: 3\n  template: 'Rate {prompt}'\n  templates: {fr: 'file:nope.txt'}\n"
        "pairs:\n  min_gap: -1\n"
        "filter:\n  overrides: ['input.paths=[x]', 'sketch.k=3000']\n"
        "train:\n  overrides: ['run.output=/x']\n"
        "promts: {}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_iterate_config(bad, ["run.rounds=0", "model.name_or_path=tiny://gpt5"])
    text = str(err.value)
    for expected in (
        "generation.n",
        "generation.backend",
        "judge: min_valid=3 > k=2",
        "pairs.min_gap",
        "promts: unknown key",
        "run.rounds",
    ):
        assert expected in text, expected
    assert len(err.value.problems) >= 6
    # structural errors stop before the cross checks; these are reported together once the structure is right
    bad.write_text(
        "judge:\n  template: 'Rate {prompt}'\n  templates: {fr: 'file:nope.txt'}\n  mode: constrained\n"
        "filter:\n  overrides: ['input.paths=[x]', 'sketch.k=3000']\n"
        "train:\n  overrides: ['run.output=/x', 'optim.bf16=true']\n"
    )
    with pytest.raises(ConfigError) as err:
        load_iterate_config(bad, ["model.name_or_path=tiny://gpt5", "prompts.paths=[/does/not/exist]"])
    text = str(err.value)
    for expected in (
        "judge.template: the template lacks {response}",
        "judge.templates.fr: template file",
        "filter.overrides: input.paths is set by the loop",
        "train.overrides: run.output is set by the loop",
        "filter (defaults): sketch.k: must be a power of two",
        "train (defaults): optim.bf16 needs scaling.use_gpu",
        "unknown tiny model",
        "/does/not/exist does not exist",
    ):
        assert expected in text, expected


def test_constrained_judge_needs_a_digit_scale():
    with pytest.raises(ConfigError, match="within 0..9"):
        load_iterate_config(None, ["judge.mode=constrained", "judge.scale_max=10"])


# ---------------------------------------------------------------------------------------------------------------
# backends, in process (no Ray)


@pytest.fixture(scope="module")
def hf_backend(tiny_dir):
    from congrad_ray.selfreward.backends import BackendSpec, TransformersBackend

    return TransformersBackend(BackendSpec("transformers", str(tiny_dir)))


def test_transformers_backend_seeds_n_and_greedy(hf_backend):
    from congrad_ray.selfreward.backends import SamplingSpec

    params = SamplingSpec(n=3, temperature=1.0, top_p=1.0, max_new_tokens=6)
    a = hf_backend.generate(["Count from 1 to 5:", "Zähle von 2 bis 6:"], [11, 12], params)
    b = hf_backend.generate(["Zähle von 2 bis 6:"], [12], params)
    assert len(a) == 2 and all(len(x) == 3 for x in a) and a[1] == b[0]  # per-prompt seed: batch-independent
    assert len({c.text for c in a[0]}) > 1
    assert all(c.n_tokens <= 6 and c.finish_reason in ("stop", "length") for x in a for c in x)
    greedy = hf_backend.generate(["Count from 1 to 5:"], [1], SamplingSpec(3, 0.0, 1.0, 6))[0]
    assert len(greedy) == 3 and len({c.text for c in greedy}) == 1


def test_constrained_scoring_yields_parseable_verdicts(hf_backend):
    from congrad_ray.core.judge import parse_score
    from congrad_ray.selfreward.backends import SamplingSpec
    from congrad_ray.selfreward.inference import render_prompt
    from congrad_ray.selfreward.judge import score_prefix

    tok = hf_backend.tokenizer
    prefix, ids = score_prefix(tok, 0, 5)
    assert len(ids) == 6 and len(set(ids)) == 6
    prompt = render_prompt(tok, "Rate: 1 2 3", "auto", prefix)
    assert prompt.startswith("<|im_start|>user\nRate: 1 2 3<|im_end|>") and prompt.endswith("assistant\n" + prefix)
    assert render_prompt(tok, "Rate", "never") == "Rate"
    outs = hf_backend.generate([prompt], [5], SamplingSpec(8, 1.0, 1.0, 1, ids))[0]
    scores = [parse_score(prefix + c.text) for c in outs]
    assert len(outs) == 8 and all(s.status == "ok" and 0 <= s.score <= 5 for s in scores)
    again = hf_backend.generate([prompt], [5], SamplingSpec(8, 1.0, 1.0, 1, ids))[0]
    assert again == outs
    argmax = hf_backend.generate([prompt], [5], SamplingSpec(4, 0.0, 1.0, 1, ids))[0]
    assert len({c.text for c in argmax}) == 1
