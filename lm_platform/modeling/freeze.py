"""Trainable-parameter policies with exact freezing.

A stage trains whole parameters, rows of the embedding matrices, or nothing of a parameter. Frozen
parameters get `requires_grad=False` and never reach the optimizer. A partly-trainable matrix (the new
rows of EEVE stage 3) is optimised through a second parameter that is a view of its trainable rows
(`TrainablePlan.slices`): after backward the rows' gradient is handed to the view, the optimizer holds
moments for those rows only (not for the 49K-row base vocabulary) and applies the stage's weight decay to
them only, and its in-place update lands in the matrix itself. Frozen values are therefore bit-identical
after the stage.

Policies (EEVE stage numbers):
- `all` (6 and ordinary stages): everything.
- `new_embeddings` (3): input and output embedding rows of the new tokens only.
- `output_embeddings` (4): the whole output embedding matrix. With tied embeddings (one matrix serves as
  input and output, e.g. SmolLM2) training it whole would also move the base tokens' input embeddings,
  which stage 4 must keep: only the rows EEVE added are trained, and without an EEVE extension the policy
  is refused.
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
    slices: dict[str, object] = field(default_factory=dict)  # name -> parameter viewing the trained rows

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.full.values()) + sum(
            (p.shape[0] - start) * p[0].numel() for p, start in self.rows.values()
        )

    def make_slices(self) -> None:
        """Views of the trainable rows, as parameters of their own (call once the model is on its device)."""
        import torch

        self.slices = {name: torch.nn.Parameter(p.detach()[start:]) for name, (p, start) in self.rows.items()}

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: matrices decay, vectors do not; trained rows (views) decay like matrices."""
        if self.rows and not self.slices:
            self.make_slices()
        decay = [p for p in self.full.values() if p.ndim >= 2]
        no_decay = [p for p in self.full.values() if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
            {"params": list(self.slices.values()), "weight_decay": weight_decay, "name": "rows"},
        ]
        return [g for g in groups if g["params"]]

    def parameters(self) -> list:
        """What the optimizer updates (for gradient clipping): whole parameters and the row views."""
        return list(self.full.values()) + list(self.slices.values())

    def gather_row_grads(self) -> None:
        """Hand each row-trained matrix's gradient rows to its view (call after backward, before clipping)."""
        for name, (p, start) in self.rows.items():
            self.slices[name].grad = None if p.grad is None else p.grad[start:]

    def zero_row_grads(self) -> None:
        for name, (p, _) in self.rows.items():
            p.grad = None
            self.slices[name].grad = None


def apply_policy(model, policy: str, base_vocab_size: int | None = None) -> TrainablePlan:
    """Set `requires_grad` on `model` for `policy` and return what is trained."""
    if policy not in POLICIES:
        raise ValueError(f"unknown trainable policy '{policy}' (known: {POLICIES})")
    inp = model.get_input_embeddings().weight
    out_module = model.get_output_embeddings()
    out = out_module.weight if out_module is not None else inp
    embeddings = {id(inp), id(out)}
    tied = id(inp) == id(out)
    if policy == "output_embeddings" and tied and base_vocab_size is None:
        raise ValueError(
            "policy 'output_embeddings' (EEVE stage 4) with tied embeddings: the output matrix is also the "
            "input matrix, so only the rows EEVE added may train, and the tokenizer directory has no "
            "eeve.json naming them; use trainable: all, or untie the embeddings"
        )
    by_rows = policy == "new_embeddings" or (policy == "output_embeddings" and tied)
    if by_rows:
        if base_vocab_size is None:
            raise ValueError(
                "policy 'new_embeddings' (EEVE stage 3) needs the base vocabulary size: the tokenizer "
                "directory has no eeve.json"
            )
        if inp.shape[0] <= base_vocab_size:
            raise ValueError(
                f"policy '{policy}': the model has {inp.shape[0]} embeddings, no new rows beyond "
                f"the base vocabulary of {base_vocab_size}"
            )
    plan = TrainablePlan()
    whole = {
        "all": lambda p: True,
        "new_embeddings": lambda p: False,
        "output_embeddings": lambda p: id(p) == id(out) and not tied,
        "all_but_embeddings": lambda p: id(p) not in embeddings,
    }[policy]
    for name, p in model.named_parameters():  # tied weights are listed once
        if whole(p):
            plan.full[name] = p
        elif by_rows and id(p) in embeddings:
            plan.rows[name] = (p, base_vocab_size)
        else:
            plan.frozen[name] = p
    for name, p in model.named_parameters():
        p.requires_grad_(name not in plan.frozen)
    return plan
