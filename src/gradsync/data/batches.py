"""Deterministic, resumable, world-size-independent sharding of a token stream into batches.

The train stream is cut into C non-overlapping sequences of ``T + 1`` tokens (inputs and shifted
targets; see ``stream.py``). Sequence number ``p = step * G + j`` of the run (G = global batch)
is chunk ``perm_e[p mod C]`` with ``e = p // C`` the epoch and ``perm_e`` a permutation seeded by
``(seed, e)``. So the global batch at step s depends only on (seed, s), never on the world size;
rank r of W takes the contiguous block ``[r*G/W, (r+1)*G/W)`` of it and splits that into
micro-batches for gradient accumulation. The position is just the step, which makes resuming
exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gradsync.data.stream import TokenStream
from gradsync.errors import DataError


def as_stream(tokens: TokenStream | np.ndarray) -> TokenStream:
    return tokens if isinstance(tokens, TokenStream) else TokenStream([tokens])


class ShardedBatches:
    """Yields, per optimizer step, this rank's list of ``(x, y)`` micro-batches."""

    def __init__(self, tokens: TokenStream | np.ndarray, seq_len: int, global_batch: int, micro_batch: int,
                 rank: int, world_size: int, seed: int) -> None:
        if global_batch % (world_size * micro_batch):
            raise DataError(f"global batch {global_batch} is not divisible by world size × micro-batch "
                            f"({world_size} × {micro_batch})")
        self.tokens = as_stream(tokens)
        self.seq_len = seq_len
        self.global_batch = global_batch
        self.micro_batch = micro_batch
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.n_chunks = self.tokens.n_sequences(seq_len)
        if self.n_chunks < global_batch:
            raise DataError(f"the train split holds only {self.n_chunks} sequences of {seq_len + 1} "
                            f"tokens, fewer than one global batch of {global_batch}; use more data, "
                            "a shorter data.seq_len or a smaller train.global_batch")
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

    def local_chunks(self, step: int) -> np.ndarray:
        per_rank = self.global_batch // self.world_size
        return self.global_chunks(step)[self.rank * per_rank:(self.rank + 1) * per_rank]

    def micro_batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        data = torch.from_numpy(self.tokens.sequences(self.local_chunks(step), self.seq_len))
        return [(data[i:i + self.micro_batch, :-1].contiguous(), data[i:i + self.micro_batch, 1:].contiguous())
                for i in range(0, len(data), self.micro_batch)]

    def __iter__(self) -> "ShardedBatches":
        return self

    def __next__(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batch = self.micro_batches(self.step)
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seed": self.seed, "n_chunks": self.n_chunks,
                "seq_len": self.seq_len, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "n_chunks", "seq_len", "global_batch"):
            if state[key] != getattr(self, key):
                raise DataError(f"saved data position does not match this data: {key} was "
                                f"{state[key]}, is {getattr(self, key)}")
        self.step = int(state["step"])


def eval_batches(tokens: TokenStream | np.ndarray, seq_len: int, n_sequences: int, micro_batch: int,
                 rank: int, world_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share (strided) of the first ``n_sequences`` validation sequences."""
    stream = as_stream(tokens)
    mine = np.arange(rank, min(n_sequences, stream.n_sequences(seq_len)), world_size)
    out = []
    for i in range(0, len(mine), micro_batch):
        t = torch.from_numpy(stream.sequences(mine[i:i + micro_batch], seq_len))
        out.append((t[:, :-1].contiguous(), t[:, 1:].contiguous()))
    return out
