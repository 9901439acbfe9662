"""The package's shape, read from the source (no imports run): no import cycles, a pure core, ``train/`` and
``pipeline/`` as peers, and no reference to documents outside the repository."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules(*packages: str) -> dict[str, Path]:
    out = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``name`` imports, anywhere in its body (lazy and TYPE_CHECKING imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _graph(*packages: str) -> dict[str, set[str]]:
    known = _modules(*packages)
    return {name: _imports(name, path, known) for name, path in known.items()}


def test_no_import_cycles():
    assert _cycles(_graph("congrad_ray", "benchmarks")) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_is_pure_and_train_and_pipeline_are_peers():
    graph = _graph("congrad_ray")
    for name, deps in graph.items():
        if name.startswith("congrad_ray.core"):
            assert all(d.startswith("congrad_ray.core") for d in deps), (name, deps)
        if name.startswith("congrad_ray.train"):
            assert not any(d.startswith("congrad_ray.pipeline") for d in deps), (name, deps)
    for path in (ROOT / "congrad_ray" / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert not names & {"ray", "os", "shutil", "subprocess", "fsspec"}, (path.name, names)
        assert "open" not in calls, path.name


def test_the_design_lives_in_the_repository():
    assert (ROOT / "docs" / "design.md").is_file()
    for path in [*(ROOT / "congrad_ray").rglob("*.py"), ROOT / "README.md", ROOT / "pyproject.toml"]:
        text = path.read_text()
        for stale in ("DESIGN.md", "ENVIRONMENT.md", "../shared", "requirements-ci.txt"):
            assert stale not in text, (path.relative_to(ROOT), stale)
