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
