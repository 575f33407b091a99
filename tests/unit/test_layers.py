"""Dependencies point one way: api -> scheduler -> engine -> store (metrics sits beside the scheduler,
reading the engine). A lower layer importing a higher one, anywhere in its modules (inside functions
and TYPE_CHECKING blocks too), fails here: read from the source tree, not from what happens to be
imported at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hearth

SRC = Path(hearth.__file__).parent
# layer -> the packages it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "hearth.store": ("hearth.api", "hearth.engine", "hearth.scheduler", "hearth.metrics"),
    "hearth.engine": ("hearth.api", "hearth.scheduler", "hearth.metrics"),
    "hearth.scheduler": ("hearth.api",),
    "hearth.metrics": ("hearth.api", "hearth.scheduler"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, relative ones resolved."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.extend((node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base) for alias in node.names)
    return found


def violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    root = SRC.joinpath(*layer.split(".")[1:])
    bad = []
    for path in sorted(root.rglob("*.py")):
        for line, name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(SRC.parent)}:{line} imports {name}")
    return bad


def test_the_layers_are_where_the_check_looks() -> None:
    for layer in FORBIDDEN:
        assert SRC.joinpath(*layer.split(".")[1:]).is_dir(), layer


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_lower_layer_never_imports_a_higher_one(layer: str) -> None:
    assert violations(layer, FORBIDDEN[layer]) == []
