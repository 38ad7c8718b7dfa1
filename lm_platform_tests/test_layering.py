"""The core never imports Dagster; only the trainer speaks Dagster Pipes (a dependency-free protocol)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lm_platform"
SHELL = {PACKAGE / "defs", PACKAGE / "definitions.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_modules_do_not_import_dagster():
    core = [p for p in PACKAGE.rglob("*.py") if not any(p == s or s in p.parents for s in SHELL)]
    assert len(core) > 15
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(_imports(p) & {"dagster", "dagster_k8s", "dagster_webserver"})
        for p in core
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    pipes_users = {str(p.relative_to(PACKAGE)) for p in core if "dagster_pipes" in _imports(p)}
    assert pipes_users <= {"training/train.py"}


DEFS = PACKAGE / "defs"
# Shared helpers every domain module may import; the aggregators that list the domains.
DEFS_SHARED = {"metadata", "resources"}
DEFS_AGGREGATORS = {"__init__", "assets", "deployment", "locations"}  # code locations compose the rest


def _defs_imports(path: Path) -> set[str]:
    """The `lm_platform.defs` modules a file imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "lm_platform.defs":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lm_platform.defs."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("lm_platform.defs.")}
    return found


def test_defs_domain_modules_do_not_import_each_other():
    modules = {p.stem: p for p in DEFS.glob("*.py")}
    assert {"corpus", "curation", "dedup", "blending", "tokenizer", "training", "evaluation"} <= set(modules)
    assert {"finetune", "automation", "metadata"} <= set(modules)
    offenders = {
        name: sorted(_defs_imports(path) - DEFS_SHARED - {name})
        for name, path in modules.items()
        if name not in DEFS_AGGREGATORS
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_defs_files_and_asset_functions_stay_small():
    too_long = {p.name: n for p in DEFS.glob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert too_long == {}
    long_assets = {}
    for path in DEFS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(
                "asset" in ast.unparse(d).split("(")[0] for d in node.decorator_list
            ):
                body = node.end_lineno - node.body[0].lineno + 1
                if body > 40:
                    long_assets[f"{path.name}:{node.name}"] = body
    assert long_assets == {}
