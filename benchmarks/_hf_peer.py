"""HF Trainer as the training benchmarks' peer (`benchmarks/train.py`, `benchmarks/train_gpu.py`): rows
in our data order, the same next-token labels, and a clock on every optimizer step. Imported only inside
the peer's run, so a benchmark's dry path does not pay for transformers."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import Dataset, SequentialSampler
from transformers import Trainer, TrainerCallback


class OrderedRows(Dataset):
    """Row `ordered[i]` of a split, read with `read(index) -> np.ndarray` (seq_len + 1 token ids)."""

    def __init__(self, ordered: np.ndarray, read):
        self.ordered, self.read = ordered, read

    def __len__(self):
        return len(self.ordered)

    def __getitem__(self, i):
        return torch.from_numpy(self.read(int(self.ordered[i])).astype(np.int64))


def collate(batch):
    """Inputs and labels as our trainer sees them: the row's first seq_len ids, shifted targets."""
    x = torch.stack(batch)
    return {"input_ids": x[:, :-1], "labels": x[:, :-1], "shift_labels": x[:, 1:].contiguous()}


class InOrder(Trainer):
    """Trainer without its own shuffle: the dataset is already in our trainer's data order."""

    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


class Clock(TrainerCallback):
    """When each optimizer step ended, and the logged losses."""

    def __init__(self):
        self.ends, self.losses = [], []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])
