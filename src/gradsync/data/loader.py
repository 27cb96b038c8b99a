"""Your own ``Dataset`` or ``DataLoader``, sharded the way gradsync shards its own data.

What Accelerate's ``prepare(dataloader)`` and Lightning Fabric's ``setup_dataloaders`` do for a
user's loader, in gradsync's terms (:mod:`gradsync.data.batches`): the global batch at step s is
drawn from a permutation seeded by (seed, epoch) and does not depend on the world size, rank r of
W takes its r-th block and splits it into micro-batches for gradient accumulation, and the
position is the step, so a run resumed mid-epoch continues with exactly the batches it would
have seen. A script that trained on one process with ``DataLoader(data, batch_size=64)`` trains
on N with the same 64-example batches, ``64 / N`` per rank.

Loading itself is torch's: the examples of each micro-batch are read and collated by a
``torch.utils.data.DataLoader`` (with the given loader's ``collate_fn``, ``num_workers``,
``pin_memory``), whose batch sampler is gradsync's plan; the given loader's own sampler and
shuffling are replaced by it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from gradsync.core.errors import DataError
from gradsync.data.batches import Batch, ShardedBatches


class DatasetExamples:
    """A map-style torch ``Dataset`` (``len`` and ``[i]``) as gradsync's :class:`Examples`."""

    def __init__(self, dataset: Dataset[Any], collate_fn: Callable[[list[Any]], Any] | None = None) -> None:
        if not hasattr(dataset, "__len__"):
            raise DataError(
                f"{type(dataset).__name__} has no len(): gradsync shards map-style datasets (len and [i]); "
                "an IterableDataset cannot be drawn from in a seeded order"
            )
        self.dataset = dataset
        self.collate = collate_fn or default_collate

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, ids: np.ndarray, draws: np.ndarray, train: bool) -> Batch:
        out: Batch = self.collate([self.dataset[int(i)] for i in ids])
        return out


class _PlannedIds(Sampler[list[int]]):
    """The example ids of this rank's micro-batches, step after step, from ``first`` to ``last``."""

    def __init__(self, plan: ShardedBatches, first: int, last: int) -> None:
        self.plan, self.first, self.last = plan, first, last

    def __iter__(self) -> Iterator[list[int]]:
        m = self.plan.micro_batch
        for step in range(self.first, self.last):
            ids = self.plan.local_chunks(step).tolist()
            for i in range(0, len(ids), m):
                yield ids[i : i + m]

    def __len__(self) -> int:
        return (self.last - self.first) * self.plan.accum_steps


class ShardedLoader:
    """Iterating it yields, for each optimizer step until the end of the current epoch, the list of
    this rank's micro-batches (one per micro-step of gradient accumulation). ``len()`` is the steps
    in an epoch (``len(dataset) // global_batch``: every example is drawn once per ``len(dataset)``
    draws, so when the global batch does not divide the data set an epoch's last draws begin the
    next permutation). ``state_dict()`` is the position; loading it resumes mid-epoch exactly."""

    def __init__(
        self,
        data: Dataset[Any] | DataLoader[Any],
        global_batch: int | None,
        micro_batch: int | None,
        rank: int,
        world_size: int,
        seed: int = 0,
    ) -> None:
        loader = data if isinstance(data, DataLoader) else None
        dataset: Dataset[Any] = loader.dataset if loader is not None else data  # type: ignore[assignment]
        if global_batch is None:
            if loader is None or loader.batch_size is None:
                raise DataError("give global_batch (all ranks together), or a DataLoader with a batch_size")
            global_batch = int(loader.batch_size)
        if global_batch < 1 or global_batch % world_size:
            raise DataError(f"global batch {global_batch} is not a positive multiple of the world size {world_size}")
        micro_batch = micro_batch or global_batch // world_size
        self.examples = DatasetExamples(dataset, loader.collate_fn if loader is not None else None)
        self.plan = ShardedBatches(self.examples, global_batch, micro_batch, rank, world_size, seed)
        self.loader_options: dict[str, Any] = {"collate_fn": self.examples.collate}
        if loader is not None:
            self.loader_options.update(num_workers=loader.num_workers, pin_memory=loader.pin_memory)

    @property
    def step(self) -> int:
        """The next optimizer step to be drawn."""
        return self.plan.step

    @property
    def epoch(self) -> int:
        return self.plan.step // len(self)

    @property
    def accum_steps(self) -> int:
        """Micro-batches per step on each rank."""
        return self.plan.accum_steps

    def __len__(self) -> int:
        return max(1, len(self.examples) // self.plan.global_batch)

    def __iter__(self) -> Iterator[list[Any]]:
        first = self.plan.step
        last = (first // len(self) + 1) * len(self)
        ids = _PlannedIds(self.plan, first, last)
        micro = iter(DataLoader(self.examples.dataset, batch_sampler=ids, **self.loader_options))
        for _ in range(first, last):
            batches = [next(micro) for _ in range(self.plan.accum_steps)]
            self.plan.step += 1
            yield batches

    def state_dict(self) -> dict[str, Any]:
        return self.plan.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plan.load_state_dict(state)
