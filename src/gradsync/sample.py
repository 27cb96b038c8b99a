"""Text generation from a model in memory (end of training) or from a checkpoint
(``gradsync sample``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gradsync import checkpoint as ckpt
from gradsync.config import build_config
from gradsync.data import TokenData, load_tokens
from gradsync.errors import CheckpointError
from gradsync.model import GPT, gpt_from_config


@torch.no_grad()
def sample_text(model: GPT, data: TokenData, prompt: str, n_tokens: int, seed: int,
                temperature: float = 0.8, top_k: int | None = 40) -> str:
    """Continue ``prompt`` by ``n_tokens``. Without a tokenizer (pre-tokenized or synthetic data)
    the prompt is the first validation tokens and the result is printed as token ids."""
    device = next(model.parameters()).device
    tok = data.tokenizer
    if tok is not None:
        ids = tok.encode(prompt.encode()).astype(np.int64).tolist() or [0]
    else:
        ids = data.val.head(8).astype(np.int64).tolist()
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    out = model.generate(torch.tensor([ids], device=device), n_tokens, temperature=temperature,
                         top_k=top_k, generator=gen)[0].tolist()
    model.train(was_training)
    return tok.decode(out) if tok is not None else " ".join(map(str, out))


def load_model(path: str | Path) -> tuple[GPT, TokenData]:
    """The model saved in a checkpoint (a file, or the latest in a run folder) and its data."""
    resolved = ckpt.resolve_resume(str(path), Path(path))
    if resolved is None:
        raise CheckpointError(f"no checkpoint found at '{path}'")
    state = ckpt.load_checkpoint(resolved)
    cfg = build_config(state["config"])
    data = load_tokens(cfg.data)
    model = gpt_from_config(cfg.model, data.vocab_size, cfg.data.seq_len)
    try:
        model.load_state_dict(state["strategy"]["model"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint '{resolved}' holds no model matching its config ({e})") from None
    return model, data
