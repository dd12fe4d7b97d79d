"""The package's shape, read from its source with `ast` (nothing is imported):

- no import cycle between dualfocus modules, counting imports inside functions (a lazy import hides
  a cycle from Python, not from a reader); imports under ``if TYPE_CHECKING:`` never run and do not count;
- only the tiny-fixture users (tiny/, zoom/, the demo) import `dualfocus.tiny`: real checkpoints
  never go through test-fixture code;
- imports point down DESIGN.md's layers (primitives, model, engine, focus, benchmarks, eval/train,
  serve/integrations, the demo and the zoom bench): nothing imports a layer above its own;
- functions of at most 60 lines, modules of at most ~350 (the conversation template table apart).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dualfocus"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 350
LONG_MODULES_ALLOWED = {"dualfocus.conversation"}  # LLaVA's template table
TINY_USERS = ("dualfocus.tiny", "dualfocus.zoom", "dualfocus.demo")
# Bottom up; a module may import its own layer or any below it. Keys are the first name under dualfocus.
LAYERS = (
    {"constants", "conversation", "mm_utils", "boxes", "preprocess", "files", "paths"},  # LLaVA's primitives
    {"model"},
    {"engine"},
    {"focus"},  # the method, once
    {"benchmarks"},  # one module per benchmark
    {"eval", "train", "tiny"},
    {"serve", "integrations"},
    {"zoom", "demo", "demo_trace", "demo_zoom"},
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom anywhere (functions and classes included), except under TYPE_CHECKING."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, is_package: bool, node) -> list[str]:
    """The dualfocus modules one import statement names (`from a import b`: a.b when it is a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parent = module.split(".") if is_package else module.split(".")[:-1]
            parent = parent[: len(parent) - (node.level - 1)]
            base = ".".join([*parent, base] if base else parent)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    return [_nearest_module(n) for n in names if n == "dualfocus" or n.startswith("dualfocus.")]


def _nearest_module(name: str) -> str:
    """`import dualfocus.model.builder` -> that module; a dotted name inside a module -> the module."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        graph[name] = {t for node in _import_nodes(tree) for t in _resolve(name, is_package, node) if t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, colouring nodes on the current path)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_names_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_sees_lazy_relative_and_from_imports():
    tree = ast.parse("import os\ndef f():\n    from dualfocus.model import builder\n    from .. import files\n"
                     "from dualfocus.eval.answers import answer_key\nif TYPE_CHECKING:\n    import dualfocus.demo\n")
    found = {t for node in _import_nodes(tree) for t in _resolve("dualfocus.eval.runner", False, node)}
    assert found == {"dualfocus.model.builder", "dualfocus.files", "dualfocus.eval.answers"}
    assert "dualfocus.model.checkpoint_writer" in import_graph()["dualfocus.model.convert"]


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)



def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else module
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_every_package_has_a_layer():
    assert [m for m in MODULES if m != "dualfocus" and not any(m.split(".")[1] in n for n in LAYERS)] == []


def test_imports_point_down_the_layers():
    graph = import_graph()
    upward = sorted(f"{m} imports {t}" for m, targets in graph.items() if m != "dualfocus"
                    for t in targets if t != "dualfocus" and layer_of(t) > layer_of(m))
    assert upward == []


def test_only_fixture_code_imports_the_tiny_package():
    graph = import_graph()
    offenders = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                       if t.startswith("dualfocus.tiny") and not m.startswith(TINY_USERS))
    assert offenders == []


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [f"{module_name(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_functions_and_modules_are_short():
    long_functions = [f for path in MODULES.values() for f in _long_functions(path)]
    long_modules = [f"{name}: {n} lines" for name, path in MODULES.items()
                    if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
                    and name not in LONG_MODULES_ALLOWED]
    assert long_functions == [] and long_modules == []
