"""Data: token sources, tokenizers, and deterministic sharded batches."""

from gradsync.data.batches import Batch, Examples, ShardedBatches, TokenSequences, eval_batches
from gradsync.data.sources import TokenData, load_tokens

__all__ = ["Batch", "Examples", "ShardedBatches", "TokenSequences", "TokenData", "eval_batches", "load_tokens"]
