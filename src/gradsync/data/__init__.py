"""Data: token sources, tokenizers, and deterministic sharded batches."""

from gradsync.data.batches import ShardedBatches, eval_batches
from gradsync.data.sources import TokenData, load_tokens

__all__ = ["ShardedBatches", "TokenData", "eval_batches", "load_tokens"]
