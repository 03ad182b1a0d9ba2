"""The import graph of the package and of the benchmarks has no cycle (issue #33): a module's imports, at the top or
inside a function, never lead back to it."""

import ast

from conftest import REPO

PACKAGES = ("cesynth", "benchmarks")


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path, known: set) -> set:
    """The modules of ``known`` that the file imports anywhere (relative imports resolved)."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *filter(None, [base])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found & known


def graph() -> dict:
    files = {module_name(p): p for folder in PACKAGES for p in (REPO / folder).rglob("*.py")}
    known = set(files)
    return {name: imports(path, known) - {name} for name, path in files.items()}


def cycles(edges: dict) -> list:
    """Every cycle found by a depth-first search, each as a list of modules."""
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_the_package_and_the_benchmarks_import_no_cycle():
    edges = graph()
    assert "cesynth.infer.inference" in edges["cesynth.infer.uncertainty"]  # the graph sees imports inside functions
    assert cycles(edges) == []


def test_the_cycle_search_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
