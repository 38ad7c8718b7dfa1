"""Training FLOPs per token with attention included, model FLOPs utilisation and peak memory.

FLOPs per trained token (forward and backward, the usual 3x of the forward's 2 per multiply-add):

    6 x (parameters of every matmul: the decoder layers' projections and the output head)
  + 12 x layers x heads x head_dim x seq_len        (attention scores QK^T and their weighted sum of V)

The input embedding is a lookup, not a matmul, and is left out (an output head tied to it is counted:
it is a matmul). The attention term counts the full seq_len x seq_len square, as PaLM's appendix B and
llm-foundry do, not the causal half, so MFUs compare with theirs. The older estimate, 6 x all
parameters, ignores attention (about 12 % of a 1B model's FLOPs at seq 2048) and counts the lookup.
"""

from __future__ import annotations

import resource
import sys

# Dense bf16 peak FLOP/s per GPU (name fragment -> FLOP/s), without sparsity.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token of an HF decoder-only config at `seq_len` (see the module docstring)."""
    d = config.hidden_size
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    ffn = config.intermediate_size
    vocab = config.vocab_size
    attn_proj = d * heads * head_dim * 2 + d * kv * head_dim * 2  # q and o, k and v
    mlp = 3 * d * ffn  # gate, up, down (SwiGLU)
    matmul_params = layers * (attn_proj + mlp) + vocab * d  # + the output head
    attention = 12 * layers * heads * head_dim * seq_len
    return 6 * matmul_params + attention


def peak_flops(device) -> float | None:
    """The device's dense bf16 peak FLOP/s, or None (CPU, or a GPU not in the table)."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def mfu(flops_token: float, tokens_per_second: float, device, world: int) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the peak of `world` devices (None on CPU)."""
    peak = peak_flops(device)
    return flops_token * tokens_per_second / (peak * world) if peak else None


def peak_memory(device) -> dict[str, int]:
    """Peak memory of this process: GPU bytes allocated by torch on GPU; host peak RSS always."""
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_bytes": int(rss if sys.platform == "darwin" else rss * 1024)}
    if torch.device(device).type == "cuda":
        out["peak_gpu_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out
