"""How the trainer lays the model out for speed: activation checkpointing, torch.compile and FSDP2.

Applied in that order to the model `build_model` returns (torchtitan's order: checkpointing inside
compile inside sharding), each per decoder layer:

- `activation_checkpointing`: `full` recomputes every decoder layer in the backward from its input;
  `selective` does so for every second layer (torchtitan's layer-level selective mode: about half the
  activation memory saved for half the recompute). Non-reentrant `torch.utils.checkpoint`: the
  recomputation runs the same ops on the same inputs, so gradients are those of the plain model. It is
  patched onto each layer's `forward`, so parameter names (and checkpoints) are unchanged. (Op-level
  selective checkpointing, keeping matmul outputs, failed on HF's Llama layers in torch 2.13: the
  recompute's op sequence did not match the forward's.)
- `compile`: `Module.compile()` on each layer (names unchanged too).
- `parallelism: fsdp`: `fully_shard` on each decoder layer and then the root (FSDP2, DTensor parameters
  sharded on dim 0). On GPU parameters are gathered in bf16 and gradients reduced in fp32; on CPU (gloo)
  everything stays fp32.

EEVE row policies under FSDP2 keep the embedding matrices unsharded (`ignored_params`): the trainer
optimises only the new rows through a view of them (`modeling/freeze.py`), which needs a plain tensor,
and the frozen rows then never reach the optimizer, so they stay bit-identical by construction (gradient
masking on a DTensor shard would also work, but its Adam moments would cover the whole 49K-row base
vocabulary and decoupled weight decay would still have to be kept off the frozen rows). Their gradient is
all-reduced here (`reduce_unsharded_grads`), as DDP would. Policies that freeze whole parameters shard
them like the rest: a frozen parameter is never updated, and sharding copies its values exactly.

Checkpoints stay in the one format the trainer writes for every run (an HF model directory in fp32 plus
the optimizer's tensors by parameter index): sharded tensors are gathered for the save
(`full_model_state`, `full_optimizer_state`) and re-sharded on load (`shard_optimizer_state`), so an FSDP
checkpoint resumes on any number of processes and exports like any other. Gathering puts the whole fp32
model and Adam state in rank 0's host memory (16 bytes a parameter: 16 GB for a 1B model); sharded
`torch.distributed.checkpoint` writes are not used.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch
import torch.distributed as td


def use_compile(cfg, device) -> bool:
    """The `compile` setting resolved: null means on with a GPU, off on CPU."""
    return bool(cfg.compile) if cfg.compile is not None else torch.device(device).type == "cuda"


def decoder_layers(model) -> list[torch.nn.Module]:
    """The model's repeated blocks (HF decoder-only models keep them in `model.model.layers`)."""
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no decoder layers at model.model.layers")
    return list(layers)


def _checkpointed(forward, *args, **kwargs):
    from torch.utils.checkpoint import checkpoint

    if not torch.is_grad_enabled():  # evaluation and generation: nothing to recompute
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(model, mode: str) -> int:
    """Checkpoint every decoder layer (`full`) or every second one (`selective`); returns how many were
    wrapped."""
    if mode == "none":
        return 0
    if mode not in ("full", "selective"):
        raise ValueError(f"activation_checkpointing: unknown mode '{mode}' (none, full, selective)")
    layers = decoder_layers(model)[:: 1 if mode == "full" else 2]
    for layer in layers:
        layer.forward = functools.partial(_checkpointed, layer.forward)
    return len(layers)


def apply_compile(model) -> int:
    """torch.compile each decoder layer in place (the layers repeat: one graph, recompiled rarely)."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile()
    return len(layers)


def unsharded_params(model, plan) -> set:
    """Parameters FSDP leaves whole: the embedding matrices when a policy trains some of their rows."""
    return {p for p, _ in plan.rows.values()} if plan.rows else set()


def shard(model, plan, device) -> set:
    """FSDP2 over every decoder layer, then the root; returns the parameters left unsharded."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if torch.device(device).type == "cuda":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:  # gloo on CPU: fp32 all the way
        mp = MixedPrecisionPolicy()
    layers = decoder_layers(model)
    for i, layer in enumerate(layers):
        # The last layer's parameters are needed again at once by the backward: keep them gathered.
        fully_shard(layer, mp_policy=mp, reshard_after_forward=i < len(layers) - 1)
    ignored = unsharded_params(model, plan)
    fully_shard(model, mp_policy=mp, ignored_params=ignored or None)
    return ignored


def describe(model, cfg, device) -> str:
    """How the model is laid out, for the log and the metrics: e.g. `fsdp, compile, checkpointing full`."""
    parts = ["fsdp" if is_sharded(model) else "replicated"]
    if use_compile(cfg, device):
        parts.append("compile")
    if cfg.activation_checkpointing != "none":
        parts.append(f"checkpointing {cfg.activation_checkpointing}")
    return ", ".join(parts)


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def no_sync(model):
    """A context in which a backward accumulates gradients locally (no reduction across ranks)."""
    if is_sharded(model):
        return _fsdp_no_sync(model)
    if hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def reduce_unsharded_grads(params: set, world: int) -> None:
    """Average the gradients of parameters FSDP left whole over the ranks (what FSDP does for the rest)."""
    if world == 1:
        return
    for p in sorted(params, key=lambda t: t.numel()):  # same order on every rank
        if p.grad is not None:
            td.all_reduce(p.grad)
            p.grad.div_(world)


def full_tensor(t):
    """A sharded tensor gathered (a collective), any other as it is."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def full_model_state(model) -> dict[str, torch.Tensor]:
    """The model's state dict with sharded tensors gathered (a collective: every rank calls it), on CPU.
    Tied parameters stay one tensor, so `save_pretrained` writes them once, as it does unsharded."""
    gathered: dict[int, torch.Tensor] = {}
    out = {}
    for k, v in model.state_dict(keep_vars=True).items():
        if id(v) not in gathered:
            gathered[id(v)] = full_tensor(v.detach()).cpu()
        out[k] = gathered[id(v)]
    return out


def full_optimizer_state(optimizer) -> dict[str, Any]:
    """The optimizer's state dict with sharded moments gathered (a collective: every rank calls it)."""
    sd = optimizer.state_dict()
    sd["state"] = {
        idx: {k: (full_tensor(v).cpu() if torch.is_tensor(v) else v) for k, v in per_param.items()}
        for idx, per_param in sorted(sd["state"].items())
    }
    return sd


def shard_optimizer_state(optimizer) -> None:
    """After loading full tensors into an optimizer of sharded parameters: give each parameter's moments
    its own sharding (each rank keeps its shard)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    for group in optimizer.param_groups:
        for p in group["params"]:
            if not isinstance(p, DTensor):
                continue
            for k, v in list(optimizer.state.get(p, {}).items()):
                if torch.is_tensor(v) and not isinstance(v, DTensor) and v.shape == p.shape:
                    optimizer.state[p][k] = distribute_tensor(
                        v.to(p.device, p.dtype), p.device_mesh, p.placements
                    )


def grad_norm(params) -> torch.Tensor:
    """The global gradient norm of `params` (sharded or not) as a plain tensor."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return full_tensor(torch.nn.utils.get_total_norm(grads))


@contextlib.contextmanager
def plain_class(model):
    """The model as its own class for the duration (FSDP2 makes it `FSDP<Class>`, a name
    `save_pretrained` would write into config.json's `architectures`)."""
    from torch.distributed.fsdp import FSDPModule

    sharded_class = type(model)
    if not issubclass(sharded_class, FSDPModule):
        yield model
        return
    model.__class__ = next(c for c in sharded_class.__mro__[1:] if not issubclass(c, FSDPModule))
    try:
        yield model
    finally:
        model.__class__ = sharded_class
