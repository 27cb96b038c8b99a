"""The planning layer: the analytical cost model, the calibration that measures its inputs, the
planner built on both, and the pre-launch check of a run (:mod:`~gradsync.planning.preflight`).
The cost model, profile and planner import no torch."""
