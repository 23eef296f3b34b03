"""The shape of the code: one exception base, and packages that import in one direction."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

from core.errors import AnxinError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("core", "devices", "ingest", "detectors", "alerts", "api", "simulators", "demo")
#: Which packages each package may import (directly); anything else is a cycle in the making.
ALLOWED = {
    "core": set(),
    "detectors": {"core"},
    "devices": {"core", "detectors"},
    "alerts": {"core", "detectors", "devices"},
    "ingest": {"core", "detectors", "devices", "alerts"},
    "simulators": {"core", "detectors", "devices", "alerts"},  # the kinds scenarios expect
    "api": {"core", "detectors", "devices", "alerts", "ingest", "simulators"},
    "demo": {"core", "detectors", "devices", "alerts", "ingest", "simulators", "api"},
}
#: The ``anxin`` command line is every package's entry point: it imports the demo's runner
#: inside the ``anxin demo`` command only (the demo builds on the API, not the reverse).
ENTRY_POINTS = {"api/cli.py": {"demo"}}


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    return [package] + [
        m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.") if not m.ispkg
    ]


def test_every_error_a_package_raises_derives_from_anxin_error() -> None:
    """A caller can catch everything Anxin raises on purpose with one ``except AnxinError``."""
    strays = []
    for package in SHIPPED:
        for name in _modules(package):
            module = importlib.import_module(name)
            for cls_name, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ != name or cls_name.startswith("_"):
                    continue
                error = issubclass(cls, Exception) and cls_name.endswith("Error")
                if error and not issubclass(cls, AnxinError):
                    strays.append(f"{name}.{cls_name}")
    assert strays == []


def test_packages_import_each_other_in_one_direction() -> None:
    wrong = []
    for package in SHIPPED:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for imported in names:
                    top = imported.split(".")[0]
                    allowed = ALLOWED[package] | ENTRY_POINTS.get(
                        str(path.relative_to(ROOT)), set()
                    )
                    if top in SHIPPED and top != package and top not in allowed:
                        wrong.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert wrong == []
