"""Batches loaded ahead of the step that needs them, so the accelerator does not wait for the disk.

A background thread walks its own copy of the run's `DataOrder` (`prefetch` steps ahead), reads each
step's rows, builds this rank's micro-batches and, on GPU, copies them into pinned host memory (so the
step's `.to(device, non_blocking=True)` is an asynchronous copy). The trainer still advances its own
`DataOrder` one step at a time and asks for that step's rows: the checkpointed data position is the
trainer's, never the thread's, and a step whose rows the thread did not predict is read inline (it never
happens unless the order is changed under it). `wait_seconds` is the time the trainer spent blocked on
data, which the run log reports as a share of each step.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Callable

import numpy as np


class Prefetcher:
    def __init__(
        self,
        order,
        load: Callable[[np.ndarray], list],
        depth: int,
        pin: bool = False,
        limit: int | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        """`order`: the run's DataOrder at the next step (copied, not advanced); `load(rows)` builds one
        step's micro-batches; `depth`: steps loaded ahead (0: load inline); `limit`: steps left."""
        self.load, self.pin, self.depth, self._on_close = load, pin, depth, on_close
        self.wait_seconds = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = None
        if depth > 0:
            ahead = copy.deepcopy(order)
            self._thread = threading.Thread(target=self._fill, args=(ahead, limit), daemon=True)
            self._thread.start()

    def _prepare(self, rows: np.ndarray) -> list:
        batches = self.load(rows)
        if self.pin:
            batches = [tuple(t.pin_memory() for t in b) for b in batches]
        return batches

    def _fill(self, order, limit: int | None) -> None:
        n = 0
        while not self._stop.is_set() and (limit is None or n < limit):
            rows = order.next_step()
            try:
                item = (rows, self._prepare(rows), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the trainer, which raises it
                item = (rows, None, exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            n += 1
            if item[2] is not None:
                return

    def get(self, rows: np.ndarray) -> list:
        """This rank's micro-batches of the step whose rows are `rows` (the trainer's own order)."""
        t0 = time.perf_counter()
        try:
            if self._thread is not None:
                ahead, batches, error = self._queue.get()
                if error is not None:
                    raise error
                if np.array_equal(ahead, rows):
                    return batches
                self.close()  # the order moved under the thread: read inline from now on
            return self._prepare(rows)
        finally:
            self.wait_seconds += time.perf_counter() - t0

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while True:  # unblock a thread waiting to put
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._thread.join(timeout=5)
            self._thread = None
        if self._on_close is not None and self._thread is None:
            self._on_close()
            self._on_close = None
