"""Trainable-parameter policies with exact freezing.

A stage trains whole parameters, rows of the embedding matrices, or nothing of a parameter. Frozen
parameters get `requires_grad=False` and never reach the optimizer. Partly-trainable matrices (the new
rows of EEVE stage 3) have their frozen rows' gradients zeroed after backward, so Adam's moments for
those rows stay exactly zero and its update is exactly zero; their weight decay is applied by hand to the
trainable rows only (the optimizer's own decay would shrink every row). Frozen values are therefore
bit-identical after the stage, optimizer state included.

Policies (EEVE stage numbers):
- `all` (6 and ordinary stages): everything.
- `new_embeddings` (3): input and output embedding rows of the new tokens only.
- `output_embeddings` (4): the whole output embedding matrix (with tied embeddings, the shared matrix).
- `all_but_embeddings` (7): everything except the input and output embeddings (final norm included).
"""

from __future__ import annotations

from dataclasses import dataclass, field

POLICIES = ("all", "new_embeddings", "output_embeddings", "all_but_embeddings")


@dataclass
class TrainablePlan:
    full: dict[str, object] = field(default_factory=dict)  # name -> parameter, trained whole
    rows: dict[str, tuple[object, int]] = field(default_factory=dict)  # name -> (parameter, first row)
    frozen: dict[str, object] = field(default_factory=dict)

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.full.values()) + sum(
            (p.shape[0] - start) * p[0].numel() for p, start in self.rows.values()
        )

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: matrices decay, vectors do not, row-trained matrices decay by hand (`decay_rows`)."""
        decay = [p for p in self.full.values() if p.ndim >= 2]
        no_decay = [p for p in self.full.values() if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
            {"params": [p for p, _ in self.rows.values()], "weight_decay": 0.0, "name": "rows"},
        ]
        return [g for g in groups if g["params"]]

    def parameters(self) -> list:
        return list(self.full.values()) + [p for p, _ in self.rows.values()]

    def mask_grads(self) -> None:
        """Zero the gradients of frozen rows (call after backward, before clipping and the step)."""
        for p, start in self.rows.values():
            if p.grad is not None:
                p.grad[:start].zero_()

    def decay_rows(self, lr: float, weight_decay: float) -> None:
        """Decoupled weight decay on the trainable rows only (call just before the optimizer step)."""
        if weight_decay == 0:
            return
        import torch

        with torch.no_grad():
            for p, start in self.rows.values():
                p[start:].mul_(1 - lr * weight_decay)


def apply_policy(model, policy: str, base_vocab_size: int | None = None) -> TrainablePlan:
    """Set `requires_grad` on `model` for `policy` and return what is trained."""
    if policy not in POLICIES:
        raise ValueError(f"unknown trainable policy '{policy}' (known: {POLICIES})")
    inp = model.get_input_embeddings().weight
    out_module = model.get_output_embeddings()
    out = out_module.weight if out_module is not None else inp
    embeddings = {id(inp), id(out)}
    if policy == "new_embeddings":
        if base_vocab_size is None:
            raise ValueError(
                "policy 'new_embeddings' (EEVE stage 3) needs the base vocabulary size: the tokenizer "
                "directory has no eeve.json"
            )
        if inp.shape[0] <= base_vocab_size:
            raise ValueError(
                f"policy 'new_embeddings': the model has {inp.shape[0]} embeddings, no new rows beyond "
                f"the base vocabulary of {base_vocab_size}"
            )
    plan = TrainablePlan()
    whole = {
        "all": lambda p: True,
        "new_embeddings": lambda p: False,
        "output_embeddings": lambda p: id(p) == id(out),
        "all_but_embeddings": lambda p: id(p) not in embeddings,
    }[policy]
    for name, p in model.named_parameters():  # tied weights are listed once
        if whole(p):
            plan.full[name] = p
        elif policy == "new_embeddings" and id(p) in embeddings:
            plan.rows[name] = (p, base_vocab_size)
        else:
            plan.frozen[name] = p
    for name, p in model.named_parameters():
        p.requires_grad_(name not in plan.frozen)
    return plan
