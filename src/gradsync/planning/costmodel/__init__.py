"""How long a data-parallel training step takes, and how much memory it needs: an analytical model.

Pure functions, no process group: ``predict(strategy, workload, world, hardware)`` returns the
time of one optimizer step split into compute, exposed communication, optimizer and compression,
the tokens/s, MFU and per-rank memory. ``gradsync calibrate`` measures the inputs on a real machine
(:class:`Hardware` from a profile); ``gradsync plan`` uses presets (published peak FLOP/s, memory,
link bandwidths). The derivation, with its assumptions, is in the guide's chapter 4
(``docs/guide/math.md``).

One module per concern: :mod:`.network` (links, the alpha-beta model of ring collectives),
:mod:`.hardware` (devices), :mod:`.workload` (a model's tensors, buckets planned by
:func:`gradsync.core.buckets.plan_buckets` as the strategies plan them), :mod:`.overlap` (the
simulation of collectives behind compute), :mod:`.price` (the step time: one price function per
strategy and compressor of :mod:`gradsync.core.catalog`) and :mod:`.memory` (bytes per rank).
This package exports what its users call.
"""

from gradsync.core.ring import OPS
from gradsync.planning.costmodel.hardware import DEVICES, Hardware, device_preset
from gradsync.planning.costmodel.memory import ACTIVATIONS, activation_bytes, memory
from gradsync.planning.costmodel.network import NETWORKS, CostModelError, Link, Network, network_preset
from gradsync.planning.costmodel.overlap import exposed_after, exposed_before, gather_schedule, link_schedule
from gradsync.planning.costmodel.price import Prediction, bucket_times, predict, scaling_efficiency
from gradsync.planning.costmodel.workload import (
    TensorInfo,
    Workload,
    buckets,
    frozen,
    gpt_tensors,
    gpt_workload,
    units,
    with_accum,
)

__all__ = [
    "ACTIVATIONS",
    "CostModelError",
    "DEVICES",
    "Hardware",
    "Link",
    "NETWORKS",
    "Network",
    "OPS",
    "Prediction",
    "TensorInfo",
    "Workload",
    "activation_bytes",
    "bucket_times",
    "buckets",
    "device_preset",
    "exposed_after",
    "link_schedule",
    "exposed_before",
    "gather_schedule",
    "frozen",
    "gpt_tensors",
    "gpt_workload",
    "memory",
    "network_preset",
    "predict",
    "scaling_efficiency",
    "units",
    "with_accum",
]
