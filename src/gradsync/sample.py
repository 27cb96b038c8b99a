"""Text from a causal language model: continue a prompt (the end of training, ``gradsync sample``)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from gradsync.data.tokenizers import Tokenizer


@torch.no_grad()
def sample_text(model: nn.Module, tokenizer: Tokenizer | None, fallback_ids: Sequence[int], prompt: str,
                n_tokens: int, seed: int, temperature: float = 0.8, top_k: int | None = 40) -> str:
    """Continue ``prompt`` by ``n_tokens`` with ``model.generate``. Without a tokenizer
    (pre-tokenized or synthetic data) the prompt is ``fallback_ids`` (the first validation tokens)
    and the result is printed as token ids."""
    device = next(model.parameters()).device
    if tokenizer is not None:
        ids = tokenizer.encode(prompt.encode()).astype("int64").tolist() or [0]
    else:
        ids = [int(i) for i in fallback_ids]
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    out = model.generate(torch.tensor([ids], device=device), n_tokens,  # type: ignore[operator]
                         temperature=temperature, top_k=top_k, generator=gen)[0].tolist()
    model.train(was_training)
    return tokenizer.decode(out) if tokenizer is not None else " ".join(map(str, out))
