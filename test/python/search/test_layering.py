"""Where the search sits: above the passes (transforms/ never imports it), below the tools (it draws
nothing itself and imports no tool), and independent of the C lowering and the targets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from testpaths import REPO


def qtrain_imports(folder: Path) -> dict[str, set[str]]:
    """file -> the qtrain modules it imports (at any depth, lazy imports included)."""
    out: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        out[str(path.relative_to(REPO))] = {n for n in names if n.startswith("qtrain.")}
    return out


@pytest.mark.parametrize("folder, forbidden", [
    ("transforms", ("qtrain.search", "qtrain.lowering", "qtrain.targets", "qtrain.tools")),
    ("search", ("qtrain.tools", "qtrain.lowering", "qtrain.targets")),
])
def test_package_imports_stay_below(folder: str, forbidden: tuple[str, ...]) -> None:
    imports = qtrain_imports(REPO / folder)
    assert imports, f"no Python files under {folder}/"
    bad = {f: sorted(n for n in names if n.startswith(forbidden)) for f, names in imports.items()}
    assert not {f: n for f, n in bad.items() if n}


def test_the_search_writes_no_temporary_file() -> None:
    """Candidates are typed schemes; the only file the search writes is the schemes.json output and the
    contribution cache it is asked for."""
    for path in (REPO / "search").rglob("*.py"):
        text = path.read_text()
        assert "tempfile" not in text and "NamedTemporaryFile" not in text, path
