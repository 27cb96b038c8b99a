"""Checkpoints on disk: the single-file format (atomic, checksummed, keep-K, fallback to the newest
intact one), the sharded format through ``torch.distributed.checkpoint`` and the slices of the
full-model state each rank holds. What goes into a checkpoint and when is the trainer's part
(:mod:`gradsync.training.checkpointer`)."""
