"""Log-likelihood of continuations given contexts, batched, for any causal LM.

A request is (context, continuation). As lm-evaluation-harness does, spaces at the end of the context
move to the continuation, the pair is encoded as one string and the continuation's tokens are what
follows the context's own encoding; with `add_bos` the sequence starts with the boundary token that
packing put before every training document (`data.blending.pack.boundary_id`: BOS, or EOS without one). Requests of one context whose model input is a prefix of another's (for
example the letters A-E after one exam question) share one forward pass. Sequences are sorted by length and run
`batch_size` at a time, right-padded (causal attention never looks right, so padding changes nothing
before it); only the positions of continuation tokens go through the output head and the softmax, so
memory is bounded by the batch, not by the number of requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lm_platform.data.blending.pack import boundary_id


@dataclass(frozen=True)
class LoglikResult:
    """Summed log-probability of the continuation's tokens; `greedy` when each is the argmax."""

    loglik: float
    greedy: bool
    tokens: int


class LoglikScorer:
    """Scores (context, continuation) pairs with one model and tokenizer."""

    def __init__(
        self, model, tokenizer, batch_size: int = 16, add_bos: bool = True, max_length: int | None = None
    ):
        self.model = model
        self.tok = tokenizer
        self.batch_size = batch_size

        self.boundary = boundary_id(tokenizer) if add_bos else None
        self.add_bos = self.boundary is not None
        cfg = getattr(model, "config", None)
        self.max_length = max_length or getattr(cfg, "max_position_embeddings", None) or 2048

    def encode(self, text: str) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False)
        return [self.boundary, *ids] if self.add_bos else list(ids)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of the context and of the continuation as they follow it."""
        if not context and not self.add_bos:
            raise ValueError("an empty context needs a boundary token (BOS or EOS) to condition on")
        stripped = context.rstrip()
        if stripped != context:
            continuation = context[len(stripped) :] + continuation
            context = stripped
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx) :]

    def score(self, requests: Sequence[tuple[str, str]]) -> list[LoglikResult]:
        """One result per request, in the order given."""
        import torch

        # Requests of one context whose model input is a prefix of another's share that one's forward
        # pass (causal attention: the logits of a prefix do not depend on what follows it).
        by_context: dict[tuple[int, ...], list[tuple[int, list[int], int]]] = {}
        for i, (context, continuation) in enumerate(requests):
            ctx, cont = self.encode_pair(context, continuation)
            if not cont:
                raise ValueError(f"request {i}: the continuation {continuation!r} encodes to no tokens")
            full = (ctx + cont)[-(self.max_length + 1) :]
            by_context.setdefault(tuple(ctx), []).append((i, full, min(len(cont), len(full) - 1)))
        groups: dict[tuple[int, ...], list[tuple[int, list[int], int]]] = {}
        for members in by_context.values():
            carriers: list[tuple[int, ...]] = []
            for i, full, n in sorted(members, key=lambda m: len(m[1]), reverse=True):
                inp = tuple(full[:-1])
                home = next((c for c in carriers if c[: len(inp)] == inp), None)
                if home is None:
                    carriers.append(inp)
                    home = inp
                groups.setdefault(home, []).append((i, full, n))
        inputs = sorted(groups, key=len, reverse=True)
        out: list[LoglikResult | None] = [None] * len(requests)
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(inputs), self.batch_size):
                batch = inputs[start : start + self.batch_size]
                ids = torch.zeros((len(batch), len(batch[0])), dtype=torch.long)
                rows: list[int] = []
                cols: list[int] = []
                targets: list[int] = []
                owners: list[tuple[int, int]] = []
                for r, carrier in enumerate(batch):
                    ids[r, : len(carrier)] = torch.tensor(carrier, dtype=torch.long)
                    for req, full, n in groups[carrier]:
                        # The last n tokens of `full` are the continuation; the logits that predict them
                        # sit at positions len(full) - 1 - n .. len(full) - 2 of the carrier.
                        end = len(full) - 1
                        rows += [r] * n
                        cols += range(end - n, end)
                        targets += full[len(full) - n :]
                        owners.append((req, n))
                logprobs, greedy = self._token_scores(ids, rows, cols, targets)
                pos = 0
                for req, n in owners:
                    out[req] = LoglikResult(
                        float(logprobs[pos : pos + n].sum()), bool(greedy[pos : pos + n].all()), n
                    )
                    pos += n
        return out  # type: ignore[return-value]

    def _token_scores(self, ids, rows: list[int], cols: list[int], targets: list[int]):
        """Log-probabilities of `targets` at (row, col) of the batch, and whether each is the argmax."""
        import torch

        r = torch.tensor(rows)
        c = torch.tensor(cols)
        t = torch.tensor(targets)
        hidden = _last_hidden(self.model, ids)
        if hidden is not None:
            logits = self.model.get_output_embeddings()(hidden[r, c]).float()
        else:
            logits = self.model(input_ids=ids).logits[r, c].float()
        logp = torch.log_softmax(logits, dim=-1)
        picked = logp.gather(1, t[:, None])[:, 0]
        return picked.double(), logits.argmax(dim=-1) == t


def _last_hidden(model, ids):
    """The decoder's last hidden states when the model is a plain decoder + linear head (Llama-style);
    None for anything else (logit soft-capping, scaling), which then runs the full forward."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None
    get_decoder = getattr(model, "get_decoder", None)
    head = getattr(model, "get_output_embeddings", lambda: None)()
    if get_decoder is None or head is None or getattr(head, "bias", None) is not None:
        return None
    decoder = get_decoder()
    if decoder is None or decoder is model:
        return None
    return decoder(input_ids=ids).last_hidden_state
