"""``--task gpt`` (the default): causal language modelling with gradsync's GPT on a token corpus."""

from __future__ import annotations

import torch.nn as nn

from gradsync.model import GPT, gpt_from_config
from gradsync.tasks.lm import TokenTask


class GPTTask(TokenTask):
    """Next-token prediction; the loss is the mean cross-entropy over every position."""

    name = "gpt"

    def build_model(self) -> GPT:
        return gpt_from_config(self.cfg.model, self.vocab_size, self.cfg.data.seq_len)

    def flops_per_sample(self, model: nn.Module) -> float:
        """6N + 12·L·C·T per token (PaLM appendix B), times T tokens."""
        assert isinstance(model, GPT)
        t = self.cfg.data.seq_len
        return model.flops_per_token(t) * t

    def predict(
        self, model: nn.Module, prompt: str, n_tokens: int, seed: int, temperature: float = 0.8, top_k: int | None = 40
    ) -> str:
        return self.continue_text(model, prompt, n_tokens, seed, temperature, top_k)
