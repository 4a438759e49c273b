"""The model side of a shard: load the adapter and the dataset once per worker, run the cells of a shard.

`ModelSpec` is small and picklable, so an engine can ship it to workers (Ray actors) that each build one
`ModelRunner`; the runner fixes the torch thread count, so results do not depend on where a shard ran.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ...models import Chunk, default_batch_size, load, pick_device, stream
from ...models.dataset import read_h5ad


@dataclass(frozen=True)
class ModelSpec:
    family: str
    checkpoint: str
    data: str
    layers: tuple[int, ...]
    seed: int = 0
    max_cells: int | None = None
    gene_column: str | None = None  # the column the plan chose
    backed: bool = True
    batch_size: int = 0  # 0: the device's default
    device: str = "cpu"
    threads: int = 0  # torch threads per worker; 0: torch's default


class ModelRunner:
    def __init__(self, spec: ModelSpec):
        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.adapter = load(spec.family, Path(spec.checkpoint), seed=spec.seed)
        self.dataset = read_h5ad(Path(spec.data), max_cells=spec.max_cells, backed=spec.backed)
        self.prepared = self.adapter.prepare(self.dataset, spec.gene_column)
        self.device = pick_device(spec.device)
        self.batch_size = spec.batch_size or default_batch_size(self.device)

    def run(self, cells) -> Iterator[Chunk]:
        """Gene-token rows of `cells` with every layer of the spec, batch by batch."""
        return stream(self.adapter, self.prepared, list(self.spec.layers), self.batch_size, self.device, cells)


def ahead(items: Iterable, depth: int = 2) -> Iterator:
    """`items`, produced in a thread of their own up to `depth` ahead of the consumer: the model's forward of the next
    batch runs while the caller encodes this one (torch releases the GIL in both). An error in the producer is
    raised in the consumer; a consumer that stops early (an error of its own) stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            put(e)

    thread = threading.Thread(target=produce, name="forward-ahead", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
