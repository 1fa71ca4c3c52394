"""The house's rules, read from the code: no import circle, and imports run down the floors, never up.

Every `import` and `from … import` of every module of gosmall counts: at the top, inside functions and
under `if TYPE_CHECKING:` alike, since any of them is a dependency a reader has to follow.

The floors, bottom first (README, "Where the code lives"):
  ground    digest, errors, reporter, atomic, interrupts, leftovers, elf, layer_files, reference, redact, …, images/model
  registry/ the distribution-API client: it knows no reader of images and none of its users
  images/   readers and writers of any image (layout, archive, engine, registry)
  config    [tool.gosmall]
  build/    source -> Build
  publish/  Build -> a destination
  trust/    facts about references and images
  top       the outlines (pipeline, init) and the wiring (tasks, cli, console)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stages"
FLOORS = ("ground", "registry", "images", "config", "build", "publish", "trust", "top")
TOP = {"pipeline", "init", "tasks", "cli", "console"}


def floor_of(module: str) -> str:
    head = module.split(".")[0]
    if module == "images.model":
        return "ground"  # the image model: what every floor speaks
    if head in ("registry", "images", "config", "build", "publish", "trust"):
        return head
    return "top" if head in TOP else "ground"


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path, known: Mapping[str, Path]) -> Iterator[tuple[str, int]]:
    """gosmall modules that `module` imports, with the line: `from . import x` names module x when there is one."""
    is_package = path.name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    if module == "":
        here = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and (node.module == "gosmall" or node.module.startswith("gosmall.")):
                base = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                candidate = ".".join([*base, alias.name])
                target = candidate if candidate in known else ".".join(base)
                if target in known and target != module:
                    yield target, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("gosmall."):
                    target = alias.name.split(".", 1)[1]
                    if target in known:
                        yield target, node.lineno


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, int]]:
    known = modules(package)
    return {m: dict(imports_of(m, p, known)) for m, p in known.items()}


def find_cycle(graph: Mapping[str, Mapping[str, int]]) -> list[str] | None:
    """One import circle as the modules along it (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def upward_imports(graph: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Each import that climbs: from a floor to one above it."""
    wrong = []
    for module, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            if FLOORS.index(floor_of(target)) > FLOORS.index(floor_of(module)):
                wrong.append(f"{module} (line {line}, {floor_of(module)}) imports {target} ({floor_of(target)})")
    return wrong


def test_gosmall_has_no_import_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_imports_run_down_the_floors() -> None:
    wrong = upward_imports(import_graph())
    assert not wrong, "imports that climb a floor:\n" + "\n".join(wrong)


def test_build_never_imports_publish_or_trust() -> None:
    graph = import_graph()
    wrong = [f"{m} imports {t}" for m, ts in graph.items() if floor_of(m) == "build" for t in ts if floor_of(t) in ("publish", "trust")]
    assert not wrong


def test_every_module_sits_on_a_floor_the_readme_names() -> None:
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    unnamed = [m for m in modules() if m and f"{m.rsplit('.', 1)[-1]}.py" not in readme and not m.endswith("__init__")]
    packages = {m for m, p in modules().items() if p.name == "__init__.py"}
    assert [m for m in unnamed if m not in packages] == []


@pytest.mark.parametrize("where", ["function", "type_checking"])
def test_a_planted_circle_is_found_and_named(tmp_path: Path, where: str) -> None:
    """A copy of the package with one more import, hidden where a top-level scan would miss it."""
    copy = tmp_path / "stages"
    for path in modules().values():
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    digest = copy / "digest.py"
    plant = (
        "\n\ndef _planted() -> None:\n    from .build.fresh import read_record  # noqa\n"
        if where == "function"
        else "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gosmall.build import fresh  # noqa\n"
    )
    digest.write_text(digest.read_text(encoding="utf-8") + plant, encoding="utf-8")
    graph = import_graph(copy)
    cycle = find_cycle(graph)
    assert cycle is not None and "digest" in cycle and "build.fresh" in cycle
    assert any(line.startswith("digest (line") and "build.fresh (build)" in line for line in upward_imports(graph))
