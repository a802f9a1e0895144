"""The package's shape: layers point one way (pipeline/ never imports train/), no import circle
among the package's modules, modules a reader can hold in mind, the map of the code
(docs/design.md) names them all."""

import ast
import re
from pathlib import Path

import pytest
from helpers import REPO

PACKAGES = ("pipeline", "train")
MAX_LINES = 500


def modules() -> dict[str, Path]:
    """Every module of the two packages by dotted name (a package by its __init__)."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules `path` imports anywhere (functions too; not `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for t in ast.walk(tree) if _type_checking(t) for n in ast.walk(t)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module in known:
            # `from pkg import sub` names the submodule; `from mod import name`, the module
            subs = {f"{node.module}.{a.name}" for a in node.names} & known.keys()
            out |= subs or {node.module}
            if len(subs) < len(node.names):
                out.add(node.module)
    return out


GRAPH = {name: imports(path, modules()) for name, path in modules().items()}


def test_pipeline_never_imports_train():
    bad = {m: sorted(d for d in deps if d.startswith("train"))
           for m, deps in GRAPH.items() if m.startswith("pipeline")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_no_import_circle():
    def cycle_from(start, node, path, seen):
        for dep in GRAPH.get(node, ()):
            if dep == start:
                return [*path, dep]
            if dep not in seen:
                seen.add(dep)
                found = cycle_from(start, dep, [*path, dep], seen)
                if found:
                    return found
        return None

    cycles = [c for m in GRAPH if (c := cycle_from(m, m, [m], {m}))]
    assert cycles == [], " -> ".join(cycles[0]) if cycles else ""


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_fit_in_a_readers_head(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines"


MAX_FUNCTION_LINES = 80  # issue 24: a function a reader can follow on one screen or two


def test_no_function_is_longer_than_a_reader_can_follow():
    """Every function and method of train/, pipeline/ and launch/ (nested ones too) is at most
    MAX_FUNCTION_LINES lines, its decorators and docstring included."""
    long = []
    for folder in (*PACKAGES, "launch"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                    lines = node.end_lineno - first + 1
                    if lines > MAX_FUNCTION_LINES:
                        rel = path.relative_to(REPO).as_posix()
                        long.append(f"{rel}:{node.lineno} {node.name}: {lines} lines")
    assert long == [], "; ".join(long)


def test_docs_map_names_every_module():
    page = (REPO / "docs" / "design.md").read_text()
    start = page.index("## Map of the code")
    table = page[start:page.index("\n## ", start + 1)]
    named = set(re.findall(r"`((?:pipeline|train)/[\w/]*(?:\.py)?)`", table))
    missing = []
    for path in modules().values():
        rel = path.relative_to(REPO).as_posix()
        folder = rel.rsplit("/", 1)[0] + "/"
        if rel.count("/") == 1 and rel.endswith("__init__.py"):
            continue  # pipeline/__init__.py, train/__init__.py: the packages themselves
        if rel not in named and not (folder.count("/") == 2 and folder in named):
            missing.append(rel)  # a subpackage (train/cluster/) may be named as a whole
    assert missing == []


def test_setup_cfg_lists_every_package():
    """setup.cfg names its packages one by one: a package folder missing there would be left
    out of a wheel (and a `pip install .` cluster image) without a word."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    folders = {".".join(p.parent.relative_to(REPO).parts) for pkg in PACKAGES
               for p in (REPO / pkg).rglob("__init__.py")}
    assert listed == folders | {"train._launch"}


# MindSpore 2.10 documents these as deprecated, "removed after version 2.9.0": the package uses
# the primitives (ops.Assign(), ops.AssignAdd(), ops.ScatterUpdate()), as MindSpore's own
# optimizers do.
DEPRECATED = re.compile(r"\bops\.(assign|assign_add|scatter_update)\(")


def test_no_deprecated_mindspore_function_is_called():
    found = [f"{name}:{i + 1}" for name, path in modules().items()
             for i, line in enumerate(path.read_text().splitlines())
             if DEPRECATED.search(line.split("#")[0])]
    assert found == []
