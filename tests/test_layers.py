"""The package's structure as a contract: imports flow one way, and no module imports itself back.

Layers, lowest first (a module may import its own layer and the ones below, never above):

    core <- models <- algorithms <- integrations <- publishing <- evaluation <- app (cli, demo)

Every import counts, also one inside a function (a "lazy" import still ties the two modules),
except under ``if TYPE_CHECKING:``. The package root ``uetransforms/__init__.py`` is the public
facade: it may name anything, and only the app layer (the CLI and the demo, which speak the
public API) imports it.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "uetransforms"
LAYERS = ("core", "models", "algorithms", "integrations", "publishing", "evaluation", "app")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "facade"
    return parts[1] if parts[1] in LAYERS else "app"


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every uetransforms import in ``path``, TYPE_CHECKING blocks left out."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("uetransforms"):
                continue
            for alias in node.names:  # `from . import x` may name a submodule
                sub = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists() or \
                    (PACKAGE.parent / sub.replace(".", "/")).is_dir()
                out.append((node.lineno, sub if is_module else target))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("uetransforms")]
    return out


def _graph() -> dict[str, list[tuple[int, str]]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_sits_in_a_layer():
    for module in _graph():
        assert _layer(module) in (*LAYERS, "facade"), module


def test_imports_flow_one_way():
    upward = []
    for module, imports in _graph().items():
        if _layer(module) == "facade":
            continue
        for line, target in imports:
            if _layer(target) == "facade" and _layer(module) != "app":
                upward.append(f"{module}:{line} imports the package root {target!r} (import from the module itself)")
            elif _layer(target) != "facade" and LAYERS.index(_layer(target)) > LAYERS.index(_layer(module)):
                upward.append(f"{module}:{line} ({_layer(module)}) imports {target} ({_layer(target)})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_circles():
    graph = {m: sorted({t for _, t in imps if t in _graph_keys()}) for m, imps in _graph().items()}
    # A package's __init__ importing its own submodules (registration, re-export) and a submodule
    # importing its package's names is the one allowed pair: Python's package idiom, not a circle
    # between two files' logic. Everything else must be acyclic.
    def allowed(a: str, b: str) -> bool:
        return b.startswith(a + ".") or a.startswith(b + ".")

    circles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph.get(m, []):
            if allowed(m, t):
                continue
            if state.get(t) == 1:
                circles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(circles)


def _graph_keys() -> set[str]:
    return {_module_name(p) for p in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("bad_line, layer", [("from ..evaluation import harness", "evaluation"),
                                             ("from .. import __version__", "facade")])
def test_the_contract_catches_an_upward_import(tmp_path, monkeypatch, bad_line, layer):
    """The checker is not vacuous: a core module importing upward is reported."""
    fake = tmp_path / "uetransforms"
    (fake / "core").mkdir(parents=True)
    (fake / "evaluation").mkdir()
    for f in ("__init__.py", "core/__init__.py", "evaluation/__init__.py", "evaluation/harness.py"):
        (fake / f).write_text("")
    (fake / "core" / "bank.py").write_text(bad_line + "\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake, raising=False)
    globals()["PACKAGE"], old = fake, PACKAGE
    try:
        with pytest.raises(AssertionError, match="uetransforms.core.bank:1"):
            test_imports_flow_one_way()
    finally:
        globals()["PACKAGE"] = old
