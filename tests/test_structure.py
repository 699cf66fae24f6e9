"""The package's shape: no import cycles, the library below the CLI, gallery and test helpers,
no private names borrowed across modules, and a command line that starts without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import convscope

ROOT = Path(convscope.__file__).resolve().parent
TOP = (
    "convscope.cli",
    "convscope.gallery",
    "convscope.web",
    "convscope.testing",
    "convscope.atlas",
)
"""What sits on top of the library: the library never imports these."""


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node that can run: all of them but the bodies of `if TYPE_CHECKING:` blocks."""
    found: list[ast.AST] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


@cache
def _imports(module: str) -> list[tuple[str, str | None]]:
    """(imported convscope module, name imported from it or None) for every import statement
    of `module` that can run, at module level or inside functions."""
    path = _modules()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    known = _modules()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, str | None]] = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.startswith("convscope")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if not base.startswith("convscope"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub, None) if sub in known else (base, alias.name))
    return out


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {
        m: {target for target, _ in _imports(m) if target in known and target != m} for m in known
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _is_top(module: str) -> bool:
    return module == "convscope.__main__" or any(
        module == t or module.startswith(t + ".") for t in TOP
    )


def test_the_import_graph_is_read() -> None:
    graph = _graph()
    assert "convscope.models.registry" in graph
    assert "convscope.attribute.occlusion_plan" in graph["convscope.attribute.occlusion"]
    # imports inside functions count too
    assert "convscope.cli.root" in graph["convscope.cli"]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_the_cli_gallery_web_or_test_helpers() -> None:
    bad = [
        (m, target)
        for m in _modules()
        if not _is_top(m)
        for target, _ in _imports(m)
        if _is_top(target) or target == "convscope.testing"
    ]
    assert bad == []


def test_no_private_names_are_borrowed_across_modules() -> None:
    bad = [
        (m, f"{target}.{name}")
        for m in _modules()
        for target, name in _imports(m)
        if name is not None and name.startswith("_") and not name.startswith("__")
    ]
    assert bad == []


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_command_line_starts_without_torch() -> None:
    """`import convscope.cli`, building every command and printing `--help` import neither
    torch nor torchvision (they cost seconds); the commands import them when they run."""
    code = (
        "import sys\n"
        "import convscope.cli\n"
        "from convscope.cli.root import command, main\n"
        "command()\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'numpy', 'PIL') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = _fresh_python(code)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout[-500:]


def test_every_lazily_exported_name_resolves() -> None:
    import importlib

    for package in ("convscope", "convscope.data", "convscope.models", "convscope.cli"):
        module = importlib.import_module(package)
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{package}.{name}"
