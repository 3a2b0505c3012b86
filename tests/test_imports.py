"""lit_hf's modules import one another without a cycle, read from their source with `ast` (nothing is imported)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lit_hf"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:`, which never runs. Imports inside functions count: a cycle
    through a deferred import is still a cycle, only one that fails later."""
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack += node.orelse
            continue
        nodes.append(node)
        stack += ast.iter_child_nodes(node)
    return nodes


def imported(source: str, name: str, package: str, modules: set[str]) -> set[str]:
    """The lit_hf modules that module `name` (in `package`) imports: `from a.b import c` is a.b.c where that is a
    module, else a.b."""
    found = set()
    for node in runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x`, `from .a import b`
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [base])])
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return found & modules - {name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {}
    for path in paths:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = imported(path.read_text(encoding="utf-8"), name, package, modules)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as the modules along it (first one repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_walker_finds_a_cycle() -> None:
    graph = {"lit_hf.a": {"lit_hf.b"}, "lit_hf.b": {"lit_hf.c"}, "lit_hf.c": {"lit_hf.a"}, "lit_hf.d": set()}
    assert find_cycle(graph) == ["lit_hf.a", "lit_hf.b", "lit_hf.c", "lit_hf.a"]
    assert find_cycle({"lit_hf.a": {"lit_hf.b"}, "lit_hf.b": set()}) is None


def test_the_walker_reads_every_kind_of_import() -> None:
    source = "import lit_hf.errors\nfrom lit_hf import atomic, __version__\nfrom .b import x\n"
    source += "def f():\n    from lit_hf.cli import main\nif TYPE_CHECKING:\n    from lit_hf import trust\n"
    modules = {"lit_hf.errors", "lit_hf.atomic", "lit_hf.cli", "lit_hf.trust", "lit_hf", "lit_hf.sub.b", "lit_hf.sub.a"}
    found = imported(source, "lit_hf.sub.a", "lit_hf.sub", modules)
    assert found == {"lit_hf.errors", "lit_hf.atomic", "lit_hf", "lit_hf.sub.b", "lit_hf.cli"}


def test_lit_hf_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 40 and graph["lit_hf.cli"]  # the walker read the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
