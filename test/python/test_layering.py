"""The architecture's rules, checked on the source (DESIGN.md "Layout"; the architecture issue's must-show):

- nothing under transforms/ imports lowering/, targets/, the interpreter or the search (function-local
  imports included): passes ask the dialect and the target description, never a backend or a driver;
- the search imports no tool, lowering or target;
- no pass imports another pass (shared utilities live in the dialect or in non-pass modules);
- autodiff, the interpreter, the C emitter and dead-gradient elimination hold no isinstance dispatch
  over qtrain op classes: they dispatch through the op interfaces;
- the dialect and numerics import no pass, lowering, target, frontend or tool.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from testpaths import REPO

from qtrain.dialects import qtrain as qtrain_dialect


def imported_modules(path: Path) -> set[str]:
    """Every `qtrain.*` module a file imports, at any depth (function bodies included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qtrain"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("qtrain"))
    return found


def python_files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


PASS_MODULES = {
    f"qtrain.transforms.{p.stem}"
    for p in python_files("transforms")
    if "ModulePass" in p.read_text() and p.stem not in ("__init__", "pipeline")
}


def test_the_rules_see_the_passes():
    assert {"qtrain.transforms.autodiff", "qtrain.transforms.plan_memory", "qtrain.transforms.reorder"} <= PASS_MODULES


@pytest.mark.parametrize("path", python_files("transforms"), ids=lambda p: p.name)
def test_transforms_import_no_backend(path: Path):
    forbidden = ("qtrain.lowering", "qtrain.targets", "qtrain.interpreter", "qtrain.frontends", "qtrain.tools",
                 "qtrain.search")
    bad = sorted(m for m in imported_modules(path) if m.startswith(forbidden))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", python_files("search"), ids=lambda p: p.name)
def test_the_search_sits_below_the_tools_and_beside_the_backends(path: Path):
    """The scheme search is a driver above the passes: it draws nothing itself (progress goes through a
    callback), and reaches the lowering and the targets only through the pipeline, the interpreter and its
    host engine. host_build.py is that engine: it emits the C, builds it for the host and runs it the way
    qtrain-run does (its `run`, the one reader of the firmware's console protocol; moving it below the
    tools would let this exception go)."""
    allowed = ("qtrain.lowering.emit_c", "qtrain.targets.armv7em", "qtrain.tools.qtrain_run") \
        if path.name == "host_build.py" else ()
    bad = sorted(m for m in imported_modules(path) if m.startswith(("qtrain.tools", "qtrain.lowering",
                                                                     "qtrain.targets")) and not m.startswith(allowed))
    assert not bad, f"{path.name} imports {bad}"


def test_the_search_writes_no_temporary_file():
    """Candidates are typed schemes, not schemes.json files written for the sparse-update pass; the only
    temporary folders are the host engine's builds and run files (host_build.py, fine_tune.py)."""
    for path in python_files("search"):
        text = path.read_text()
        assert "NamedTemporaryFile" not in text, path
        if path.name not in ("host_build.py", "fine_tune.py"):
            assert "tempfile" not in text, path


@pytest.mark.parametrize("path", [p for p in python_files("transforms") if p.stem not in ("__init__", "pipeline")],
                         ids=lambda p: p.name)
def test_no_pass_imports_another_pass(path: Path):
    me = f"qtrain.transforms.{path.stem}"
    bad = sorted(m for m in imported_modules(path) if m in PASS_MODULES and m != me)
    assert not bad, f"{path.name} imports the pass module(s) {bad}"


@pytest.mark.parametrize("folder", ["dialects", "numerics"])
def test_dialect_and_numerics_sit_below_everything(folder: str):
    forbidden = ("qtrain.transforms", "qtrain.lowering", "qtrain.targets", "qtrain.interpreter",
                 "qtrain.frontends", "qtrain.tools", "qtrain.search")
    for path in python_files(folder):
        bad = sorted(m for m in imported_modules(path) if m.startswith(forbidden))
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


QTRAIN_OP_NAMES = {op.__name__ for op in qtrain_dialect.QTRAIN_OPS}

DISPATCHERS = ["transforms/autodiff.py", "transforms/dead_gradient_elim.py", "lowering/emit_c.py",
               *(str(p.relative_to(REPO)) for p in python_files("interpreter"))]


def isinstance_op_classes(path: Path) -> list[str]:
    """The qtrain op classes named in isinstance(...) checks of a file."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            if len(node.args) == 2:
                names += [n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name) and n.id in QTRAIN_OP_NAMES]
    return names


@pytest.mark.parametrize("relative", DISPATCHERS)
def test_no_isinstance_dispatch_over_op_classes(relative: str):
    found = isinstance_op_classes(REPO / relative)
    assert not found, f"{relative} dispatches on op classes {found} instead of the op interfaces"


def test_the_isinstance_check_can_fail(tmp_path: Path):
    """The AST scan sees an isinstance over an op class (so the test above is not vacuous)."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f(op):\n    return isinstance(op, Conv2DOp | AddOp)\n")
    assert isinstance_op_classes(probe) == ["Conv2DOp", "AddOp"]
