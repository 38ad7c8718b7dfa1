"""Checkpoints that resume: an HF model directory plus the trainer's state, written atomically.

A step checkpoint `<run_dir>/step_00000040/` holds `config.json`, `model.safetensors` and the tokenizer
files (loadable with `from_pretrained`), `optimizer.safetensors` (Adam moments and the torch RNG state)
and `trainer_state.json` (step, data position, loss curve, counters, the run's fingerprint). The last
`keep_last` are kept. Resume takes the newest checkpoint whose fingerprint matches the current job, so a
changed dataset or job never continues a stale run. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

from lm_platform.atomic import atomic_dir, read_json, write_json

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "eeve.json",
)
STEP_DIR = re.compile(r"^step_(\d{8})$")
FINISHED_FILE = "FINISHED"


def fingerprint(job: dict[str, Any]) -> str:
    """What a run depends on: the job, the packed dataset's index and the starting checkpoint's files."""
    h = hashlib.sha256(json.dumps(job, sort_keys=True).encode())
    h.update((Path(job["dataset_dir"]) / "index.json").read_bytes())
    init = job["init"]
    if init["kind"] == "pretrained" and Path(init["path"]).is_dir():
        for f in sorted(Path(init["path"]).glob("*.safetensors")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def step_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := STEP_DIR.match(p.name))]
    return sorted((s, p) for s, p in found if (p / STATE_FILE).exists())


def latest(run_dir: str | Path, fp: str) -> Path | None:
    """The newest complete checkpoint of an unfinished run of this job. Checkpoints of another job or of
    a finished run (materializing again trains again), and what a killed run was still writing, are
    removed."""
    best = None
    finished = Path(run_dir) / FINISHED_FILE
    if finished.exists():
        for _, path in step_dirs(run_dir):
            shutil.rmtree(path, ignore_errors=True)
        finished.unlink()
    for partial in Path(run_dir).glob(".tmp-*") if Path(run_dir).is_dir() else ():
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
    for _, path in step_dirs(run_dir):
        if read_json(path / STATE_FILE).get("fingerprint") == fp:
            best = path
        else:
            shutil.rmtree(path, ignore_errors=True)
    return best


def save(
    target: str | Path,
    model,
    optimizer,
    state: dict[str, Any],
    tokenizer_dir: str | Path,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write one checkpoint directory atomically. `extra` maps file names to JSON objects or bytes."""
    import torch
    from safetensors.torch import save_file

    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_dir) / name
            if src.exists():
                shutil.copy(src, tmp / name)
        tensors, layout = _flatten_optimizer(optimizer.state_dict())
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        write_json(tmp / STATE_FILE, {**state, "optimizer_layout": layout})
        for name, obj in (extra or {}).items():
            if isinstance(obj, bytes):
                (tmp / name).write_bytes(obj)
            else:
                write_json(tmp / name, obj)
    return Path(target)


def load_into(path: str | Path, optimizer) -> dict[str, Any]:
    """Restore the optimizer and torch RNG from checkpoint `path`; return its trainer state."""
    import torch
    from safetensors.torch import load_file

    state = read_json(Path(path) / STATE_FILE)
    tensors = load_file(str(Path(path) / OPTIMIZER_FILE))
    torch.set_rng_state(tensors.pop("rng.torch"))
    layout = state.pop("optimizer_layout")
    sd = optimizer.state_dict()
    sd["state"] = {
        int(idx): {key: tensors[f"{idx}.{key}"] for key in keys} for idx, keys in layout["state"].items()
    }
    for group, saved in zip(sd["param_groups"], layout["param_groups"], strict=True):
        group.update({k: v for k, v in saved.items() if k != "params"})
    optimizer.load_state_dict(sd)
    return state


def mark_finished(run_dir: str | Path) -> None:
    """The stage's checkpoint is exported: its step checkpoints stay for reading, not for resuming."""
    (Path(run_dir) / FINISHED_FILE).write_text("the stage finished; a new run starts afresh\n")


def prune(run_dir: str | Path, keep_last: int) -> None:
    for _, path in step_dirs(run_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    tensors, keys = {}, {}
    for idx, per_param in sd["state"].items():
        keys[str(idx)] = []
        for key, value in per_param.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            keys[str(idx)].append(key)
    groups = [{k: v for k, v in g.items() if _jsonable(v)} for g in sd["param_groups"]]
    return tensors, {"state": keys, "param_groups": groups}


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False
