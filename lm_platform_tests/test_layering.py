"""The core never imports Dagster; only the trainer speaks Dagster Pipes (a dependency-free protocol)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
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
# Modules that compose the domains into a code location (Definitions) may import them all.
DEFS_AGGREGATORS = {"__init__", "assets", "deployment", "locations"}


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


# ---------------------------------------------------------------------------------------------------
# Import direction between the core's packages: the table in docs/architecture.md is the rule.

ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"
# Config importing an implementation, one (file, package it imports) pair each: these may not grow, and
# an entry that no longer happens must go (see "Import direction" in docs/architecture.md).
KNOWN_UPWARD: set[tuple[str, str]] = set()
# Module cycles inside a package, each as the set of its modules.
KNOWN_CYCLES: list[set[str]] = []


def read_layers(markdown: str) -> dict[str, int | str]:
    """Package -> layer (an int; "shell" for the Dagster shell), from the table under "## Import
    direction"."""
    section = markdown.split("## Import direction", 1)[1].split("\n## ", 1)[0]
    layers: dict[str, int | str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not (cells[0].isdigit() or cells[0] == "shell"):
            continue
        for name in re.findall(r"`([^`]+)`", cells[1]):
            layers[name] = int(cells[0]) if cells[0].isdigit() else "shell"
    return layers


def _lm_imports(tree: ast.AST) -> list[tuple[str, int]]:
    """(imported lm_platform module or name, line) for every import that runs, in-function ones too
    (imports under `if TYPE_CHECKING:` never run and are left out)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("lm_platform")]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("lm_platform")
        ):
            if node.module == "lm_platform":
                found += [(f"lm_platform.{a.name}", node.lineno) for a in node.names]
            else:
                found.append((node.module, node.lineno))
    return found


def _package_of(rel: str) -> str:
    """The top-level unit of a path relative to lm_platform/: a package folder or a single module."""
    first = rel.split("/", 1)[0]
    return first.removesuffix(".py") if "/" not in rel else first


def layer_violations(sources: dict[str, str], layers: dict[str, int | str]) -> list[str]:
    """Imports that do not point down the layers: `sources` maps paths relative to lm_platform/ to their
    text. Packages missing from the table are violations too."""
    problems = []
    for rel, text in sorted(sources.items()):
        here = _package_of(rel)
        if rel == "__init__.py":  # the package's own __init__ runs before anything: it imports nothing
            problems += [f"{rel}:{line}: imports {name}" for name, line in _lm_imports(ast.parse(text))]
            continue
        if here not in layers:
            problems.append(f"{rel}: package '{here}' is not in the import table of docs/architecture.md")
            continue
        for name, line in _lm_imports(ast.parse(text)):
            parts = name.split(".")
            there = parts[1] if len(parts) > 1 else ""
            if not there or there == here or (rel, there) in KNOWN_UPWARD:
                continue
            if there not in layers:
                problems.append(f"{rel}:{line}: imports '{name}', whose package is not in the import table")
            elif layers[here] == "shell":
                continue
            elif layers[there] == "shell" or layers[there] >= layers[here]:
                problems.append(
                    f"{rel}:{line}: {here} (layer {layers[here]}) imports {name} (layer {layers[there]})"
                )
    return problems


def _core_sources() -> dict[str, str]:
    return {
        str(p.relative_to(PACKAGE)): p.read_text(encoding="utf-8")
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts
    }


def test_imports_follow_the_table_in_the_architecture_document():
    layers = read_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    assert layers["recipe"] < layers["data"] < layers["training"] and layers["defs"] == "shell"
    units = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    units |= {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert set(layers) == units, "the table and lm_platform/ name different packages"
    assert layer_violations(_core_sources(), layers) == []


def test_known_upward_imports_still_happen():
    """An exception that no longer happens is removed from KNOWN_UPWARD, so the list only shrinks."""
    sources = _core_sources()
    for rel, there in KNOWN_UPWARD:
        names = [n for n, _ in _lm_imports(ast.parse(sources[rel]))]
        assert any(n.split(".")[1] == there for n in names if "." in n), f"{rel} -> {there}: remove it"


def test_the_recipe_builds_its_filter_union_without_the_filters():
    """The filter settings sit in the recipe layer: loading the recipe schema imports no data module, and
    the curation registry maps exactly the union's settings, in its order."""
    code = "import sys, lm_platform.recipe.schema; print([m for m in sys.modules if m.startswith('lm_platform.data')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from lm_platform.data.curation.filters import FILTERS
    from lm_platform.recipe.filter_settings import FILTER_SETTINGS

    assert tuple(FILTERS) == FILTER_SETTINGS


def test_a_bad_import_fails_the_table():
    layers = read_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    good = {"recipe/base.py": "from lm_platform.atomic import atomic_path\n"}
    assert layer_violations(good, layers) == []
    bad = {
        # config importing an implementation above it, at module level
        "recipe/base.py": "from lm_platform.evaluation.sets import run_evaluation\n",
        # an implementation importing one of its own layer, hidden in a function
        "data/blending/blend.py": "def f():\n    from lm_platform.tokenization import eeve\n    import lm_platform.training.job\n",
        # the core importing the shell
        "tokenization/eeve.py": "from lm_platform import defs\n",
        # a package the table does not know
        "newpkg/x.py": "import os\n",
    }
    problems = layer_violations(bad, layers)
    assert problems == [
        "data/blending/blend.py:3: data (layer 3) imports lm_platform.training.job (layer 4)",
        "newpkg/x.py: package 'newpkg' is not in the import table of docs/architecture.md",
        "recipe/base.py:1: recipe (layer 1) imports lm_platform.evaluation.sets (layer 4)",
        "tokenization/eeve.py:1: tokenization (layer 2) imports lm_platform.defs (layer shell)",
    ]
    # The table, not the test, decides: with data above training the same import passes.
    moved = dict(layers, data=5)
    assert "data/blending/blend.py:3" not in " ".join(layer_violations(bad, moved))


def _module_name(rel: str) -> str:
    parts = rel.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_cycles(sources: dict[str, str]) -> list[set[str]]:
    """Import cycles among the core's modules (names relative to lm_platform), in-function imports
    included; importing a module also imports its parent packages."""
    core = {
        _module_name(rel): text
        for rel, text in sources.items()
        if _package_of(rel) not in ("defs", "definitions")
    }
    graph: dict[str, set[str]] = {}
    for name, text in core.items():
        deps = set()
        for imported, _ in _lm_imports(ast.parse(text)):
            target = imported.removeprefix("lm_platform").lstrip(".")
            while target and target not in core:
                target = target.rpartition(".")[0]
            while target:
                if target != name and not name.startswith(target + "."):
                    deps.add(target)
                target = target.rpartition(".")[0]
        graph[name] = deps
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(component)
    return cycles


def test_core_modules_import_each_other_without_cycles():
    cycles = module_cycles(_core_sources())
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []
    assert all(c in cycles for c in KNOWN_CYCLES), "a known cycle is gone: remove it from KNOWN_CYCLES"
    # A cycle hidden in a function body counts.
    planted = {
        "tokenization/a.py": "from lm_platform.tokenization.b import g\n",
        "tokenization/b.py": "def g():\n    from lm_platform.tokenization.a import f\n",
    }
    assert module_cycles(planted) == [{"tokenization.a", "tokenization.b"}]


# ---------------------------------------------------------------------------------------------------
# In-function imports: only where importing at the top would cost a process that does not need the module.
# Every file of lm_platform/ is checked; each in-function import kept is listed with its cost: the time of
# its first import in a fresh process that has already loaded the code location (`import
# lm_platform.definitions`, what every step process has loaded), median of 3, measured on the shared
# 2-core machine (load about 7, so an idle machine is faster). "at load": the file is loaded by the code
# location, so importing at the top would add the cost to every code-location load and step.

TORCH = "torch, 3.7 s: only model work needs it"
INLINE_IMPORTS = {
    ("data/blending/blend.py", "polars"): "283 ms at load; only blend steps use Polars",
    ("data/blending/pack.py", "polars"): "283 ms at load; only packing uses Polars",
    ("data/blending/tokens.py", "polars"): "283 ms at load; only the tokens summary uses Polars",
    (
        "data/blending/tokens.py",
        "tokenizers",
    ): "17 ms at load; only tokenization needs it (in worker processes too)",
    (
        "data/curation/quality_model.py",
        "sklearn.linear_model",
    ): "4.0 s at load (scikit-learn and SciPy); only the quality_model step trains",
    ("data/curation/quality_model.py", "sklearn.metrics"): "3.5 s at load; with sklearn.linear_model",
    (
        "data/curation/quality_model.py",
        "scipy.sparse",
    ): "277 ms at load; only training builds sparse matrices",
    ("data/corpus/readers.py", "pypdf"): "216 ms at load; only PDF directory sources need it",
    ("data/corpus/readers.py", "pypdf.errors"): "with pypdf",
    ("data/corpus/readers.py", "datasets"): "1.5 s at load; only hub sources (format: hf) need it",
    ("data/corpus/hub_shards.py", "datasets"): "1.5 s at load; only hub sources need it",
    ("data/curation/normalize.py", "ftfy"): "89 ms at load; only normalisation with fix_text uses it",
    (
        "data/curation/reference_lm.py",
        "sentencepiece",
    ): "15 ms at load; only reference-LM training and scoring",
    ("data/curation/filters/encoding.py", "ftfy.badness"): "84 ms at load; only the encoding filter uses it",
    (
        "data/curation/filters/language_id.py",
        "py3langid.langid",
    ): "14 ms at load and a model load on first use",
    (
        "recipe/filter_settings.py",
        "datatrove.pipeline.filters.base_filter",
    ): "430 ms at load; only recipes that use the datatrove filter",
    ("data/curation/filters/datatrove_block.py", "datatrove.data"): "with datatrove.pipeline",
    (
        "data/curation/filters/lines.py",
        "lm_platform.data.corpus.text",
    ): "0 ms (loaded at load): can move to the top",
    ("defs/deployment.py", "lm_platform.defs.k8s_trainer"): "2.0 s (dagster_k8s and the Kubernetes client) "
    "at load; only the k8s profile",
    ("defs/k8s.py", "dagster_k8s"): "1.8 s at load; only the k8s profile's executor",
    ("defs/finetune.py", "lm_platform.finetune.card"): "10 ms at load; only the export step",
    ("defs/finetune.py", "lm_platform.finetune.export"): "20 ms at load; only the export step",
    ("defs/finetune.py", "lm_platform.finetune.lora"): "16 ms at load; only adapter steps",
    ("defs/finetune.py", "lm_platform.finetune.merge"): "11 ms at load; only merge steps",
    ("defs/tokenizer.py", "lm_platform.tokenization.eeve"): "45 ms at load; only the tokenizer step",
    ("defs/tokenizer.py", "lm_platform.tokenization.fertility"): "19 ms at load; only the tokenizer step",
    ("defs/tokenizer.py", "lm_platform.tokenization.sample"): "14 ms at load; only the tokenizer step",
    ("defs/tokenizer.py", "lm_platform.tokenization.sentencepiece_trainer"): "38 ms at load; only the "
    "tokenizer step",
    ("defs/plan.py", "lm_platform.definitions"): "loads the recipe named by the environment: only when run",
    (
        "defs/summary.py",
        "lm_platform.definitions",
    ): "loads the recipe named by the environment: only when run",
    ("evaluation/sets.py", "lm_platform.evaluation.multiple_choice"): "12 ms at load; only exams",
    ("evaluation/leaderboard.py", "matplotlib"): "350 ms at load; only the leaderboard's plot",
    ("evaluation/leaderboard.py", "matplotlib.pyplot"): "1.0 s at load; with matplotlib",
    ("evaluation/lm_eval_adapter.py", "lm_eval"): "with lm_eval.tasks",
    ("evaluation/lm_eval_adapter.py", "lm_eval.models.huggingface"): "8.8 s at load; only lm_eval kinds",
    ("evaluation/lm_eval_adapter.py", "lm_eval.tasks"): "1.8 s at load; only lm_eval kinds",
    ("evaluation/generation.py", "torch"): TORCH + " (generation scoring)",
    ("evaluation/loglik.py", "torch"): TORCH + " (scoring)",
    ("evaluation/perplexity.py", "torch"): TORCH + " (scoring)",
    ("evaluation/models.py", "torch"): TORCH + " (loading a model)",
    ("evaluation/models.py", "transformers"): "0.9 s: only loading a model",
    ("finetune/export.py", "torch"): TORCH + " (the export's cast)",
    ("finetune/export.py", "transformers"): "0.9 s: only the export",
    ("finetune/lora.py", "peft"): "11.9 s: only LoRA training",
    ("finetune/lora.py", "torch"): TORCH + " (LoRA training)",
    ("finetune/lora.py", "torch.nn.functional"): "with torch",
    ("finetune/lora.py", "transformers"): "0.9 s: only LoRA training",
    ("finetune/merge.py", "mergekit.config"): "13.2 s: only merges",
    ("finetune/merge.py", "mergekit.merge"): "with mergekit.config",
    ("finetune/merge.py", "torch"): TORCH + " (merges)",
    ("modeling/eeve.py", "torch"): TORCH + " (read_eeve is torch-free, used by fine-tuning's setup)",
    ("modeling/freeze.py", "torch"): TORCH,
    ("modeling/init.py", "torch"): TORCH + " (llama_config is used without it)",
    ("modeling/init.py", "transformers"): "0.9 s: only building a model",
    ("tokenization/eeve.py", "transformers"): "0.9 s in the tokenizer step; only a base given by hub id",
    ("tokenization/hf_compat.py", "transformers"): "0.9 s at load (packing imports it); only loading a "
    "tokenizer with AutoTokenizer",
    ("tokenization/sentencepiece_trainer.py", "transformers"): "0.9 s; only the HF export of a trained "
    "tokenizer",
    ("training/checkpoint.py", "safetensors.torch"): "3.6 s (torch): run identities and step dirs are "
    "read without torch",
    ("training/checkpoint.py", "torch"): TORCH + " (run identities and step dirs are read without it)",
    ("training/flops.py", "torch"): TORCH + " (FLOPs per token from a config need no torch)",
    ("training/metrics.py", "matplotlib"): "350 ms: only the loss curve",
    ("training/metrics.py", "matplotlib.pyplot"): "1.0 s: only the loss curve",
    ("training/metrics.py", "torch"): TORCH + " (samples)",
    ("training/parallel.py", "torch.distributed.fsdp"): "3.8 s: only FSDP runs",
    ("training/parallel.py", "torch.distributed.tensor"): "2.7 s: only FSDP runs",
    ("training/parallel.py", "torch.utils.checkpoint"): "2.1 s: only activation checkpointing",
    ("mixture/proxy.py", "lm_platform.training.train"): "2.0 s (torch, transformers); only a search run in "
    "one process",
    ("mixture/search.py", "matplotlib"): "350 ms at load; only the recommendation's plot",
    ("mixture/search.py", "matplotlib.pyplot"): "1.0 s at load; with matplotlib",
    ("storage/fsspec_store.py", "s3fs"): "300 ms at load (aiobotocore); only an s3:// storage root",
}


def _inline_imports(text: str) -> set[str]:
    found = set()
    for fn in ast.walk(ast.parse(text)):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    found |= {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    found.add(node.module)
    return found


def test_in_function_imports_are_on_the_allowlist():
    sources = _core_sources()
    found = {(rel, name) for rel, text in sources.items() for name in _inline_imports(text)}
    assert found - set(INLINE_IMPORTS) == set(), "move these to the top, or list them with their cost"
    assert set(INLINE_IMPORTS) - found == set(), "no longer imported in a function: remove from the list"
    assert _inline_imports("def f():\n    import numpy\n") == {"numpy"}
