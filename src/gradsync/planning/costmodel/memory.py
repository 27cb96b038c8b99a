"""Memory per rank: fp32 parameters, gradients and AdamW moments as each strategy holds them (the
ZeRO paper's accounting, Rajbhandari et al. 2020), strategy extras, error feedback, and the
activations of one micro-batch with activation checkpointing (Korthikanti et al. 2022)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gradsync.core import catalog
from gradsync.core.catalog import COMPRESSOR_SCHEMA, STRATEGY_SCHEMA
from gradsync.core.spec import Spec, parse_spec
from gradsync.planning.costmodel.hardware import Hardware
from gradsync.planning.costmodel.workload import Workload, frozen_bytes, units

# Activations of one transformer block, in units of s*b*h elements (sequence x micro-batch x width),
# counted for gradsync's GPT block with fused attention: (kept for backward by every block,
# held by the one block being recomputed in backward). Without checkpointing: the inputs of the two
# layer norms (2), their outputs (2), q/k/v (3), the attention output and its contiguous copy (2),
# the MLP's hidden layer before and after GELU (8) = 17, which is Korthikanti et al.'s 34*s*b*h
# bytes in 16-bit. Selective keeps the block input and every matmul/attention output (1 + 3 + 1 +
# 1 + 4 + 1 = 11) and recomputes the rest (7); full keeps the block input (1) and recomputes all 17.
ACTIVATIONS: dict[str, tuple[int, int]] = {"none": (17, 0), "selective": (11, 7), "full": (1, 17)}
RECOMPUTED_ELEMENTWISE = 7  # s*b*h elements per block that selective recomputes (norms, GELU, copies)


def activation_bytes(w: Workload) -> float:
    """Peak activation bytes of one micro-batch: every block's kept tensors, one block's
    recomputation, and the logits with their gradient (fp32)."""
    kept, transient = ACTIVATIONS[w.checkpointing]
    act_bytes = 2.0 if w.precision == "bf16" else 4.0
    sbh = w.seq_len * w.micro_batch * w.n_embd
    return (w.n_layer * kept + transient) * sbh * act_bytes + 2 * w.micro_batch * w.seq_len * w.vocab * 4.0


def recompute_s(w: Workload, hw: Hardware, fwd_s: float) -> float:
    """Extra backward time of activation checkpointing per micro-batch: full runs every block's
    forward again (bounded above by the whole forward); selective recomputes element-wise work."""
    if w.checkpointing == "full":
        return fwd_s
    if w.checkpointing == "selective":
        return RECOMPUTED_ELEMENTWISE * w.n_layer * w.seq_len * w.micro_batch * w.n_embd * hw.elementwise_cost
    return 0.0


def memory(strategy: str | Spec, w: Workload, p: int, compress: str | Spec = "none") -> dict[str, float]:
    """Bytes per rank: fp32 parameters, gradients, AdamW moments and strategy extras (the catalog
    entry's memory function, given the spec's options), error feedback of a compressor, and the
    activations of one micro-batch (:func:`activation_bytes`, with the workload's activation
    checkpointing)."""
    c = compress if isinstance(compress, Spec) else parse_spec(compress, COMPRESSOR_SCHEMA, "compress")
    s = strategy if isinstance(strategy, Spec) else parse_spec(strategy, STRATEGY_SCHEMA, "strategy")
    params, grads, opt, extra = catalog.resolve(catalog.strategy(s.name).memory)(w, p, s.options)
    if catalog.compressor(c.name).error_feedback:
        extra += 4.0 * w.n_trainable
    activations = activation_bytes(w)
    total = params + grads + opt + extra + activations
    return {
        "params": params,
        "grads": grads,
        "optimizer": opt,
        "extra": extra,
        "activations": activations,
        "total": total,
    }


Held = tuple[float, float, float, float]  # params, grads, optimizer, extra: bytes per rank
Options = Mapping[str, Any]  # the strategy spec's options


def memory_replicated(w: Workload, p: int, o: Options) -> Held:
    """The ZeRO paper's yardstick (Rajbhandari et al. 2020): 4Ψ + 4Ψ + 8Ψ bytes for fp32 AdamW,
    Ψ the trainable parameters (frozen ones add their 4 bytes each to the parameters only)."""
    psi = 4.0 * w.n_trainable
    return psi + frozen_bytes(w), psi, 2 * psi, 0.0


def memory_zero1(w: Workload, p: int, o: Options) -> Held:
    psi = 4.0 * w.n_trainable
    return psi + frozen_bytes(w), psi, 2 * psi / p, 0.0


def memory_zero2(w: Workload, p: int, o: Options) -> Held:
    psi = 4.0 * w.n_trainable
    return psi + frozen_bytes(w), psi / p + 2 * w.bucket_bytes, 2 * psi / p, 0.0  # two buckets in flight


def memory_zero3(w: Workload, p: int, o: Options) -> Held:
    """Shards + the root and the block in use; with ``reshard=false`` every block stays gathered
    from its forward to its backward, so at the end of forward all of them are."""
    psi, us = 4.0 * w.n_trainable, units(w)
    held = us[-1] + max(us[:-1] or [0]) if o.get("reshard", True) else sum(us)
    return frozen_bytes(w) + psi / p + held, psi / p + 2 * max(us), 2 * psi / p, 0.0


def memory_diloco(w: Workload, p: int, o: Options) -> Held:
    """+ the outer parameters and momentum (8Ψ); quantised sends keep a residual (4Ψ, and the
    owner's Ψ/p); ``keep=true`` holds the fragment in flight (4Ψ/P)."""
    psi = 4.0 * w.n_trainable
    extra = 2 * psi
    if o.get("quant", "fp32") in ("int8", "int4"):
        extra += psi + psi / p
    elif o.get("quant") == "bf16":
        extra += psi
    if o.get("keep") and int(o.get("overlap", 0)) > 0:
        extra += psi / int(o.get("fragments", 1))
    return psi + frozen_bytes(w), psi, 2 * psi, extra
