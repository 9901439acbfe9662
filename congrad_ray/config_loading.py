"""The config loader shared by every command: one YAML per command, ``--set dotted.key=value`` overrides and the
command's own flags, structural validation (pydantic, unknown keys refused), then the config's own checks of what
can be checked before any work starts; every problem reported together in one :class:`ConfigError`, hints naming
the flags of the command that is running (:class:`Command`).

:class:`TopConfig` is the base of the three top-level configs (filter in :mod:`congrad_ray.config`, ``train`` in
:mod:`congrad_ray.train.config`, ``iterate`` in :mod:`congrad_ray.selfreward.config`): it carries ``config_hash``,
``to_yaml`` and ``fingerprint(sections)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError
from .storage import missing_local_path


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Command:
    """How the running command sets config values, so that hints name flags it has."""

    config_flag: str = "--config"
    set_flag: str = "--set"
    flags: Mapping[str, str] = field(default_factory=dict)  # config key -> the flag that sets it

    def how_to_set(self, key: str) -> str:
        return self.flags.get(key) or f"{self.set_flag} {key}=..."


@dataclass(frozen=True)
class LoadContext:
    """What a config's checks may look at: the command, whether to touch the filesystem, the config's directory."""

    command: Command
    check_paths: bool = True
    config_dir: Path | None = None
    config_path: Path | None = None


class TopConfig(Section):
    """A top-level config: hash, YAML, fingerprints of chosen sections, and its own checks."""

    example: ClassVar[str] = "configs/tiny-cpu.yaml"  # the shipped example that hints point at

    def fingerprint(self, sections: Iterable[str], extra: Any = None) -> str:
        """sha256 (16 hex digits) of the canonical JSON of ``sections`` (and ``extra``, when given)."""
        dump = self.model_dump(mode="json")
        payload: dict[str, Any] = {s: dump[s] for s in sections}
        if extra is not None:
            payload["extra"] = extra
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def config_hash(self) -> str:
        """The fingerprint of the whole resolved config."""
        return self.fingerprint(type(self).model_fields)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def problems(self, ctx: LoadContext) -> list[str]:
        """Checks beyond the structure (across sections; paths when ``ctx.check_paths``)."""
        return []

    @classmethod
    def raw_problems(cls, raw: dict[str, Any], ctx: LoadContext) -> list[str]:
        """Path checks on a config that failed structural validation, so those problems are reported too."""
        return []

    def finished(self, ctx: LoadContext) -> TopConfig:
        """The config as the run uses it (e.g. file references made absolute)."""
        return self


def input_path_problems(paths: list[str], command: Command, empty_ok: bool = False) -> list[str]:
    how = command.how_to_set("input.paths")
    if not paths and not empty_ok:
        return [f"input.paths is empty: set it in the config or with {how}"]
    return [f"input.paths: {p} does not exist (check the path, or {how})" for p in paths if missing_local_path(p)]


def apply_overrides(raw: dict[str, Any], overrides: list[str], set_flag: str = "--set") -> list[str]:
    """Apply ``dotted.key=value`` overrides in place (values parsed as YAML); returns problems found."""
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"{set_flag} {item!r}: expected dotted.key=value, e.g. {set_flag} selection.rho=0.3")
            continue
        problems += set_value(raw, key.strip(), _yaml_value(value), set_flag)
    return problems


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # a plain string that YAML cannot parse (``a: b``): kept as written


def set_value(raw: dict[str, Any], key: str, value: Any, set_flag: str = "--set") -> list[str]:
    """``raw[a][b][c] = value`` for ``key = "a.b.c"``; a problem when a prefix is not a section."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return [f"{set_flag} {key}: {part} is not a section"]
    node[parts[-1]] = value
    return []


def format_validation_error(err: ValidationError, example: str) -> list[str]:
    """One line per pydantic error: ``dotted.key: message (got value)``, with a hint for unknown keys."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key; remove it or check its spelling against {example}")
        elif e["type"] == "value_error":
            lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{where}: {e['msg']}{shown}")
    return lines


def load_raw(path: str | Path | None, command: Command, example: str) -> tuple[dict[str, Any], list[str]]:
    if path is None:
        return {}, []
    p = Path(path)
    where = f"{command.config_flag} {p}"
    if p.is_dir():
        return {}, [f"{where} is a directory; pass a YAML file such as {example}"]
    if not p.is_file():
        return {}, [f"{where} not found; pass a YAML file such as {example}"]
    try:
        raw = yaml.safe_load(p.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError:
        return {}, [f"{where} is not UTF-8 text; save it as UTF-8 YAML"]
    except yaml.YAMLError as e:
        return {}, [f"{where} is not valid YAML: {' '.join(str(e).split())[:200]}"]
    if not isinstance(raw, dict):
        return {}, [f"{where} must hold a mapping of sections (see {example})"]
    return raw, []


def load_config(
    cls: type[TopConfig],
    path: str | Path | None,
    overrides: Iterable[str] = (),
    values: Mapping[str, Any] | None = None,
    check_paths: bool = True,
    command: Command | None = None,
) -> Any:
    """The one loader: ``path`` (None: defaults), then ``--set`` ``overrides``, then the command's own flags
    (``values``: dotted key -> value, None skipped), validated and checked; raises :class:`ConfigError` listing every
    problem."""
    command = command or Command()
    raw, problems = load_raw(path, command, cls.example)
    problems += apply_overrides(raw, list(overrides), command.set_flag)
    for key, value in (values or {}).items():
        if value is not None:
            problems += set_value(raw, key, value)
    resolved = Path(path).resolve() if path else None
    ctx = LoadContext(command, check_paths, resolved.parent if resolved else None, resolved)
    try:
        cfg = cls.model_validate(raw)
    except ValidationError as e:
        problems += format_validation_error(e, cls.example) + cls.raw_problems(raw, ctx)
        raise ConfigError(problems) from None
    problems += cfg.problems(ctx)
    if problems:
        raise ConfigError(problems)
    return cfg.finished(ctx)
