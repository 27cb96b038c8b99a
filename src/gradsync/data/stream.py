"""A token stream made of one or more 1-D token arrays, cut into fixed-length sequences.

Pre-tokenized shards are memory-mapped, not loaded: a worker touches only the sequences of its
batches, so a corpus of many GB costs each worker page cache, not RAM. A sequence of ``T + 1``
tokens (inputs plus shifted targets) never spans two parts, as in llm.c's loader; each part loses
at most ``T`` tokens at its end.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class TokenStream:
    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.parts = [p for p in parts if len(p)]
        self._starts: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def _first_sequence(self, seq_len: int) -> np.ndarray:
        """Number of the first sequence of each part, plus the total at the end (cached)."""
        if seq_len not in self._starts:
            counts = [max(0, (len(p) - 1) // seq_len) for p in self.parts]
            self._starts[seq_len] = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        return self._starts[seq_len]

    def n_sequences(self, seq_len: int) -> int:
        return int(self._first_sequence(seq_len)[-1])

    def sequences(self, ids: np.ndarray, seq_len: int) -> np.ndarray:
        """Rows ``ids`` (sequence numbers) as an int64 array of shape (len(ids), seq_len + 1)."""
        starts = self._first_sequence(seq_len)
        which = np.searchsorted(starts, ids, side="right") - 1
        out = np.empty((len(ids), seq_len + 1), dtype=np.int64)
        for row, (part, local) in enumerate(zip(which, ids - starts[which])):
            off = int(local) * seq_len
            out[row] = self.parts[part][off:off + seq_len + 1]
        return out

    def head(self, n: int) -> np.ndarray:
        """The first ``n`` tokens (or fewer) of the first part."""
        return np.asarray(self.parts[0][:n]) if self.parts else np.empty(0, dtype=np.uint16)

    def max_token(self) -> int:
        return max(int(p.max()) for p in self.parts)

    def to_numpy(self) -> np.ndarray:
        """All tokens in one array: for small data and tests, never for a large corpus."""
        return np.concatenate(self.parts) if self.parts else np.empty(0, dtype=np.uint16)
