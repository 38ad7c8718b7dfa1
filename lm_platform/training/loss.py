"""The per-token loss without the whole logits tensor: the output head and cross-entropy in one step.

A causal LM's last matmul turns [B, T, H] hidden states into [B, T, V] logits, and cross-entropy then
makes several passes over them (log-softmax, its backward, the one-hot gradient): for SmolLM2's 49,152
tokens at seq 2048 that is 400 MB of fp32 per sequence, twice. `linear_cross_entropy` instead takes the
hidden states and the head's weight and works through the positions a chunk at a time (on CPU 8,192
positions a chunk for a 2,048-token vocabulary, 341 for SmolLM2's 49,152): a chunk's logits buffer is
turned in place into the softmax (the loss read on the way: log-softmax's own formula) and then into the
gradient (softmax minus the one-hot target), and the chunk's share of the head's and the hidden states'
gradients is computed right away, so the backward only scales them. The full-logits path makes more
passes over [B, T, V] (the one-hot gradient is zero-filled, then log-softmax's backward reads two such
tensors), and so did this module's first version (log-softmax, then exp, then the gradient: 3.2 ms of a
37 ms CPU step of `benchmarks.train`'s tiny Llama, against about 1 ms for these passes). Positions
whose label is `ignore_index` (padding, masked prompt tokens) get no logits at all on CPU, and add nothing
to the loss or the gradients anywhere.

Same math as `log_softmax` + `nll_loss` on the full logits; sums are taken in another order (per chunk,
and the log-sum-exp added to the row maximum rather than subtracted from each logit), so the loss and
gradients agree to rounding (about 1e-7 relative in fp32, see test_train_loss.py), not bit-for-bit.

`hidden_states(model, inputs)` runs an HF causal LM (plain or DDP-wrapped) up to its head: the head is
skipped for the call (its weight is used here instead), so DDP's forward and its gradient hooks run as
usual. It applies to architectures whose logits are the head's output and nothing more (no soft-capping
or scaling); `fused_head` says whether a model is one.
"""

from __future__ import annotations

import contextlib
import sys

import torch

# Architectures whose forward returns `lm_head(hidden)` unchanged (no logit scaling or soft-capping).
PLAIN_HEAD_MODELS = {
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
}
# Logits held at once per chunk (fp32): 64 MB on CPU, 256 MB on GPU. Few, large chunks: each op costs a
# dispatch (and, on a busy CPU, a wait for every thread of the pool), so more chunks are no faster.
CHUNK_ELEMENTS = {"cpu": 1 << 24, "cuda": 1 << 26}


def _core(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def fused_head(model) -> torch.nn.Linear | None:
    """The model's output head when the loss can be computed from hidden states (a plain linear head on a
    known architecture, not FSDP-sharded); else None (the caller computes logits)."""
    core = _core(model)
    fsdp = sys.modules.get("torch.distributed.fsdp")  # not loaded: no model can be sharded
    if (fsdp is not None and isinstance(core, fsdp.FSDPModule)) or type(
        core
    ).__name__ not in PLAIN_HEAD_MODELS:
        return None
    head = core.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return None
    return head


@contextlib.contextmanager
def _head_skipped(head: torch.nn.Module):
    head.forward = lambda x: x  # an instance attribute: the module's own forward is back after the call
    try:
        yield
    finally:
        del head.forward


def hidden_states(model, head: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The last hidden states [B, T, H] (after the final norm) of `model` (plain or DDP) on `inputs`."""
    with _head_skipped(head):
        return model(input_ids=inputs).logits


def _chunk_step(hidden, weight, targets, valid, grad_h, grad_w, accumulate: bool):
    """One chunk: returns its summed loss, and writes its share of the gradients into `grad_h` (this
    chunk's rows of the hidden states' gradient) and `grad_w` (the head's, added to what earlier chunks
    left when `accumulate`), each when not None. `valid`: the rows that count (None: all of them).

    The logits buffer is worked on in place: the target logits are read, then the rows are shifted by
    their maximum, exponentiated and summed (so the loss is max + log(sum) - target logit, log-softmax's
    own formula), and scaled by the reciprocal sums into the softmax, from which the one-hot target is
    subtracted: the gradient of the loss with respect to the logits. Five passes over one buffer, no
    second [rows, V] tensor. The gradient matmuls write straight into the outputs (the head's is summed
    over the chunks inside the matmul), so no [V, H] temporary is made per chunk; under autocast they
    run in its dtype and are then added, as autocast does not apply to in-place matmuls."""
    x = (hidden @ weight.t()).float()
    picked = x.gather(1, targets[:, None]).squeeze(1)
    top = x.amax(1, keepdim=True)
    x.sub_(top).exp_()
    sums = x.sum(1, keepdim=True)
    nll = (top + sums.log()).squeeze(1) - picked
    loss = (nll * valid).sum() if valid is not None else nll.sum()
    if grad_h is None and grad_w is None:
        return loss
    g = x.mul_(sums.reciprocal_())  # softmax; minus the one-hot target: d(loss)/d(logits)
    g[torch.arange(len(targets), device=g.device), targets] -= 1.0
    if valid is not None:
        g.mul_(valid[:, None])
    g = g.to(hidden.dtype)
    direct = hidden.dtype == weight.dtype and not torch.is_autocast_enabled(hidden.device.type)
    if grad_h is not None:
        if direct:
            torch.mm(g, weight, out=grad_h)
        else:
            grad_h.copy_(g @ weight)
    if grad_w is not None:
        if direct and accumulate:
            grad_w.addmm_(g.t(), hidden)
        elif direct:
            torch.mm(g.t(), hidden, out=grad_w)
        else:  # (fp32 sums of the chunks under autocast too)
            part = g.t() @ hidden
            grad_w.add_(part) if accumulate else grad_w.copy_(part)
    return loss


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T` against `targets` (rows with `ignore_index` skipped);
    the gradients are computed in the forward, chunk by chunk, and scaled in the backward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index: int, chunk: int, grads: bool, masked: bool):
        # `grads`: whether autograd will ask (`needs_input_grad` alone is also set under no_grad);
        # `masked`: whether some targets may be `ignore_index` (else no masking work at all).
        need_h, need_w = grads and ctx.needs_input_grad[0], grads and ctx.needs_input_grad[1]
        grad_h = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device) if need_h else None
        grad_w = torch.empty_like(weight, memory_format=torch.contiguous_format) if need_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            valid = None
            if masked:
                keep = t != ignore_index
                t, valid = t.masked_fill(~keep, 0), keep.to(torch.float32)
            rows = None if grad_h is None else grad_h[start : start + chunk]
            total += _chunk_step(h, weight, t, valid, rows, grad_w, accumulate=start > 0)
        ctx.save_for_backward(grad_h, grad_w)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return (
            None if grad_h is None else grad_h * grad_out.to(grad_h.dtype),
            None if grad_w is None else grad_w * grad_out.to(grad_w.dtype),
            None,
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "sum",
    chunk: int | None = None,
    compact: bool | None = None,
) -> torch.Tensor:
    """Cross-entropy of the logits `hidden @ weight.T` ([..., H] and [V, H]) against `targets` ([...]),
    without materialising all logits; `reduction` `sum` or `mean` (over the positions not ignored).
    `chunk`: positions per chunk (default: about CHUNK_ELEMENTS logits); `compact`: drop ignored
    positions before the head (default: on CPU; on GPU they are masked, as selecting them would sync)."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', not {reduction!r}")
    hidden = hidden.reshape(-1, hidden.size(-1))
    targets = targets.reshape(-1)
    keep = targets != ignore_index
    if compact is None:
        compact = hidden.device.type == "cpu"
    if compact and not bool(keep.all()):
        hidden, targets = hidden[keep], targets[keep]
    if chunk is None:
        chunk = max(64, CHUNK_ELEMENTS.get(hidden.device.type, 1 << 26) // weight.shape[0])
    grads = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    masked = not compact  # compacted: every remaining target counts
    total = _LinearCrossEntropy.apply(hidden, weight, targets, ignore_index, chunk, grads, masked)
    return total if reduction == "sum" else total / keep.sum().clamp(min=1)
