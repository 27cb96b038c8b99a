"""torch's own data parallelism behind gradsync's strategy interface (DDP with its comm hooks,
ZeroRedundancyOptimizer, FSDP2): the references every gradsync strategy is compared with."""
