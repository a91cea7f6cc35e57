"""The import rules of ARCHITECTURE.md, checked on the source: layers and no cycles; and
the exception rule of STYLE.md: every exception class of ours is a ShardlineError.

Every ``import`` statement counts, including those inside functions (the code base imports
lazily on purpose, and a lazy import still couples two modules); only imports under
``if TYPE_CHECKING:`` are left out, because they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("stream", "processors", "sinks", "deploy")
#: What runs in Lambda: these may import each other and the standard library and the
#: run-time dependencies, never the operator's side or the local event source mapping.
LAMBDA = ("stream", "processors", "sinks")
LOCAL_ONLY = ("deploy", "stream.esm")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name an executed import statement in ``tree`` names."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each one imports."""
    sources = {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        names = _imported(tree, name, path.name == "__init__.py")
        graph[name] = {n for n in names if n in sources and n != name}
    return graph


GRAPH = _graph()


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize(
    "module", sorted(m for m in GRAPH if _in(m, LAMBDA) and not _in(m, LOCAL_ONLY))
)
def test_lambda_code_never_imports_local_only_code(module: str) -> None:
    """A Lambda package holds stream/ (without esm/), processors/ and sinks/ only."""
    bad = sorted(n for n in GRAPH[module] if _in(n, LOCAL_ONLY))
    assert not bad, f"{module} imports {bad}: Lambda code must not (see ARCHITECTURE.md)"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
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
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
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


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_in_a_cycle() -> None:
    """A package's ``__init__`` importing its own submodule is not a cycle by itself, but
    two modules that import each other (even lazily) are."""
    graph = {
        name: {n for n in deps if not name.startswith(n + ".")}  # a module and its parents
        for name, deps in GRAPH.items()
    }
    assert _cycles(graph) == []


#: Exception classes of ours that are not ShardlineErrors, each with the reason. Nothing
#: raised on purpose at a caller belongs here: only signals caught where they are raised.
NOT_SHARDLINE_ERRORS = {
    # a signal inside the code generators, caught by them: never leaves the module
    "processors.codegen.NotWritten",
    # a DynamoDB conditional write that lost, turned into a lease outcome where it is caught
    "stream.esm.checkpoints._ConditionFailed",
    # `shardline dev` stopping its wait for the stack: control flow, caught where raised
    "deploy.local.dev._Stopped",
    # an integral float beyond 64 bits: caught in the same module, which writes it as text
    "sinks.dynamodb._InexactNumber",
    # ListShards failed: caught in the same method, which fails the pending records with it
    "stream.producer._NoShardMap",
}


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in our packages, by its qualified name."""
    import importlib  # noqa: PLC0415
    import inspect  # noqa: PLC0415
    import pkgutil  # noqa: PLC0415

    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        names = [package] + [
            m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.")
        ]
        for name in names:
            # the handler loads the plan when imported; a __main__ runs its command
            if name == "stream.lambda_handler" or name.endswith(".__main__"):
                continue
            module = importlib.import_module(name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == name:
                    found[f"{name}.{cls.__qualname__}"] = cls
    return found


EXCEPTIONS = _exception_classes()


def test_the_scan_finds_the_package_roots() -> None:
    roots = {"stream.exceptions.ShardlineError", "processors.errors.ProcessorError",
             "sinks.base.SinkError", "deploy.errors.DeployError"}  # fmt: skip
    assert roots <= set(EXCEPTIONS)
    assert not NOT_SHARDLINE_ERRORS - set(EXCEPTIONS), "an allowed name no longer exists"


@pytest.mark.parametrize("name", sorted(set(EXCEPTIONS) - NOT_SHARDLINE_ERRORS))
def test_every_exception_of_ours_is_a_shardline_error(name: str) -> None:
    """One root for all we raise on purpose (STYLE.md), so the CLI catches ours once and
    anything else shows as the bug it is."""
    from stream.exceptions import ShardlineError  # noqa: PLC0415

    assert issubclass(EXCEPTIONS[name], ShardlineError), (
        f"{name} must derive from ShardlineError, through its package's root "
        "(ProcessorError, SinkError, DeployError), or be listed in NOT_SHARDLINE_ERRORS"
    )


@pytest.mark.parametrize(
    ("package", "root"),
    [("processors", "processors.errors.ProcessorError"), ("sinks", "sinks.base.SinkError"),
     ("deploy", "deploy.errors.DeployError")],
)  # fmt: skip
def test_every_exception_of_a_package_derives_from_its_root(package: str, root: str) -> None:
    """``except SinkError`` catches every sink error, and so on (shared ones, RecordError and
    RetryableError, come from stream and are added as a second base)."""
    bad = sorted(
        name
        for name, cls in EXCEPTIONS.items()
        if name.startswith(package + ".")
        and name not in NOT_SHARDLINE_ERRORS
        and name != root
        and not issubclass(cls, EXCEPTIONS[root])
    )
    assert not bad, f"{bad} must derive from {root}"
