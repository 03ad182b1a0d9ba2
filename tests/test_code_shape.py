"""Functions short enough to read and called with settings, not argument chains.

A function over MAX_LINES does several things; one over MAX_PARAMETERS is fed a chain of positional values
that a settings object (built once from the config) carries better. Both limits hold for the package and
the benchmarks.
"""

import ast

from conftest import REPO

MAX_LINES = 60
MAX_PARAMETERS = 8  # self/cls not counted
CHECKED = ("cesynth", "benchmarks")


def functions():
    for folder in CHECKED:
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for parent in ast.walk(tree):
                for node in ast.iter_child_nodes(parent):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        method = isinstance(parent, ast.ClassDef)
                        yield f"{path.relative_to(REPO)}:{node.lineno} {node.name}", node, method


def parameters(node, method: bool) -> int:
    args = node.args
    names = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    count = len(names) + bool(args.vararg) + bool(args.kwarg)
    return count - (method and bool(names) and names[0].arg in ("self", "cls"))


def test_no_function_is_longer_than_the_limit():
    long = [f"{name}: {node.end_lineno - node.lineno + 1} lines" for name, node, _ in functions()
            if node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert long == []


def test_no_function_takes_more_parameters_than_the_limit():
    many = [f"{name}: {parameters(node, method)} parameters" for name, node, method in functions()
            if parameters(node, method) > MAX_PARAMETERS]
    assert many == []


def test_the_checks_see_a_long_function_with_many_parameters():
    source = "class A:\n    def f(self, a, b, c, d, e, f, g, h, i):\n" + "        pass\n" * MAX_LINES
    method = ast.parse(source).body[0].body[0]
    assert parameters(method, True) == 9 and method.end_lineno - method.lineno + 1 == MAX_LINES + 1
