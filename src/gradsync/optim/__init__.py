"""The optimizer every strategy builds (as a factory, so ZeRO can rebuild it over its shard) and
the learning-rate schedule."""
