"""gradsync's training loop and its parts: the trainer, evaluation, mixed precision, the peak
FLOP/s behind MFU, metrics and trackers, the run log and the checkpointer."""
