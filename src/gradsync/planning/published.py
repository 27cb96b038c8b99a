"""Published training runs that the device presets' efficiencies come from.

A preset's ``efficiency`` is the fraction of its datasheet peak that the model's forward and
backward reach. One number for every GPU (0.45 before) is wrong both ways: torchtitan reached
58 % MFU on A100s, and 36 % on power-limited H100s. So each preset takes the efficiency for which
the cost model, pricing the published run (the same model dimensions, devices, batch, activation
checkpointing and FSDP2), predicts the MFU that run measured (:func:`fit_efficiency`), with its
communication priced on the node's own link: torchtitan gathers bf16 parameters and prefetches
them, so its communication is hidden at this size, whereas the cost model prices gradsync's fp32
collectives; the fitted number is then the device's compute efficiency alone. MFU, not
tokens/s, is matched because gradsync's GPT (4x MLP, tied embeddings) is not Llama (SwiGLU,
grouped-query attention, untied embeddings): MFU counts each model's own FLOPs, so the
fraction transfers. The published MFU is recomputed from the published tokens/s with torchtitan's
own count, 6 N + 12 L d T FLOPs per token. ``tests/unit/test_published_runs.py`` checks that the
presets still reproduce these runs whenever the cost model changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gradsync.core.devices import DATASHEETS
from gradsync.planning import costmodel as cm


@dataclass(frozen=True)
class PublishedRun:
    what: str
    device: str  # a key of gradsync.core.devices.DATASHEETS, whose peak the publication's MFU divides by
    params: float  # the published model's parameter count N
    n_layer: int
    n_head: int
    n_embd: int
    vocab: int
    seq_len: int
    devices: int
    intra: str  # the node's link (a network preset of the cost model), on which the fit prices communication
    local_batch: int  # sequences per device per step
    checkpointing: str
    tokens_per_s_per_device: float
    source: str

    @property
    def mfu(self) -> float:
        """The run's MFU by torchtitan's count: (6 N + 12 L d T) FLOPs per token."""
        per_token = 6 * self.params + 12 * self.n_layer * self.n_embd * self.seq_len
        return self.tokens_per_s_per_device * per_token / DATASHEETS[self.device].peak_flops


_LLAMA3_8B = dict(params=8.03e9, n_layer=32, n_head=32, n_embd=4096, vocab=128256, seq_len=8192)
PUBLISHED_RUNS: tuple[PublishedRun, ...] = (
    PublishedRun(
        "torchtitan: Llama 3 8B, FSDP2, 64 x A100 80GB, local batch 1, selective op AC",
        "a100-80gb",
        **_LLAMA3_8B,  # type: ignore[arg-type]
        devices=64,
        intra="nvlink",
        local_batch=1,
        checkpointing="selective",
        tokens_per_s_per_device=2973,
        source="github.com/pytorch/torchtitan docs/performance.md (2024), Llama 3 table: 2,973 WPS, 58.2 % MFU",
    ),
    PublishedRun(
        "torchtitan: Llama 3.1 8B, FSDP2, 8 x H100 (96 GB HBM2e, 500 W limit), local batch 2, selective AC",
        "h100",
        **_LLAMA3_8B,  # type: ignore[arg-type]
        devices=8,
        intra="nvlink4",
        local_batch=2,
        checkpointing="selective",
        tokens_per_s_per_device=5762,
        source="Liang et al., TorchTitan (ICLR 2025), Table 1 (FSDP, no torch.compile): 5,762 tokens/s per GPU",
    ),
)


def predict_run(run: PublishedRun, efficiency: float) -> cm.Prediction:
    """The cost model's prediction of ``run`` on its device preset at ``efficiency``."""
    hw = replace(cm.device_preset(run.device), efficiency=efficiency)
    w = cm.gpt_workload(run.n_layer, run.n_head, run.n_embd, run.vocab, run.seq_len, run.local_batch, precision="bf16")
    w = replace(w, checkpointing=run.checkpointing)
    return cm.predict("torch-fsdp", w, run.devices, hw, cm.network_preset(run.intra))


def fit_efficiency(run: PublishedRun) -> float:
    """The efficiency at which the cost model predicts the MFU ``run`` measured (bisection: the
    predicted MFU grows with the efficiency)."""
    lo, hi = 0.01, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if predict_run(run, mid).mfu < run.mfu:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
