"""sha256 of the demo's deterministic outputs: the tokenizer, the token shards of every source, the packed
dataset shards and index, the exported weights of every stage and every export directory. Used to show that
a refactor changes nothing:

    python scripts/demo_hashes.py STORAGE_ROOT [RECIPE] > hashes.txt   # once before, once after; diff

Some exported files record where they were made (`export.json` the source directory, `eeve.json` the base
tokenizer's directory, `mergekit_config.yml` the models merged, the model card the recipe file): before
hashing, the storage root, the checkout holding `lm_platform` and the recipe file ($LM_PLATFORM_RECIPE when
it is a path) are replaced by placeholders, so two runs in different directories compare.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Text files an export writes that may name absolute paths (the rest are hashed byte for byte).
TEXT_SUFFIXES = {".json", ".yml", ".yaml", ".md", ".jinja", ".txt"}


def _digest(path: Path, root: Path) -> str:
    data = path.read_bytes()
    if path.suffix in TEXT_SUFFIXES:
        places = [(root.resolve(), "$STORAGE"), (REPO, "$REPO")]
        recipe = os.environ.get("LM_PLATFORM_RECIPE", "")
        if recipe.endswith((".yaml", ".yml")):
            places.insert(0, (Path(recipe).resolve(), "$RECIPE"))
        for real, placeholder in places:
            data = data.replace(str(real).encode(), placeholder.encode())
    return hashlib.sha256(data).hexdigest()


def demo_hashes(root: Path, recipe: str = "demo") -> dict[str, str]:
    """Relative path -> sha256 of tokenizer.json, tokens/*/{*.npy,docs.parquet,summary.json},
    dataset/*/{*.npy,index.json}, checkpoint/*/model.safetensors, the step checkpoints' model.safetensors
    and every file under export/*/ (paths replaced as the module says)."""
    base = root / recipe
    files = [base / "tokenizer" / "tokenizer.json"]
    for pattern in ("*/*.npy", "*/docs.parquet", "*/summary.json"):
        files += sorted((base / "tokens").glob(pattern))
    files += sorted((base / "dataset").glob("*/*.npy")) + sorted((base / "dataset").glob("*/index.json"))
    files += sorted((base / "checkpoint").glob("*/model.safetensors"))
    # Step checkpoints a run keeps (the last `keep_last`): comparable while a stage is still training.
    files += sorted((base / "checkpoint").glob("*.run/step_*/model.safetensors"))
    files += sorted(p for p in (base / "export").glob("*/**/*") if not p.name.startswith("."))
    return {str(p.relative_to(base)): _digest(p, root) for p in files if p.is_file()}


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for name, digest in sorted(demo_hashes(root, sys.argv[2] if len(sys.argv) > 2 else "demo").items()):
        print(f"{digest}  {name}")
