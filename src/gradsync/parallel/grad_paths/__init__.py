"""How gradients travel: bucketed all-reduce overlapped with backward, the reduce-scatter of
ZeRO-2/3, and the reducers that average one bucket (plain, low precision, PowerSGD, top-k,
8/4-bit quantised, two-level)."""
