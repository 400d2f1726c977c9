"""The package's layout rules (docs/architecture.md): small modules, no import circle, NVFlare behind ``fl/``.

Read from the source with ``ast``, so a rule broken anywhere fails here whether or not a test imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dose3d_fl

PACKAGE = Path(dose3d_fl.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 600
# Sub-packages that stay plain MONAI / torch / pydicom: they run and test without a federation.
WITHOUT_NVFLARE = ("data", "synth", "seg", "gan", "clinical", "geometry", "report", "bench", "cli")
NVFLARE_ROOMS = ("fl", "deploy")


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small(module: Path) -> None:
    lines = len(module.read_text().splitlines())
    assert lines <= MAX_LINES, f"{module.relative_to(PACKAGE)} has {lines} lines: split it by concept"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nvflare_is_imported_only_under_fl_and_deploy(module: Path) -> None:
    room = module.relative_to(PACKAGE).parts[0]
    if room in NVFLARE_ROOMS:
        return
    nvflare = sorted(
        name for name in _imports(module, top_level_only=False) if name.split(".")[0] == "nvflare"
    )
    assert not nvflare, f"{module.relative_to(PACKAGE)} imports {nvflare[0]}: move that need behind fl/"


def test_the_plain_sub_packages_exist() -> None:
    assert all((PACKAGE / room / "__init__.py").is_file() for room in WITHOUT_NVFLARE + NVFLARE_ROOMS)


def test_no_import_circle() -> None:
    modules = {_name(path): path for path in MODULES}
    graph = {
        name: sorted(t for t in _imports(path, top_level_only=True) if t in modules and t != name)
        for name, path in modules.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in graph[name]:
            if state.get(target) == 1:
                circle = [*path[path.index(target) :], target] if target in path else [name, target]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("room", ["data", "synth", "fl.site", "fl.server", "fl.policy"])
def test_sub_package_re_exports_its_public_api(room: str) -> None:
    package = __import__(f"dose3d_fl.{room}", fromlist=["__all__"])
    assert package.__doc__, f"dose3d_fl.{room} says nothing of what it is"
    assert package.__all__ and all(hasattr(package, name) for name in package.__all__)


def test_the_longest_test_files_named_for_scheduling_exist() -> None:
    """``tests/conftest.py`` starts these files first; a renamed one would silently lose its place."""
    from tests.conftest import LONGEST_FIRST

    root = Path(__file__).parents[1]
    assert [path for path in LONGEST_FIRST if not (root / path).is_file()] == []
