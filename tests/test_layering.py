"""The dependency rule of docs/architecture.md ("Dependencies"), checked from the imports.

Every ``import`` / ``from ... import`` statement of the project's packages counts, wherever
it is: at the top of a module, inside a function (the lazy imports this code uses a lot),
under ``if TYPE_CHECKING``. A wrong-way import fails here, in ``make test``, instead of
waiting for a reader. The rule itself is :data:`MAY_IMPORT`; changing it means changing
docs/architecture.md with it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What each package may import of the others (itself always). The arrows run one way:
# features/ and models/ at the bottom; stream/ and serve/ use features/, serve/ also models/;
# train/ uses models/ and reads samples through stream/; bench/ sits beside infra/ and uses
# anything but infra/; infra/ wires everything.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "features": frozenset(),
    "models": frozenset(),
    "stream": frozenset({"features"}),
    "serve": frozenset({"features", "models"}),
    "train": frozenset({"features", "models", "stream"}),
    "bench": frozenset({"features", "models", "stream", "serve", "train"}),
    "infra": frozenset({"features", "models", "stream", "serve", "train", "bench"}),
}
# Single modules a package may import beyond those: serve/ logs its predictions to Kafka with
# stream/'s client settings and producer, and nothing else of stream/.
MAY_ALSO_IMPORT: dict[str, frozenset[str]] = {"serve": frozenset({"stream.kafka"})}
# The only modules that import bench/: the CLI offers the benchmarks (bench.BENCHMARKS).
BENCH_IMPORTERS = frozenset({"infra.cli", "infra.demo"})  # the demo runs bench.loop
# models/ runs on a box with torch and a few light packages: none of these.
NOT_IN_MODELS = ("ray", "feast", "kafka")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "stream.consumer"
    line: int
    target: str  # the imported name, absolute, e.g. "features.store.UserSequence"
    top_level: bool  # executed when the module is imported (not inside a function)

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def modules() -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its own name)."""
    out = {}
    for package in MAY_IMPORT:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports_of(module: str, source: str) -> Iterator[Import]:
    """Every import statement of ``source`` (the module ``module``), at any depth."""
    package = module if module in PACKAGE_MODULES else module.rpartition(".")[0]

    def walk(node: ast.AST, top: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(module, child.lineno, alias.name, top)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the module's package upwards
                    anchor = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    yield Import(module, child.lineno, f"{base}.{alias.name}", top)
            yield from walk(child, inner)

    yield from walk(ast.parse(source), True)


MODULES = modules()
PACKAGE_MODULES = {name for name, path in MODULES.items() if path.name == "__init__.py"}
IMPORTS = [imp for name, path in MODULES.items() for imp in imports_of(name, path.read_text())]


def _package(name: str) -> str:
    return name.split(".", 1)[0]


def _resolve(target: str) -> str | None:
    """The project module that an imported name lives in (None: not the project's)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def test_every_package_is_placed_in_the_rule() -> None:
    """A new package must be given its place in the rule (and in docs/architecture.md)."""
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert found == set(MAY_IMPORT)


def test_the_scan_sees_function_level_relative_and_type_checking_imports() -> None:
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from serve import app\n"
              "def f():\n    import train.job\n    from .batch import Batch\n")
    found = [(i.target, i.top_level) for i in imports_of("stream.consumer", source)]
    assert found == [("typing.TYPE_CHECKING", True), ("serve.app", True),
                     ("train.job", False), ("stream.batch.Batch", False)]
    assert len(IMPORTS) > 500  # the real scan found the project's imports


def _allowed(imp: Import) -> bool:
    """Whether ``imp`` follows :data:`MAY_IMPORT` (and :data:`MAY_ALSO_IMPORT`)."""
    here, there = _package(imp.module), _package(imp.target)
    return (there not in MAY_IMPORT or there == here or there in MAY_IMPORT[here]
            or _resolve(imp.target) in MAY_ALSO_IMPORT.get(here, frozenset()))


def test_each_package_imports_only_what_the_rule_allows() -> None:
    wrong = [f"{imp} ({_package(imp.module)}/ may import "
             f"{sorted(MAY_IMPORT[_package(imp.module)]) or 'none of the others'})"
             for imp in IMPORTS if not _allowed(imp)]
    assert wrong == []


def test_only_the_cli_and_the_demo_import_bench() -> None:
    wrong = [str(imp) for imp in IMPORTS if _package(imp.target) == "bench"
             and _package(imp.module) != "bench" and imp.module not in BENCH_IMPORTERS]
    assert wrong == []


def test_models_source_imports_no_ray_feast_or_kafka() -> None:
    wrong = [str(imp) for imp in IMPORTS if _package(imp.module) == "models"
             and _package(imp.target) in NOT_IN_MODELS]
    assert wrong == []


def test_every_models_module_imports_without_ray_feast_or_kafka() -> None:
    """In a fresh interpreter: import every module of models/, then none of Ray, Feast or
    Kafka (kafka-python) may be in ``sys.modules``."""
    names = sorted(n for n in MODULES if _package(n) == "models")
    script = ("import importlib, json, sys\n"
              f"for name in {names!r}:\n    importlib.import_module(name)\n"
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    loaded = set(json.loads(res.stdout.splitlines()[-1]))
    assert loaded & set(NOT_IN_MODELS) == set()
    assert "models" in loaded and "torch" in loaded


def test_no_import_cycles_between_modules() -> None:
    """No two modules import each other, directly or through others, when imported (``if
    TYPE_CHECKING`` imports count: a loop that only a flag breaks is still a loop)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in IMPORTS:
        if imp.top_level and (to := _resolve(imp.target)) is not None and to != imp.module:
            graph[imp.module].add(to)
    cycles = _cycles(graph)
    assert cycles == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found
