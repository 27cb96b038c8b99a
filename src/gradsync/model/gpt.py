"""A GPT decoder (Radford et al. 2019): pre-LayerNorm blocks, causal self-attention through
``scaled_dot_product_attention``, and an output head tied to the token embedding.

The model computes its own loss so that every strategy calls it the same way:
``loss = model(idx, targets)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradsync.core.shapes import PRESETS, GPTShape
from gradsync.model.generation import generate

__all__ = ["GPT", "GPTShape", "PRESETS", "build_gpt", "gpt_from_config"]

if TYPE_CHECKING:
    from gradsync.core.config import ModelConfig


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection; causal for the GPT, bidirectional
    for the BERT encoder. Dropout on the attention weights and on the output."""

    def __init__(self, s: GPTShape, causal: bool = True) -> None:
        super().__init__()
        self.causal = causal
        self.n_head = s.n_head
        self.qkv = nn.Linear(s.n_embd, 3 * s.n_embd)
        self.proj = nn.Linear(s.n_embd, s.n_embd)
        self.dropout = s.dropout
        self.resid_drop = nn.Dropout(s.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=self.causal, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, nh, T, hs) -> (B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, s: GPTShape) -> None:
        super().__init__()
        self.fc = nn.Linear(s.n_embd, 4 * s.n_embd)
        self.proj = nn.Linear(4 * s.n_embd, s.n_embd)
        self.drop = nn.Dropout(s.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, s: GPTShape) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(s.n_embd)
        self.attn = SelfAttention(s)
        self.ln2 = nn.LayerNorm(s.n_embd)
        self.mlp = MLP(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, shape: GPTShape) -> None:
        super().__init__()
        self.shape = shape
        self.wte = nn.Embedding(shape.vocab_size, shape.n_embd)
        self.wpe = nn.Embedding(shape.block_size, shape.n_embd)
        self.drop = nn.Dropout(shape.dropout)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.n_layer))
        self.ln_f = nn.LayerNorm(shape.n_embd)
        self.lm_head = nn.Linear(shape.n_embd, shape.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017)
        self.apply(self._init)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer) so the residual stream's
        # variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * shape.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy if ``targets`` is given, else logits (B, T, vocab)."""
        B, T = idx.shape
        if self.shape.block_size < T:
            raise ValueError(f"sequence length {T} exceeds block_size {self.shape.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once). ``non_embedding`` drops the position embedding."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (see :meth:`gradsync.core.shapes.GPTShape.flops_per_token`)."""
        return self.shape.flops_per_token(seq_len)

    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.8,
        top_k: int | None = 40,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` continuations of ``idx`` (B, T) autoregressively."""
        return generate(self, idx, max_new_tokens, self.shape.block_size, temperature, top_k, generator)


def build_gpt(preset: str, vocab_size: int, block_size: int, dropout: float = 0.0, **overrides: int | None) -> GPT:
    return GPT(GPTShape.from_preset(preset, vocab_size, block_size, dropout, **overrides))


def gpt_from_config(model: ModelConfig, vocab_size: int, block_size: int) -> GPT:
    """The GPT a run's ``[model]`` config describes (the trainer and ``gradsync sample`` agree)."""
    return build_gpt(
        model.preset,
        vocab_size,
        block_size,
        model.dropout,
        n_layer=model.n_layer,
        n_head=model.n_head,
        n_embd=model.n_embd,
    )
