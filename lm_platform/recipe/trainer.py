"""A training stage's `train` section (`TrainConfig`): how the model learns, every optimisation default
defined here once. A config type at the bottom of the import graph: the recipe's stage nests it, the
trainer reads it from its job file (`training/config.py: TrainJob`), and it imports nothing of either.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lm_platform.recipe.base import Strict


class TrainConfig(Strict):
    """Optimisation settings of one training stage (the stage's `train:` section)."""

    micro_batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    epochs: float = Field(1.0, gt=0, description="Passes over the stage's dataset; steps are derived")
    token_budget: int | None = Field(
        None, gt=0, description="Tokens to train on (steps derived); default `epochs` passes over the dataset"
    )
    lr: float = Field(3e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "constant", "linear", "wsd"] = "cosine"
    wsd_decay_fraction: float = Field(0.2, gt=0, le=1, description="WSD: share of steps spent decaying")
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float | None = Field(
        1.0, gt=0, description="Clip the global gradient norm to this value; null: no clipping"
    )
    trainable: Literal["all", "new_embeddings", "output_embeddings", "all_but_embeddings"] = Field(
        "all",
        description="EEVE policies: 3 = new_embeddings, 4 = output_embeddings, 6 = all, 7 = all_but_embeddings. "
        "With tied embeddings (one matrix for input and output, e.g. SmolLM2), `output_embeddings` trains "
        "only the rows EEVE added to the shared matrix (the base rows are also the input embeddings and "
        "stay frozen); without an EEVE extension it is refused",
    )
    log_every: int = Field(10, gt=0)
    seed: int = 0
    val_rows: int = Field(
        256, gt=0, description="Held-out rows (an evenly spaced sample of the val split) for the val loss"
    )
    checkpoint_every: int | None = Field(None, gt=0, description="Steps between checkpoints (and at the end)")
    keep_last: int = Field(2, gt=0, description="Newest step checkpoints kept for resume")
    keep_every: int | None = Field(
        None, gt=0, description="Also write a step checkpoint every N steps and keep it (never pruned)"
    )
    keep_steps: tuple[int, ...] = Field((), description="Steps whose checkpoints are written and kept")
    keep_aside: int = Field(
        2,
        ge=0,
        description="Earlier runs moved aside (changed settings, retrained stage) kept in the run dir",
    )
    nproc_per_node: int = Field(1, gt=0, description="Training processes (torchrun) per node")
    # Throughput options (`training/parallel.py`, `training/dataloader.py`). Their defaults leave a run's
    # resume identity as it was before they existed (see IDENTITY_WHEN_SET).
    compile: bool | None = Field(
        None,
        description="torch.compile each decoder layer; null: on with a GPU, off on CPU (where compiling "
        "costs ~20 s on 2 cores and gains little)",
    )
    activation_checkpointing: Literal["none", "full", "selective"] = Field(
        "none",
        description="Recompute activations in the backward instead of keeping them: `full` for every "
        "decoder layer (only its input is kept), `selective` for every second layer",
    )
    parallelism: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="With several processes: `ddp` replicates the model; `fsdp` shards parameters, "
        "gradients and optimizer state (FSDP2 `fully_shard` per decoder layer; bf16 parameters with fp32 "
        "gradient reduction on GPU, fp32 on CPU)",
    )
    data_prefetch: int = Field(
        2, ge=0, description="Optimizer steps of batches loaded ahead by a background thread (0: inline)"
    )
    pin_memory: bool = Field(True, description="Load batches into pinned host memory (GPU only)")


# Settings that change neither the weights nor the data order: left out of a run's resume identity, so a
# changed logging cadence or retention continues the run instead of starting it again.
NON_TRAJECTORY_FIELDS = frozenset(
    {
        "log_every",
        "val_rows",
        "checkpoint_every",
        "keep_last",
        "keep_every",
        "keep_steps",
        "keep_aside",
        "nproc_per_node",
        "data_prefetch",
        "pin_memory",
        # Recomputation reruns the same ops on the same inputs: the gradients are the same.
        "activation_checkpointing",
    }
)

# Settings that change the trajectory's numerics but were added after runs existed: part of the resume
# identity only when set away from their default, so the runs started before keep their identity.
IDENTITY_WHEN_SET = {"compile": None, "parallelism": "ddp"}
