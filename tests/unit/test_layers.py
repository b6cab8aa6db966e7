"""The package's layers, as import rules: a request's way down never imports its way up.

config -> builder -> ingress -> servers -> engine is the order of a request (and of
the build). A lower layer importing a higher one makes an import cycle waiting to
happen (engine/args.py importing builder/placement.py once broke every replica's
start), and a deployment that imports the builder could call back up. Imports inside
functions count too: they run in the same processes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "llmserve"

# Each package may import only the packages listed after it (and itself), and
# every package may import ``literals`` (the shared Literal types; it imports nothing).
_MAY_IMPORT: dict[str, set[str]] = {
    "cli": {"*"},
    "runtime": {
        "builder",
        "config",
        "models",
        "engine",
        "ingress",
        "observability",
        "rag",
        "compat",
    },
    "cluster": {"builder", "config", "engine", "runtime"},
    "builder": {
        "config",
        "ingress",
        "servers",
        "engine",
        "models",
        "observability",
        "openai",
        "compat",
        "rag",
    },
    "ingress": {"config", "servers", "engine", "observability", "openai", "compat"},
    "servers": {"config", "engine", "rag", "models", "observability", "openai", "compat"},
    "engine": {"config", "models", "observability", "openai", "compat"},
    "rag": {"compat"},
    "config": {"rag", "compat"},
    "models": {"config"},
    "observability": {"compat"},
    "openai": {"compat"},
    "compat": set(),
}
MAY_IMPORT = {name: allowed | {"literals"} for name, allowed in _MAY_IMPORT.items()}
MAY_IMPORT["literals"] = set()

# Modules above the rest of their package. The indexing job (`llmserve index`, and
# the missing indexes before `run`) lives beside the indexer it drives, but it reads
# the config and runs an embedder's vLLM engine; rag/__init__ does not import it.
MODULE_MAY_IMPORT: dict[str, set[str]] = {
    "rag/index_job.py": MAY_IMPORT["rag"] | {"config", "engine", "models"},
}


def _imports(path: Path) -> set[str]:
    """The llmserve packages a module imports (its first name below llmserve)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "llmserve" and len(parts) > 1:
                found.add(parts[1])
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if len(p.relative_to(PACKAGE).parts) > 1)


def test_every_package_has_a_rule() -> None:
    packages = {p.relative_to(PACKAGE).parts[0] for p in _modules()}
    assert packages == set(MAY_IMPORT)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_the_layers_below_it(path: Path) -> None:
    package = path.relative_to(PACKAGE).parts[0]
    allowed = MODULE_MAY_IMPORT.get(path.relative_to(PACKAGE).as_posix(), MAY_IMPORT[package])
    if "*" in allowed:
        return
    wrong = {name for name in _imports(path) if name != package and name not in allowed}
    # "from llmserve.x import y" names both x and x.y's package; only packages count.
    wrong &= set(MAY_IMPORT)
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"


def test_no_module_of_a_package_imports_its_exception() -> None:
    """The plain modules stay plain: none imports a module that may reach higher."""
    for exception in MODULE_MAY_IMPORT:
        name = "llmserve." + exception.removesuffix(".py").replace("/", ".")
        package = exception.split("/")[0]
        for path in (PACKAGE / package).rglob("*.py"):
            if path.relative_to(PACKAGE).as_posix() == exception:
                continue
            source = path.read_text()
            assert name not in source, f"{path.relative_to(PACKAGE)} imports {name}"


def test_the_only_top_level_modules_are_the_package_face_and_main() -> None:
    assert {p.name for p in PACKAGE.glob("*.py")} == {"__init__.py", "__main__.py"}
