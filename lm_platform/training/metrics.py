"""What a stage reports: the loss curve as a table and a plot, and generation samples."""

from __future__ import annotations

import base64
import io

from lm_platform.recipe.training import GenerationConfig


def loss_curve_markdown(curve: list[dict[str, float]], points: int = 20) -> str:
    if not curve:
        return "no steps"
    stride = max(1, len(curve) // points)
    rows = curve[::stride] + ([curve[-1]] if (len(curve) - 1) % stride else [])
    lines = ["| step | loss | lr | grad norm |", "|---:|---:|---:|---:|"]
    lines += [f"| {r['step']} | {r['loss']:.4f} | {r['lr']:.2e} | {r['grad_norm']:.3f} |" for r in rows]
    return "\n".join(lines)


def loss_curve_png(curve: list[dict[str, float]], title: str) -> bytes | None:
    """The training loss (and lr) against step as a PNG, or None without matplotlib or steps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not curve:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    steps = [r["step"] for r in curve]
    ax.plot(steps, [r["loss"] for r in curve], color="tab:blue", linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss", color="tab:blue")
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in curve], color="tab:orange", linewidth=0.8, alpha=0.7)
    lr_ax.set_ylabel("lr", color="tab:orange")
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def generate_samples(model, tokenizer, gen: GenerationConfig, device) -> list[dict[str, str]]:
    """Continue each of the recipe's prompts with its sampling settings (seeded, RNG state restored)."""
    import torch

    samples = []
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(gen.seed)
        for prompt in gen.prompts:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=gen.max_new_tokens,
                do_sample=gen.do_sample,
                temperature=gen.temperature,
                top_k=gen.top_k,
                top_p=gen.top_p,
                pad_token_id=tokenizer.pad_token_id,
            )
            text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            samples.append({"prompt": prompt, "completion": text})
    model.train(was_training)
    return samples


def samples_markdown(samples: list[dict[str, str]]) -> str:
    if not samples:
        return "no prompts in the recipe's generation settings"
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return "\n".join(
        ["| prompt | completion |", "|---|---|"]
        + [f"| {esc(s['prompt'])} | {esc(s['completion'])} |" for s in samples]
    )
