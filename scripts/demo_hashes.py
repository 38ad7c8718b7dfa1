"""sha256 of the demo's deterministic outputs: the tokenizer, the packed dataset shards and index, and the
exported weights of every stage. Used to show that a refactor changes nothing:

    python scripts/demo_hashes.py STORAGE_ROOT [RECIPE] > hashes.txt   # once before, once after; diff
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path


def demo_hashes(root: Path, recipe: str = "demo") -> dict[str, str]:
    """Relative path -> sha256 of tokenizer.json, dataset/*/{*.npy,index.json}, checkpoint/*/model.safetensors
    and the step checkpoints' model.safetensors."""
    base = root / recipe
    files = [base / "tokenizer" / "tokenizer.json"]
    files += sorted((base / "dataset").glob("*/*.npy")) + sorted((base / "dataset").glob("*/index.json"))
    files += sorted((base / "checkpoint").glob("*/model.safetensors"))
    # Step checkpoints a run keeps (the last `keep_last`): comparable while a stage is still training.
    files += sorted((base / "checkpoint").glob("*.run/step_*/model.safetensors"))
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()
    }


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for name, digest in sorted(demo_hashes(root, sys.argv[2] if len(sys.argv) > 2 else "demo").items()):
        print(f"{digest}  {name}")
