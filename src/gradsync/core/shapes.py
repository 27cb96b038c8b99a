"""The GPT's shape, without torch: presets, the tensor list, parameter count and FLOPs.

:mod:`gradsync.model.gpt` builds its modules from a :class:`GPTShape` and reports its FLOPs from
here; :mod:`gradsync.planning.costmodel` prices the same tensors. One description, so the model the cost
model plans is the model that trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Dimensions of named shapes. tiny/mini are for tests and laptops; the gpt2* rows are the
# published GPT-2 shapes (124M, 350M, 774M, 1.5B parameters with the 50257-token vocabulary).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=32),
    "mini": dict(n_layer=2, n_head=4, n_embd=64),
    "small": dict(n_layer=4, n_head=4, n_embd=128),
    "base": dict(n_layer=6, n_head=6, n_embd=384),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
}

ROOT_UNIT = -1  # the tensors outside any block (embeddings, final norm)


@dataclass(frozen=True)
class TensorShape:
    """One parameter: its name in the model's ``state_dict``, its shape, and its block (the
    ZeRO-3 unit), or ROOT_UNIT."""

    name: str
    shape: tuple[int, ...]
    unit: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class GPTShape:
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0

    @classmethod
    def from_preset(
        cls, preset: str, vocab_size: int, block_size: int, dropout: float = 0.0, **overrides: int | None
    ) -> GPTShape:
        dims = dict(PRESETS[preset])
        dims.update({k: v for k, v in overrides.items() if v is not None})
        return cls(vocab_size=vocab_size, block_size=block_size, dropout=dropout, **dims)

    def tensors(self) -> list[TensorShape]:
        """Every parameter in registration order (``model.parameters()``); the output head is
        tied to the token embedding and appears once, as ``wte.weight``."""
        h = self.n_embd
        out = [
            TensorShape("wte.weight", (self.vocab_size, h), ROOT_UNIT),
            TensorShape("wpe.weight", (self.block_size, h), ROOT_UNIT),
        ]
        for i in range(self.n_layer):
            for name, shape in (
                ("ln1.weight", (h,)),
                ("ln1.bias", (h,)),
                ("attn.qkv.weight", (3 * h, h)),
                ("attn.qkv.bias", (3 * h,)),
                ("attn.proj.weight", (h, h)),
                ("attn.proj.bias", (h,)),
                ("ln2.weight", (h,)),
                ("ln2.bias", (h,)),
                ("mlp.fc.weight", (4 * h, h)),
                ("mlp.fc.bias", (4 * h,)),
                ("mlp.proj.weight", (h, 4 * h)),
                ("mlp.proj.bias", (h,)),
            ):
                out.append(TensorShape(f"blocks.{i}.{name}", shape, i))
        out += [TensorShape("ln_f.weight", (h,), ROOT_UNIT), TensorShape("ln_f.bias", (h,), ROOT_UNIT)]
        return out

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once). ``non_embedding`` drops the position embedding."""
        n = sum(t.numel for t in self.tensors())
        return n - self.block_size * self.n_embd if non_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), as in PaLM's appendix B / nanoGPT:
        6N for the matmuls with N non-embedding parameters (the tied head counts once, as it is a
        matmul), plus 12 * L * C * T for attention scores and their weighted sums."""
        t = seq_len or self.block_size
        return 6.0 * self.num_params(non_embedding=True) + 12.0 * self.n_layer * self.n_embd * t
