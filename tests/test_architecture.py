"""The package's shape: no import circles (counting every import), small functions, layers in docs.

An independent check beside import-linter (which `make lint` runs with the contracts in pyproject.toml):
this one reads every ``import`` statement of the package itself, at module level, in functions and
under ``TYPE_CHECKING``, and finds strongly connected components of the module graph.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "featurestore"
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (any import statement anywhere in the file)."""
    modules = _modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package
                    for _ in range(node.level - 1):
                        up = up.rpartition(".")[0]
                    base = f"{up}.{base}" if base else up
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                if target.split(".")[0] == "featurestore":
                    found = _resolve(target, modules)
                    if found and found != module:
                        edges[module].add(found)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    nodes = set(edges) | {t for ts in edges.values() for t in ts}
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_counting_every_import():
    assert cycles(import_graph()) == []


def test_the_root_package_is_imported_by_no_module_of_it():
    importers = sorted(m for m, targets in import_graph().items() if "featurestore" in targets and m != "featurestore")
    assert importers == ["featurestore.__main__"] or importers == []


def _functions() -> list[tuple[int, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                out.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(PACKAGE.parent)}:{node.lineno} "
                                                               f"{node.name}"))
    return out


def test_every_function_fits_on_a_screen():
    long = sorted((n, where) for n, where in _functions() if n > MAX_FUNCTION_LINES)
    assert long == [], f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("doc", ["docs/architecture.md"])
def test_the_layers_are_documented(doc):
    path = PACKAGE.parent / doc
    if not path.exists():
        pytest.fail(f"{doc} is missing")
    text = path.read_text()
    for layer in ("cli", "server", "store", "training", "online", "feature_group", "engine", "storage", "schema"):
        assert layer in text, f"{doc} does not mention the {layer} layer"


def test_the_package_imports_its_own_modules_at_module_level():
    """Lazy imports are for heavy third-party libraries only; our own modules are imported at the top, so
    the import graph (and import-linter) sees every arrow."""
    late = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    name = (node.module if isinstance(node, ast.ImportFrom) else
                            node.names[0].name if isinstance(node, ast.Import) else None)
                    if name and name.split(".")[0] == "featurestore":
                        late.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name}")
    assert late == []
