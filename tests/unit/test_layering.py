"""The folder is the layer: imports point one way, and `events` does no I/O at import.

DESIGN.md: `events` <- `projections` / `connectors` <- `services`. The imports are read from the
source with `ast`, so a violation is caught even in a module no other test imports.

"No I/O at import" is checked statically: every call evaluated when an `events` module is
imported (module level, class bodies, decorators, default arguments; not function bodies) must be
one of ALLOWED_IMPORT_TIME_CALLS. Each of those builds a value in memory without touching a file,
socket or clock:

- `re.compile(...)`, `struct.Struct(...)`: precompiled patterns and formats;
- `Path(...)`: a path object only (`Path(__file__).parent / "x"` is allowed; anything called on
  it, such as `.read_text()` or `.resolve()`, is not);
- `TypeVar(...)`: typing;
- `dataclass(...)` and `field(...)`: the decorator and field specs of frozen dataclasses;
- calling a class defined at the top level of the same module (such as `Upcaster(...)` in
  `events/upcasters.py`): allowed because what that runs is in the module and checked too. The
  class's own constructor code (`__new__`, `__init__`, `__post_init__`, also of local base
  classes) is checked as import-time code, and a base class from elsewhere is reported, since its
  constructor is not checked here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import REPO

OURS = frozenset({"events", "projections", "connectors", "services", "tests"})
MAY_IMPORT: dict[str, frozenset[str]] = {
    "events": frozenset(),
    "projections": frozenset({"events"}),
    "connectors": frozenset({"events"}),
    "services": frozenset({"events", "projections", "connectors"}),
}
ALLOWED_IMPORT_TIME_CALLS = frozenset(
    {
        "re.compile",
        "struct.Struct",
        "Path",
        "pathlib.Path",
        "TypeVar",
        "typing.TypeVar",
        "dataclass",
        "dataclasses.dataclass",
        "field",
        "dataclasses.field",
    }
)


@dataclass(frozen=True)
class Import:
    where: str
    package: str
    statement: str


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool, label: str) -> Iterator[Import]:
    """Top-level package of every import in `source`, with relative imports resolved against `module`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(f"{label}:{node.lineno}", alias.name.split(".")[0], ast.unparse(node))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                target = node.module or ""
            else:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            yield Import(f"{label}:{node.lineno}", target.split(".")[0], ast.unparse(node))


def layer_violations(package: str) -> list[str]:
    allowed = MAY_IMPORT[package] | {package}
    found: list[str] = []
    for path in sources(package):
        label = str(path.relative_to(REPO))
        is_package = path.name == "__init__.py"
        for imp in imports_of(path.read_text(encoding="utf-8"), module_name(path), is_package, label):
            if imp.package in OURS and imp.package not in allowed:
                found.append(f"{imp.where}: {imp.statement}")
    return found


CONSTRUCTOR_METHODS = frozenset({"__new__", "__init__", "__post_init__"})


def local_classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    """Classes defined at the top level of a module, by name."""
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def import_time_calls(source: str, label: str) -> list[str]:
    """`file:line: call` for every call that importing `source` evaluates, outside the allow-list.

    A call of a class defined in the same module is allowed; the constructor code it runs is
    checked in turn, and a base class from another module is reported.
    """
    offending: list[str] = []
    tree = ast.parse(source)
    classes = local_classes(tree)
    called: list[str] = []

    class Visitor(ast.NodeVisitor):
        def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
            # The body runs when called; decorators and defaults run at import.
            for expr in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
                if expr is not None:
                    self.visit(expr)

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Lambda(self, node: ast.Lambda) -> None:
            for expr in [*node.args.defaults, *node.args.kw_defaults]:
                if expr is not None:
                    self.visit(expr)

        def visit_Call(self, node: ast.Call) -> None:
            name = dotted_name(node.func)
            if name in classes:
                if name not in called:
                    called.append(name)
            elif name not in ALLOWED_IMPORT_TIME_CALLS:
                offending.append(f"{label}:{node.lineno}: {ast.unparse(node)}")
            self.generic_visit(node)

    visitor = Visitor()
    visitor.visit(tree)
    # Constructing a local class runs its constructor methods and those of its bases at import.
    checked = 0
    while checked < len(called):
        cls = classes[called[checked]]
        checked += 1
        for base in [*cls.bases, *(k.value for k in cls.keywords)]:
            base_name = dotted_name(base)
            if base_name in classes:
                if base_name not in called:
                    called.append(base_name)
            elif base_name != "object":
                offending.append(
                    f"{label}:{cls.lineno}: {cls.name} is called at import but derives from "
                    f"{ast.unparse(base)}, whose constructor is not checked"
                )
        for item in cls.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name in CONSTRUCTOR_METHODS:
                for statement in item.body:
                    visitor.visit(statement)
    return offending


def dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        owner = dotted_name(node.value)
        return None if owner is None else f"{owner}.{node.attr}"
    return None


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_layer_has_python_sources_to_check(package: str) -> None:
    assert sources(package), f"no .py files under {package}/"


def test_events_imports_none_of_projections_connectors_or_services() -> None:
    violations = layer_violations("events")
    assert not violations, "events/ must import nothing of ours:\n" + "\n".join(violations)


def test_projections_imports_only_events_of_ours() -> None:
    violations = layer_violations("projections")
    assert not violations, "projections/ may import only events:\n" + "\n".join(violations)


def test_connectors_imports_only_events_of_ours() -> None:
    violations = layer_violations("connectors")
    assert not violations, "connectors/ may import only events:\n" + "\n".join(violations)


def test_services_imports_our_packages_but_never_the_tests() -> None:
    violations = layer_violations("services")
    assert not violations, "services/ may import events, projections, connectors:\n" + "\n".join(violations)


def test_the_layer_check_reports_a_forbidden_import_with_file_and_line() -> None:
    source = "import json\nfrom events.envelope import Envelope\n\nfrom services.settings import Settings\n"
    found = [
        f"{i.where}: {i.statement}"
        for i in imports_of(source, "projections.example", False, "projections/example.py")
        if i.package in OURS and i.package not in MAY_IMPORT["projections"] | {"projections"}
    ]
    assert found == ["projections/example.py:4: from services.settings import Settings"]


def test_the_layer_check_resolves_relative_imports_to_their_package() -> None:
    source = "from . import sibling\nfrom ..db import upsert\nfrom .. import x\n"
    found = {i.package for i in imports_of(source, "projections.migrations.env", False, "env.py")}
    assert found == {"projections"}


@pytest.mark.parametrize("path", sources("events"), ids=lambda p: str(p.relative_to(REPO)))
def test_an_events_module_makes_no_calls_at_import_beyond_the_allow_list(path: Path) -> None:
    label = str(path.relative_to(REPO))
    offending = import_time_calls(path.read_text(encoding="utf-8"), label)
    assert not offending, (
        f"calls evaluated at import (allowed: {sorted(ALLOWED_IMPORT_TIME_CALLS)}):\n" + "\n".join(offending)
    )


def test_the_import_time_check_reports_io_with_file_and_line_and_ignores_function_bodies() -> None:
    source = (
        "import re\n"
        "from pathlib import Path\n"
        "ROOT = Path(__file__).parent / 'schemas'\n"
        "PATTERN = re.compile('x')\n"
        "DATA = ROOT.joinpath('units.json').read_text()\n"
        "def load(path=open('defaults.json')):\n"
        "    return open(path).read()\n"
        "class Holder:\n"
        "    table = dict(a=1)\n"
    )
    assert import_time_calls(source, "events/example.py") == [
        "events/example.py:5: ROOT.joinpath('units.json').read_text()",
        "events/example.py:5: ROOT.joinpath('units.json')",
        "events/example.py:6: open('defaults.json')",
        "events/example.py:9: dict(a=1)",
    ]


def test_the_import_time_check_allows_calling_a_class_defined_in_the_same_module() -> None:
    source = (
        "from dataclasses import dataclass\n"
        "from other import Imported\n"
        "@dataclass(frozen=True, slots=True)\n"
        "class Step:\n"
        "    source: str\n"
        "    target: str\n"
        "STEPS = (Step('a', 'b'), Step(source='b', target='c'))\n"
        "OTHER = Imported('a')\n"
        "def build():\n"
        "    class Step2: pass\n"
        "LATER = Step2()\n"
    )
    assert import_time_calls(source, "events/example.py") == [
        "events/example.py:8: Imported('a')",
        "events/example.py:11: Step2()",
    ]


def test_the_import_time_check_reports_io_in_the_constructor_of_a_local_class_called_at_import() -> None:
    source = (
        "class Base:\n"
        "    def __init__(self):\n"
        "        self.text = open('base.json').read()\n"
        "class Loader(Base):\n"
        "    def __post_init__(self):\n"
        "        self.more = open('more.json')\n"
        "    def load(self):\n"
        "        return open('never-at-import.json')\n"
        "class Unused:\n"
        "    def __init__(self):\n"
        "        open('not-called.json')\n"
        "LOADER = Loader()\n"
    )
    assert import_time_calls(source, "events/example.py") == [
        "events/example.py:6: open('more.json')",
        "events/example.py:3: open('base.json').read()",
        "events/example.py:3: open('base.json')",
    ]


def test_the_import_time_check_reports_a_local_class_with_a_foreign_base_called_at_import() -> None:
    source = "from somewhere import Remote\nclass Local(Remote):\n    pass\nTHING = Local()\n"
    assert import_time_calls(source, "events/example.py") == [
        "events/example.py:2: Local is called at import but derives from Remote, "
        "whose constructor is not checked"
    ]


def test_events_upcasters_builds_its_upcasters_at_import_from_its_own_class() -> None:
    path = REPO / "events" / "upcasters.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert "Upcaster" in local_classes(tree)
    assert import_time_calls(ast.unparse(tree), "events/upcasters.py") == []
    # The same calls with the class imported from elsewhere would be reported.
    without_class = ast.Module(
        body=[n for n in tree.body if not (isinstance(n, ast.ClassDef) and n.name == "Upcaster")],
        type_ignores=[],
    )
    reported = import_time_calls(ast.unparse(without_class), "events/upcasters.py")
    assert reported
    assert all("Upcaster(" in line for line in reported)
