"""A BERT encoder for masked language modelling (Devlin et al. 2019), laid out as Hugging Face's
``BertForMaskedLM`` is, so that ``gradsync export --format hf`` maps it one to one: post-LayerNorm
blocks, bidirectional attention, GELU (erf), and a prediction head (dense, GELU, LayerNorm) whose
decoder is tied to the word embedding. One segment only (no token types: exported as zeros).

Like the GPT it computes its own loss: ``loss = model(idx, labels)``, mean cross-entropy over the
positions whose label is not -100.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradsync.core.shapes import GPTShape
from gradsync.model.gpt import SelfAttention

IGNORE = -100
LN_EPS = 1e-12  # BERT's


class EncoderBlock(nn.Module):
    """x = LN(x + attn(x)); x = LN(x + mlp(x)) — the original post-LayerNorm order."""

    def __init__(self, s: GPTShape) -> None:
        super().__init__()
        self.attn = SelfAttention(s, causal=False)
        self.ln1 = nn.LayerNorm(s.n_embd, eps=LN_EPS)
        self.fc = nn.Linear(s.n_embd, 4 * s.n_embd)
        self.out = nn.Linear(4 * s.n_embd, s.n_embd)
        self.ln2 = nn.LayerNorm(s.n_embd, eps=LN_EPS)
        self.drop = nn.Dropout(s.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.attn(x))  # the attention applies its own output dropout
        return self.ln2(x + self.drop(self.out(F.gelu(self.fc(x)))))


class Bert(nn.Module):
    """``shape.vocab_size`` includes the [MASK] token."""

    def __init__(self, shape: GPTShape) -> None:
        super().__init__()
        self.shape = shape
        c = shape.n_embd
        self.wte = nn.Embedding(shape.vocab_size, c)
        self.wpe = nn.Embedding(shape.block_size, c)
        self.ln_emb = nn.LayerNorm(c, eps=LN_EPS)
        self.drop = nn.Dropout(shape.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(shape) for _ in range(shape.n_layer))
        self.head = nn.Linear(c, c)
        self.ln_head = nn.LayerNorm(c, eps=LN_EPS)
        self.decoder_bias = nn.Parameter(torch.zeros(shape.vocab_size))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean masked-token cross-entropy if ``labels`` is given, else logits (B, T, vocab)."""
        B, T = idx.shape
        if self.shape.block_size < T:
            raise ValueError(f"sequence length {T} exceeds block_size {self.shape.block_size}")
        x = self.drop(self.ln_emb(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))))
        for block in self.blocks:
            x = block(x)
        h = self.ln_head(F.gelu(self.head(x)))
        logits = F.linear(h, self.wte.weight, self.decoder_bias)  # decoder tied to the embedding
        if labels is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE)
