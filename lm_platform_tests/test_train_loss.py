"""The training loss: loss masks applied, a per-token mean over the whole optimizer step (whatever the
split into micro-batches and processes), the data order, gradient clipping as a stage setting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from lm_platform.atomic import write_json
from lm_platform.data.blending.pack import SplitReader
from lm_platform.modeling.init import build_model
from lm_platform_tests.training_fixtures import TINY, load_weights, make_job, synthetic_dataset

VOCAB, SEQ, ROWS = 64, 16, 16
PAD = VOCAB  # packing pads with an id no token has


def masked_dataset(out: Path, rows: int = ROWS, seed: int = 0) -> Path:
    """Rows with uneven padding (some rows mostly padding) and loss masks (prompt spans masked)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    data = rng.integers(4, VOCAB, size=(rows, SEQ + 1)).astype(np.uint16)
    mask = np.ones_like(data, dtype=np.uint8)
    for i in range(rows):
        pad_from = SEQ + 1 - int(rng.integers(0, SEQ)) if i % 3 == 0 else SEQ + 1
        data[i, pad_from:] = PAD
        mask[i, pad_from:] = 0
        start = int(rng.integers(0, SEQ // 2))
        mask[i, start : start + int(rng.integers(1, SEQ // 2))] = 0  # a masked prompt span
    np.save(out / "train_00000.npy", data)
    np.save(out / "train_00000.mask.npy", mask)
    np.save(out / "val_00000.npy", data[:2])
    np.save(out / "val_00000.mask.npy", mask[:2])
    splits = {
        split: {
            "docs": n,
            "tokens": n * (SEQ + 1),
            "rows": n,
            "padding": 0,
            "shards": [{"file": f"{split}_00000.npy", "rows": n}],
        }
        for split, n in (("train", rows), ("val", 2))
    }
    write_json(
        out / "index.json",
        {
            "seq_len": SEQ,
            "row_len": SEQ + 1,
            "dtype": "uint16",
            "vocab_size": VOCAB,
            "bos_id": 1,
            "eos_id": 2,
            "pad_id": PAD,
            "model_pad_id": None,
            "loss_mask": True,
            "tokens": rows * (SEQ + 1),
            "splits": splits,
            "sources": {},
        },
    )
    return out


def _model():
    return build_model({"kind": "scratch", "model": TINY}, VOCAB, 1, 2, None, 0)


def step_grads(data: Path, accum: int, micro: int) -> dict[str, torch.Tensor]:
    """The gradient the trainer's step leaves, for rows 0..ROWS-1 as one global step (this process's part
    of it under torchrun's environment)."""
    from lm_platform.training.train import Dist, micro_batches, step_gradients

    dist = Dist()
    model = _model()
    ddp = model
    if dist.world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
    reader = SplitReader(data, "train")
    batches = micro_batches(reader, np.arange(ROWS), dist.rank, dist.world, accum, micro, PAD)
    step_gradients(ddp, batches, dist, torch.device("cpu"))
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    dist.close()
    return grads


def test_masked_tokens_contribute_nothing_to_loss_or_gradients(tmp_path):
    from lm_platform.training.train import IGNORE, batch_tensors, token_loss

    data = masked_dataset(tmp_path / "ds")
    rows, mask = SplitReader(data, "train").rows(np.arange(ROWS))
    inputs, labels = batch_tensors(rows, PAD, mask)
    assert torch.equal(labels == IGNORE, torch.from_numpy((mask[:, 1:] == 0) | (rows[:, 1:] == PAD)))
    # A row's last token is only ever a label: where it is masked, changing it changes nothing.
    rows[:, -1], mask[:, -1] = 5, 0
    changed = rows.copy()
    changed[:, -1] = 9

    def grads(r, m):
        model = _model()
        inputs, labels = batch_tensors(r, PAD, m)
        loss = token_loss(model, inputs, labels)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters()]

    (la, ga), (lb, gb) = grads(rows, mask), grads(changed, mask)
    assert la == lb and all(torch.equal(a, b) for a, b in zip(ga, gb, strict=True))
    unmasked = mask.copy()
    unmasked[:, -1] = 1
    (lc, _), (ld, _) = grads(rows, unmasked), grads(changed, unmasked)
    assert lc != ld  # the same change counts when the token is trained on


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_per_token_loss_gives_the_same_gradients_for_any_split_of_the_step(tmp_path):
    """One big batch, 1 process x accumulation 4, and 2 processes (gloo) x accumulation 2 give the same
    gradients, with padding and loss masks making micro-batches' token counts unequal."""
    data = masked_dataset(tmp_path / "ds")
    big = step_grads(data, accum=1, micro=ROWS)
    accum4 = step_grads(data, accum=4, micro=ROWS // 4)
    port, procs = str(_free_port()), []
    for rank in range(2):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")},
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        cmd = [
            sys.executable,
            "-m",
            "lm_platform_tests.test_train_loss",
            str(data),
            str(tmp_path / "ddp.safetensors"),
        ]
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]
    from safetensors.torch import load_file

    ddp = load_file(str(tmp_path / "ddp.safetensors"))
    for name, g in big.items():
        scale = g.abs().max()
        assert torch.allclose(accum4[name], g, rtol=1e-5, atol=1e-6 * scale), name
        assert torch.allclose(ddp[name], g, rtol=1e-5, atol=1e-6 * scale), name


def test_data_order_reads_every_row_once_per_epoch():
    from lm_platform.training.config import TrainConfig
    from lm_platform.training.train import DataOrder, planned_steps

    n, g = 10, 4
    steps, global_rows, total = planned_steps(
        TrainConfig(micro_batch_size=2, grad_accum=2, epochs=1), n, 8, 1
    )
    assert (steps, global_rows, total) == (3, 4, 10)
    order = DataOrder(n, global_rows, seed=3, total_rows=total)
    batches = [order.next_step() for _ in range(steps)]
    assert [len(b) for b in batches] == [4, 4, 2]  # the last step takes what is left
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    # Without an end (token budget), the stream crosses epochs without skipping a row.
    stream = DataOrder(n, g, seed=3)
    seen = np.concatenate([stream.next_step() for _ in range(5)])
    assert sorted(seen[:10].tolist()) == sorted(seen[10:].tolist()) == list(range(n))
    # A position restores the stream exactly.
    again = DataOrder(n, g, seed=3, **stream.position())
    assert np.array_equal(again.next_step(), stream.next_step())


def test_a_short_last_step_trains_on_the_remaining_rows(tmp_path):
    from lm_platform.training.train import Reporter, train

    data = synthetic_dataset(tmp_path / "data", VOCAB, rows=10, seq_len=SEQ)
    (tmp_path / "tok").mkdir()
    job = make_job(
        tmp_path,
        "s",
        data,
        tmp_path / "tok",
        {"kind": "scratch", "model": TINY},
        micro_batch_size=4,
        epochs=1,
    )
    metrics = train(job, Reporter())
    assert metrics["steps"] == 3 and metrics["tokens_seen"] == 10 * SEQ  # every row once, none twice


def test_gradient_clipping_is_a_stage_setting(tmp_path):
    from lm_platform.training.train import Reporter, train

    data = synthetic_dataset(tmp_path / "data", VOCAB, rows=8, seq_len=SEQ)
    (tmp_path / "tok").mkdir()
    start = _start_weights()
    moved = {}
    for clip in (None, 1e-9):
        job = make_job(
            tmp_path / str(clip),
            "s",
            data,
            tmp_path / "tok",
            {"kind": "scratch", "model": TINY},
            micro_batch_size=4,
            epochs=1,
            grad_clip=clip,
            weight_decay=0.0,
        )
        train(job, Reporter())
        w = load_weights(Path(job["output_dir"]))
        moved[clip] = max(float((w[k] - start[k]).abs().max()) for k in w)
    # Clipped to a norm of 1e-9, Adam's update is damped by its epsilon: the weights barely move.
    assert moved[1e-9] < moved[None] / 5


def _start_weights():
    model = build_model({"kind": "scratch", "model": TINY}, VOCAB, 1, 2, 3, 0)
    return {k: v.clone() for k, v in model.state_dict().items()}


if __name__ == "__main__":  # one rank of the 2-process gradient test
    from safetensors.torch import save_file

    grads = step_grads(Path(sys.argv[1]), accum=2, micro=ROWS // 4)
    if os.environ["RANK"] == "0":
        save_file({k: v.contiguous() for k, v in grads.items()}, sys.argv[2])


def test_fused_head_loss_matches_full_logits_without_building_them(tmp_path):
    """`token_loss` on a Llama goes through `linear_cross_entropy`: the same loss and gradients as
    cross-entropy on the full logits (to rounding: sums are taken per chunk), in chunks and with ignored
    positions dropped or masked, tied or untied, frozen head or not; the head never outputs V-wide logits."""
    from lm_platform.training.loss import linear_cross_entropy
    from lm_platform.training.train import IGNORE, batch_tensors, token_loss

    data = masked_dataset(tmp_path / "ds")
    rows, mask = SplitReader(data, "train").rows(np.arange(ROWS))
    inputs, labels = batch_tensors(rows, PAD, mask)
    assert (labels == IGNORE).any() and (labels != IGNORE).any()

    def reference(model):
        logits = model(input_ids=inputs).logits
        flat = logits.reshape(-1, logits.size(-1))
        return torch.nn.functional.cross_entropy(
            flat, labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
        )

    def grads(model, loss_fn):
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model)
        loss.backward()
        return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    def close(a, b):
        (la, ga), (lb, gb) = a, b
        assert abs(la - lb) <= 1e-6 * abs(la)
        assert ga.keys() == gb.keys()
        for name, g in ga.items():
            assert torch.allclose(gb[name], g, rtol=1e-5, atol=1e-6 * g.abs().max()), name

    for tied in (False, True):
        model = build_model(
            {"kind": "scratch", "model": {**TINY, "tie_word_embeddings": tied}}, VOCAB, 1, 2, None, 0
        )
        widths = []
        hook = model.lm_head.register_forward_hook(lambda m, i, o, w=widths: w.append(o.shape[-1]))
        ref = grads(model, reference)
        assert widths == [model.config.vocab_size]
        widths.clear()
        close(ref, grads(model, lambda m: token_loss(m, inputs, labels, "sum")))
        assert widths == [TINY["hidden_size"]]  # the head was skipped: no [B, T, V] logits
        hook.remove()
        for compact in (True, False):  # on GPU ignored positions are masked, not dropped
            head = model.lm_head

            def chunked(m, compact=compact, head=head):
                hidden = m.model(input_ids=inputs).last_hidden_state
                return linear_cross_entropy(
                    hidden, head.weight, labels, IGNORE, "sum", chunk=7, compact=compact
                )

            close(ref, grads(model, chunked))
        mean = token_loss(model, inputs, labels)
        assert abs(mean.item() - ref[0] / int((labels != IGNORE).sum())) <= 1e-6 * mean.item()
        with torch.no_grad():  # evaluation: the loss only
            assert abs(token_loss(model, inputs, labels, "sum").item() - ref[0]) <= 1e-6 * ref[0]

    model = _model()
    model.lm_head.weight.requires_grad_(False)  # a frozen head gets no gradient work at all
    ref = grads(model, reference)
    close(ref, grads(model, lambda m: token_loss(m, inputs, labels, "sum")))
    assert model.lm_head.weight.grad is None


def test_clipping_gives_torch_s_gradients_and_skips_the_multiply_when_nothing_is_clipped(monkeypatch):
    from lm_platform.training.train import clip_gradients

    torch.manual_seed(0)
    grads = [torch.randn(40, 8), torch.randn(8)]
    original = torch.nn.utils.clip_grads_with_norm_
    norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))
    for max_norm in (norm / 3, norm * 3):  # clipped, not clipped
        ours, ref = (
            [torch.nn.Parameter(torch.zeros_like(g)) for g in grads],
            [torch.nn.Parameter(torch.zeros_like(g)) for g in grads],
        )
        for p, q, g in zip(ours, ref, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        calls: list[int] = []
        monkeypatch.setattr(
            torch.nn.utils, "clip_grads_with_norm_", lambda *a, c=calls, **k: c.append(1) or original(*a, **k)
        )
        got = clip_gradients(ours, max_norm)
        monkeypatch.undo()
        want = float(torch.nn.utils.clip_grad_norm_(ref, max_norm))
        assert got == want
        assert all(torch.equal(p.grad, q.grad) for p, q in zip(ours, ref, strict=True))
        assert len(calls) == (1 if max_norm < norm else 0)
