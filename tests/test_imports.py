"""The layout holds: no library package imports a job, and no two modules import each other (directly or
around a circle). Imports are read with `ast`, lazy ones inside functions and TYPE_CHECKING blocks included."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = ("models", "parallel", "data", "rollout", "envs", "agent", "rl", "reward", "train", "integrations")


def module_imports() -> dict[str, set[str]]:
    """alejax module -> the alejax modules it imports (a `from pkg import name` edge goes to pkg.name when
    that is a module, else to pkg)."""
    files = {}
    for directory, _, names in os.walk(os.path.join(ROOT, "alejax")):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                files[module.removesuffix(".__init__")] = path
    edges = {}
    for module, path in files.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        edges[module] = {m for m in found if m in files and m != module}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_lazy_and_relative_imports():
    edges = module_imports()
    assert "alejax.jobs.rl" in edges["alejax.jobs.quickstart"]  # a job may use another job
    assert "alejax.data.episodes" in edges["alejax.rl.resample"]  # imported inside a function
    assert "alejax.rollout.trajectory" in edges["alejax.rl.objective"]  # inside `if TYPE_CHECKING:`
    assert "alejax.rl.advantages" in edges["alejax.rl"]  # a package's __init__
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_library_package_imports_a_job():
    edges = module_imports()
    bad = [
        (m, t)
        for m, targets in edges.items()
        for t in targets
        if m.split(".")[1] in LIBRARY
        and (t == "alejax.jobs" or t.startswith("alejax.jobs.") or t == "alejax.main")
    ]
    assert not bad, f"library modules importing a job or the entry point: {bad}"


def test_no_import_circles_between_modules():
    assert cycles(module_imports()) == []
