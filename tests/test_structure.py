"""The code's structure, read from its import graph (ast, every import including the ones
inside functions): each DVC stage declares every project module its script uses, so a change to
a module reruns the stages that use it; and no two parts of skindx import each other."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

SRC = REPO_ROOT / "src"
PIPELINES = REPO_ROOT / "pipelines"


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for skindx (under src/) and the stage scripts."""
    modules: dict[str, Path] = {}
    for path in sorted((SRC / "skindx").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    for path in sorted(PIPELINES.glob("*.py")):
        modules[f"pipelines.{path.stem}"] = path
    return modules


MODULES = module_files()


def _with_parents(name: str) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ too."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(MODULES)


@cache
def imports_of(module: str) -> frozenset[str]:
    """The project modules that `module` imports directly (anywhere in the file)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            if name in MODULES:
                found |= _with_parents(name)
    found.discard(module)
    return frozenset(found)


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(imports_of(current) - seen)
    return seen


def resolved_stages() -> dict[str, dict]:
    """dvc.yaml's stages with ${paths.…} (and any other ${key}) filled in from params.yaml."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())

    def lookup(match: re.Match) -> str:
        value = params
        for key in match.group(1).split("."):
            value = value[key]
        return str(value)

    text = re.sub(r"\$\{\s*([\w.]+)\s*\}", lookup, (REPO_ROOT / "dvc.yaml").read_text())
    return yaml.safe_load(text)["stages"]


def _dep_path(dep) -> str:
    return next(iter(dep)) if isinstance(dep, dict) else str(dep)


STAGES = resolved_stages()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_every_module_its_script_imports(stage):
    spec = STAGES[stage]
    script = re.search(r"pipelines/(\w+)\.py", spec["cmd"])
    assert script, f"stage {stage}: cmd {spec['cmd']!r} does not run a pipelines/ script"
    deps = [Path(_dep_path(d)) for d in spec.get("deps", [])]
    used = sorted(closure(f"pipelines.{script.group(1)}"))
    uncovered = []
    for module in used:
        rel = MODULES[module].relative_to(REPO_ROOT)
        if not any(rel == dep or dep in rel.parents for dep in deps):
            uncovered.append(str(rel))
    assert not uncovered, (
        f"dvc.yaml stage {stage!r} runs code it does not declare: add {uncovered} (or their "
        "folder) to its deps, so that changing them reruns the stage"
    )


def test_the_import_graph_sees_function_level_imports():
    """The graph is only as good as its parser: a stage whose script reaches torch-side code
    through imports inside functions must still see it."""
    assert "skindx.models.checkpoint" in closure("pipelines.evaluate")
    assert "skindx.inference.hashing" in closure("pipelines.ingest")


def subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "skindx" and len(parts) > 1 else None


def subpackage_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        source = subpackage(module)
        if source is None:
            continue
        graph.setdefault(source, set())
        for target in imports_of(module):
            dest = subpackage(target)
            if dest is not None and dest != source:
                graph[source].add(dest)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_two_parts_of_skindx_import_each_other():
    graph = subpackage_graph()
    assert {"data", "training", "evaluation", "models", "inference"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle between skindx parts: {' -> '.join(cycle)}"


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_torch_free_core_imports_no_other_part_of_skindx():
    """skindx.inference is what serving ships: it may import nothing else from skindx."""
    assert subpackage_graph()["inference"] == set()
