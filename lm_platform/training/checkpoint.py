"""Checkpoints that resume: an HF model directory plus the trainer's state, written atomically and durably.

A step checkpoint `<run_dir>/step_00000040/` holds `config.json`, `model.safetensors` (fp32, what the
optimizer updates: bit-exact resume) and the tokenizer files (loadable with `from_pretrained`),
`optimizer.safetensors` (Adam moments, the torch CPU RNG state and, on GPU, the CUDA RNG states) and
`trainer_state.json` (step, data position, loss curve, counters, and the run's identity). Nothing is
pickled. Files and directories are fsynced before the rename that publishes them.

Resume identity: what changes the training trajectory (the model or its init weights by content hash,
the dataset's index, the EEVE spec, the optimisation and schedule settings, the number of processes),
never logging, retention, generation prompts or paths. A run directory holding checkpoints of another
identity, of an older checkpoint format, or of a finished stage (materializing again trains again) is
never deleted: it is moved to `<run_dir>/aside/NNNN-<why>/` (the newest `keep_aside` kept), with a message
naming the fields that differ.

Retention: the newest `keep_last` step checkpoints are kept for resume; a checkpoint marked kept
(`mark_kept`, or the stage's `keep_every`/`keep_steps`) is never pruned, and survives the bound on runs
moved aside. The stage's export (`export`) hard-links the last step checkpoint's files (one copy on disk)
except the weights when the model's dtype is not fp32 (bf16 for SmolLM2/Llama-3.2): those are written
cast to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from lm_platform.atomic import atomic_dir, atomic_path, read_json, write_json
from lm_platform.recipe.model_init import ModelInit, PretrainedInit
from lm_platform.storage import cache as store_cache
from lm_platform.tokenization.hf_compat import make_model_dir_compatible
from lm_platform.training.config import IDENTITY_WHEN_SET, NON_TRAJECTORY_FIELDS
from lm_platform.training.contract import FINISHED_FILE

FORMAT = 2  # trainer_state.json "format"; 1 (no field): the fingerprint of the whole job, moved aside
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
KEEP_FILE = "KEEP"
ASIDE_DIR = "aside"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "eeve.json",
    "chat_template.jinja",
)
STEP_DIR = re.compile(r"^step_(\d{8})$")
# In an export cast below float32: the step's float32 weights and config (hard links, no second copy),
# which the next stage of the chain starts from instead of the rounded weights.
FULL_PRECISION_DIR = "full_precision"
LOG_FILE = "log.jsonl"


# ---------------------------------------------------------------------------------------------------------
# Identity


def run_identity(job, world: int) -> dict[str, Any]:
    """What a run's trajectory depends on (a `TrainJob` and the number of processes), as a JSON object."""

    # The same mappings as the job file holds (the identity format of runs written before the job was typed).
    init = job.init.model_dump(mode="json")
    if init["kind"] == "pretrained" and Path(init["path"]).is_dir():
        path = Path(init["path"])
        init = {"kind": "pretrained", "weights": content_hash(path, "*.safetensors", "config.json")}
    eeve = Path(job.tokenizer_dir) / "eeve.json"
    at_default = {k for k, v in IDENTITY_WHEN_SET.items() if getattr(job.train, k) == v}
    identity = {
        "format": FORMAT,
        "init": init,
        "model": job.model.model_dump(mode="json"),
        "dataset": hashlib.sha256((Path(job.dataset_dir) / "index.json").read_bytes()).hexdigest()[:16],
        "eeve": hashlib.sha256(eeve.read_bytes()).hexdigest()[:16] if eeve.exists() else None,
        "train": job.train.model_dump(mode="json", exclude=set(NON_TRAJECTORY_FIELDS) | at_default),
        "world": world,
    }
    if job.train.parallelism == "fsdp":
        # An FSDP run resumes on another number of processes when its rows per optimizer step stay the
        # same (micro_batch_size x grad_accum x processes): the identity names that product, not its
        # factors. Same rows per step means the same data order and the same per-token loss; only the
        # order of the sums differs (not bit-exact).
        t = job.train
        del identity["world"]
        for name in ("micro_batch_size", "grad_accum"):
            identity["train"].pop(name)
        identity["global_batch_rows"] = t.micro_batch_size * t.grad_accum * world
    return identity


def trained_from(identity: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint was trained from, out of its run identity: the parent's weights (content hash of
    the init_from checkpoint; None for a model built from the recipe's config) and the packed dataset
    (hash of its index.json)."""
    init = identity.get("init") or {}
    return {
        "parent_weights": init.get("weights"),
        "init": init.get("kind"),
        "dataset": identity.get("dataset"),
        "eeve": identity.get("eeve"),
    }


def read_trained_from(checkpoint_dir: str | Path) -> dict[str, Any] | None:
    """`trained_from` of an exported stage checkpoint (its trainer_state.json), None without one."""
    f = Path(checkpoint_dir) / STATE_FILE
    if not f.is_file():
        return None
    identity = read_json(f).get("identity")
    return trained_from(identity) if identity else None


def fingerprint(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def content_hash(directory: Path, *patterns: str) -> str:
    """SHA-256 over the names and bytes of the files matching `patterns` (never their times)."""
    h = hashlib.sha256()
    files = sorted({f for pattern in patterns for f in directory.glob(pattern) if f.is_file()})
    for f in files:
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 23):
                h.update(chunk)
    return h.hexdigest()[:16]


def identity_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """`field: old -> new` for every leaf that differs (an old-format checkpoint has no identity)."""
    if old is None:
        return ["format: an older checkpoint format (no resume identity)"]
    a, b = _flatten(old), _flatten(new)
    return [
        f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: obj}


# ---------------------------------------------------------------------------------------------------------
# The run directory


def step_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := STEP_DIR.match(p.name))]
    return sorted((s, p) for s, p in found if (p / STATE_FILE).exists())


def prepare_run(
    run_dir: str | Path, identity: dict[str, Any], keep_aside: int = 2
) -> tuple[Path | None, list[str]]:
    """Make `run_dir` ready for a run of `identity`: remove what a killed run was still writing, move a
    finished run or a run of another identity aside, bound the runs kept aside. Returns the newest step
    checkpoint to resume from (or None) and messages saying what was moved and why."""
    run_dir = Path(run_dir)
    messages: list[str] = []
    if not run_dir.is_dir():
        return None, messages
    for partial in run_dir.glob(".tmp-*"):
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
    steps = step_dirs(run_dir)
    if (run_dir / FINISHED_FILE).exists():
        where = move_aside(run_dir, "finished")
        messages.append(
            f"the stage's previous run had finished; it is now in {where} and training starts afresh"
        )
        steps = []
    elif steps:
        state = read_json(steps[-1][1] / STATE_FILE)
        old = state.get("identity") if state.get("format") == FORMAT else None
        if old != identity:
            diff = identity_diff(old, identity)
            where = move_aside(run_dir, "changed")
            messages.append(
                f"{run_dir} held step checkpoints of a different run ({'; '.join(diff)}); moved to {where}, "
                "training starts afresh"
            )
            steps = []
    for path in prune_aside(run_dir, keep_aside):
        messages.append(
            f"removed {path} (more than keep_aside={keep_aside} earlier runs; kept checkpoints stay)"
        )
    return (steps[-1][1] if steps else None), messages


def move_aside(run_dir: str | Path, why: str) -> Path:
    """Move the run's step checkpoints, log and FINISHED marker into `<run_dir>/aside/NNNN-<why>/`."""
    run_dir = Path(run_dir)
    aside = run_dir / ASIDE_DIR
    aside.mkdir(exist_ok=True)
    numbers = [int(p.name.split("-")[0]) for p in aside.iterdir() if p.name.split("-")[0].isdigit()]
    target = aside / f"{max(numbers, default=0) + 1:04d}-{why}"
    target.mkdir()
    for p in run_dir.iterdir():
        if STEP_DIR.match(p.name) or p.name in (FINISHED_FILE, LOG_FILE):
            os.replace(p, target / p.name)
            _moved_in_store(p, target / p.name)
    return target


def _moved_in_store(old: Path, new: Path) -> None:
    """Under an object-store root, a move in the cache is a publish of the new key and a delete of the old."""
    store_cache.after_commit(new)
    store_cache.after_delete(old)


def prune_aside(run_dir: str | Path, keep_aside: int) -> list[Path]:
    """Keep the newest `keep_aside` runs moved aside; of older ones only their kept checkpoints remain."""
    aside = Path(run_dir) / ASIDE_DIR
    if not aside.is_dir():
        return []
    runs = sorted(p for p in aside.iterdir() if p.is_dir() and p.name.split("-")[0].isdigit())
    removed = []
    for run in runs[: max(0, len(runs) - keep_aside)]:
        kept = [p for p in run.iterdir() if (p / KEEP_FILE).exists()]
        for p in run.iterdir():
            if p not in kept:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        if not kept:
            run.rmdir()
        removed.append(run)
    return removed


def mark_kept(run_dir: str | Path, step: int, reason: str = "kept") -> Path:
    """Mark step checkpoint `step` of `run_dir` as kept: `keep_last` never prunes it, and it survives the
    bound on runs moved aside. The evaluation assets call this for checkpoints they evaluate."""
    path = Path(run_dir) / f"step_{step:08d}"
    if not (path / STATE_FILE).exists():
        raise FileNotFoundError(f"{path}: no step checkpoint to keep")
    write_json(path / KEEP_FILE, {"reason": reason})
    return path


def stored_step_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The run's step checkpoints: those on disk and, under an object-store root, those the local cache
    has evicted (committed in the store; a fill brings them back)."""
    run_dir = Path(run_dir)
    steps = dict(step_dirs(run_dir))
    for name in store_cache.committed_names(run_dir):
        if (m := STEP_DIR.match(name)) and int(m.group(1)) not in steps:
            steps[int(m.group(1))] = run_dir / name
    return sorted(steps.items())


def _is_kept(path: Path) -> bool:
    if (path / KEEP_FILE).exists():
        return True
    return not path.exists() and store_cache.is_committed(path / KEEP_FILE)


def kept_steps(run_dir: str | Path) -> list[int]:
    return [s for s, p in stored_step_dirs(run_dir) if _is_kept(p)]


def prune(run_dir: str | Path, keep_last: int) -> None:
    """Remove step checkpoints older than the newest `keep_last`, except those marked kept (under an
    object-store root also those only the store holds now)."""
    for _, path in stored_step_dirs(run_dir)[:-keep_last]:
        if not _is_kept(path):
            shutil.rmtree(path, ignore_errors=True)
            store_cache.after_delete(path)


def mark_finished(run_dir: str | Path) -> None:
    """The stage's checkpoint is exported: its step checkpoints stay for reading, not for resuming."""
    with atomic_path(Path(run_dir) / FINISHED_FILE) as tmp:  # atomic: published under an object store
        tmp.write_text("the stage finished; a new run starts afresh\n")


def disk_usage(*roots: str | Path) -> int:
    """Bytes on disk under `roots`, each file counted once however many hard links it has."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


# ---------------------------------------------------------------------------------------------------------
# Save, load, export


def save(
    target: str | Path,
    model,
    optimizer,
    state: dict[str, Any],
    tokenizer_dir: str | Path,
    extra: dict[str, Any] | None = None,
    model_state: dict[str, Any] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write one checkpoint directory atomically and durably. `extra` maps file names to JSON or bytes.
    `model_state`/`optimizer_state`: the full state dicts when the live ones are sharded (FSDP)."""
    from safetensors.torch import save_file

    with atomic_dir(target, durable=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=model_state)
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_dir) / name
            if src.exists():
                shutil.copy(src, tmp / name)
        # rope_theta etc. and the tokenizer's class and special tokens also as transformers 4.x reads them
        make_model_dir_compatible(tmp)
        tensors, layout = _flatten_optimizer(optimizer_state or optimizer.state_dict())
        tensors |= rng_tensors()
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        write_json(tmp / STATE_FILE, {**state, "format": FORMAT, "optimizer_layout": layout})
        for name, obj in (extra or {}).items():
            if isinstance(obj, bytes):
                (tmp / name).write_bytes(obj)
            else:
                write_json(tmp / name, obj)
    return Path(target)


def rng_tensors() -> dict[str, Any]:
    """The torch CPU RNG state and, when CUDA is in use, every device's CUDA RNG state."""
    import torch

    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(tensors.pop("rng.torch"))
    cuda = [
        tensors.pop(k)
        for k in sorted(
            (k for k in list(tensors) if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1])
        )
    ]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def load_into(path: str | Path, optimizer) -> dict[str, Any]:
    """Restore the optimizer and the RNG states from checkpoint `path`; return its trainer state."""
    from safetensors.torch import load_file

    state = read_json(Path(path) / STATE_FILE)
    tensors = load_file(str(Path(path) / OPTIMIZER_FILE))
    restore_rng(tensors)
    layout = state.pop("optimizer_layout")
    sd = optimizer.state_dict()
    sd["state"] = {
        int(idx): {key: tensors[f"{idx}.{key}"] for key in keys} for idx, keys in layout["state"].items()
    }
    for group, saved in zip(sd["param_groups"], layout["param_groups"], strict=True):
        group.update({k: v for k, v in saved.items() if k != "params"})
    optimizer.load_state_dict(sd)
    return state


def export(step_dir: str | Path, output_dir: str | Path, dtype: str, extra: dict[str, Any]) -> Path:
    """The stage's checkpoint: step checkpoint `step_dir` plus `extra` files, published atomically and
    durably. Files are hard links to the step's (copied where the filesystem cannot link), except the
    weights when `dtype` is not float32: those are written cast to `dtype`, with config.json saying so,
    and the step's float32 weights stay beside them in `full_precision/` (hard links) for the next stage.
    Leftovers of an export killed before its rename are removed first."""
    step_dir, output_dir = Path(step_dir), Path(output_dir)
    for partial in output_dir.parent.glob(f".tmp-{output_dir.name}-*"):
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
    cast = dtype != "float32"
    with atomic_dir(output_dir, durable=True) as tmp:
        for f in step_dir.iterdir():
            if f.name == KEEP_FILE:
                continue
            if cast and (f.name.startswith("model") and f.name.endswith(".safetensors")):
                _write_cast(f, tmp / f.name, dtype)
            elif cast and f.name == "config.json":
                config = read_json(f)
                # transformers 5 reads `dtype`, 4.x `torch_dtype`: both say the weights' dtype.
                config["dtype"] = config["torch_dtype"] = dtype
                write_json(tmp / f.name, config)
            else:
                try:
                    os.link(f, tmp / f.name)
                except OSError:
                    shutil.copy2(f, tmp / f.name)
        if cast:
            full = tmp / FULL_PRECISION_DIR
            full.mkdir()
            for f in step_dir.iterdir():
                if f.name == "config.json" or (f.name.startswith("model") and ".safetensors" in f.name):
                    try:
                        os.link(f, full / f.name)
                    except OSError:
                        shutil.copy2(f, full / f.name)
        for name, obj in extra.items():
            if isinstance(obj, bytes):
                (tmp / name).write_bytes(obj)
            else:
                write_json(tmp / name, obj)
    return output_dir


def full_precision_init(init: ModelInit) -> ModelInit:
    """The init a stage loads its weights from: a stage export's float32 weights where the export was
    cast below float32 (a bf16 base would otherwise round the weights at every stage boundary), else
    `init` itself."""
    if not isinstance(init, PretrainedInit):
        return init
    full = Path(init.path) / FULL_PRECISION_DIR
    if (full / "config.json").is_file():
        return init.model_copy(update={"path": str(full)})
    return init


def _write_cast(src: Path, dst: Path, dtype: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    target = getattr(torch, dtype)
    tensors = load_file(str(src))
    save_file(
        {k: v.to(target) if v.is_floating_point() else v for k, v in tensors.items()},
        str(dst),
        metadata={"format": "pt"},
    )


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
