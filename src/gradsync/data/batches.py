"""Deterministic, resumable, world-size-independent sharding of a task's examples into batches.

A task's train set is C examples (for a language model: non-overlapping sequences of ``T + 1``
tokens, inputs and shifted targets; see ``stream.py``). Draw number ``p = step * G + j`` of the
run (G = global batch) is example ``perm_e[p mod C]`` with ``e = p // C`` the epoch and
``perm_e`` a permutation seeded by ``(seed, e)``. So the global batch at step s depends only on
(seed, s), never on the world size; rank r of W takes the contiguous block
``[r*G/W, (r+1)*G/W)`` of it and splits that into micro-batches for gradient accumulation. Any
randomness in turning an example into tensors (masking, augmentation) is keyed by the draw number
p, so it too is the same at every world size. The position is just the step, which makes
resuming exact.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from gradsync.core.errors import DataError
from gradsync.data.stream import TokenStream

Batch = tuple[torch.Tensor, ...]


class Examples(Protocol):
    """A fixed, indexable set of examples (a task's train or evaluation split)."""

    def __len__(self) -> int: ...

    def batch(self, ids: np.ndarray, draws: np.ndarray, train: bool) -> Batch:
        """Examples ``ids`` as a batch of tensors. ``draws`` numbers each draw uniquely within
        the run (training) or is the example id (evaluation); random transforms are seeded by it.
        ``train`` is False for evaluation, where transforms must be fixed."""
        ...


def as_stream(tokens: TokenStream | np.ndarray) -> TokenStream:
    return tokens if isinstance(tokens, TokenStream) else TokenStream([tokens])


class TokenSequences:
    """A token stream as examples: sequence ``i`` is ``(x, y)``, tokens and next tokens."""

    def __init__(self, tokens: TokenStream | np.ndarray, seq_len: int) -> None:
        self.tokens = as_stream(tokens)
        self.seq_len = seq_len
        self.n = self.tokens.n_sequences(seq_len)

    def __len__(self) -> int:
        return self.n

    def rows(self, ids: np.ndarray) -> torch.Tensor:
        """Sequences ``ids`` of ``T + 1`` tokens, (len(ids), T + 1) int64."""
        return torch.from_numpy(self.tokens.sequences(ids, self.seq_len))

    def batch(self, ids: np.ndarray, draws: np.ndarray, train: bool) -> Batch:
        data = self.rows(ids)
        return data[:, :-1].contiguous(), data[:, 1:].contiguous()


class ShardedBatches:
    """Yields, per optimizer step, this rank's list of micro-batches (tuples of tensors)."""

    def __init__(
        self, examples: Examples, global_batch: int, micro_batch: int, rank: int, world_size: int, seed: int
    ) -> None:
        if global_batch % (world_size * micro_batch):
            raise DataError(
                f"global batch {global_batch} is not divisible by world size × micro-batch "
                f"({world_size} × {micro_batch})"
            )
        self.examples = examples
        self.global_batch = global_batch
        self.micro_batch = micro_batch
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.n_chunks = len(examples)
        if self.n_chunks < global_batch:
            raise DataError(
                f"the train split holds only {self.n_chunks} examples, fewer than one global "
                f"batch of {global_batch}; use more data, shorter sequences (data.seq_len) or "
                "a smaller train.global_batch"
            )
        self.step = 0
        self._perm_epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    @property
    def accum_steps(self) -> int:
        return self.global_batch // (self.world_size * self.micro_batch)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_chunks)
            self._perm_epoch = epoch
        return self._perm

    def global_chunks(self, step: int) -> np.ndarray:
        """Chunk ids of the whole global batch at ``step`` (the same for every world size)."""
        pos = step * self.global_batch + np.arange(self.global_batch, dtype=np.int64)
        epochs = pos // self.n_chunks
        out = np.empty(self.global_batch, dtype=np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._permutation(int(e))[pos[sel] % self.n_chunks]
        return out

    def reshard(self, rank: int, world_size: int) -> None:
        """From now on take block ``rank`` of ``world_size`` of each global batch: the membership of
        a live job's step (its replicas × their workers), which changes when a replica dies or
        returns. The global batch stays the same, so each example is still drawn exactly once
        per epoch; when it does not divide evenly the blocks differ by one example and
        :meth:`loss_weights` says how much each micro-batch counts."""
        if not 0 <= rank < world_size <= self.global_batch:
            raise DataError(
                f"a global batch of {self.global_batch} cannot be shared by {world_size} workers (rank {rank}); "
                "raise train.global_batch to at least the workers of every replica together"
            )
        self.rank, self.world_size = rank, world_size

    def _local_slice(self) -> slice:
        g, w = self.global_batch, self.world_size
        return slice(self.rank * g // w, (self.rank + 1) * g // w)

    def loss_weights(self) -> list[float] | None:
        """What each of this rank's micro-batch mean losses is multiplied by before backward so
        that the average over ranks of their gradients is the global batch's mean gradient: None
        when every rank holds G/W examples in equal micro-batches (then each counts 1 / their
        number, the usual accumulation), else ``len(micro-batch) × W / G`` for each."""
        g, w, m = self.global_batch, self.world_size, self.micro_batch
        if g % (w * m) == 0:
            return None
        block = self._local_slice()
        sizes = [min(m, block.stop - i) for i in range(block.start, block.stop, m)]
        return [n * w / g for n in sizes]

    def local_chunks(self, step: int) -> np.ndarray:
        return self.global_chunks(step)[self._local_slice()]

    def micro_batches(self, step: int) -> list[Batch]:
        ids = self.local_chunks(step)
        draws = (step * self.global_batch + np.arange(self.global_batch, dtype=np.int64))[self._local_slice()]
        m = self.micro_batch
        return [self.examples.batch(ids[i : i + m], draws[i : i + m], True) for i in range(0, len(ids), m)]

    def __iter__(self) -> ShardedBatches:
        return self

    def __next__(self) -> list[Batch]:
        batch = self.micro_batches(self.step)
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seed": self.seed, "n_chunks": self.n_chunks, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "n_chunks", "global_batch"):
            if state[key] != getattr(self, key):
                raise DataError(
                    f"saved data position does not match this data: {key} was {state[key]}, is {getattr(self, key)}"
                )
        self.step = int(state["step"])


def eval_batches(examples: Examples, n_examples: int, micro_batch: int, rank: int, world_size: int) -> list[Batch]:
    """This rank's share (strided) of the first ``n_examples`` evaluation examples."""
    mine = np.arange(rank, min(n_examples, len(examples)), world_size)
    return [
        examples.batch(mine[i : i + micro_batch], mine[i : i + micro_batch], False)
        for i in range(0, len(mine), micro_batch)
    ]
