"""What the language-model tasks share: a token corpus (``[data]``), its tokenizer, and a run
folder that keeps both what it needs to be used later (``tokenizer.json``, ``task.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.nn as nn

from gradsync.core.config import Config
from gradsync.core.errors import CheckpointError
from gradsync.core.files import atomic_write_bytes
from gradsync.data import TokenData, TokenSequences, load_tokens
from gradsync.data.tokenizers import BPETokenizer, ByteTokenizer, Tokenizer
from gradsync.model.generation import sample_text
from gradsync.tasks.base import Task

TASK_FILE = "task.json"
TOKENIZER_FILE = "tokenizer.json"


class TokenTask(Task):
    """A task on a token corpus. The corpus is read when first needed, so a task rebuilt from a
    run folder (:meth:`from_run`) samples and exports without it."""

    def __init__(self, cfg: Config, data: TokenData | None = None) -> None:
        super().__init__(cfg)
        self._data = data
        self._saved: dict[str, Any] | None = None  # what a run folder recorded, when rebuilt from one
        self._saved_tokenizer: Tokenizer | None = None
        self.tokens_per_sample = cfg.data.seq_len

    @classmethod
    def from_run(cls, cfg: Config, run_dir: Path) -> TokenTask:
        """The task of a finished run, from its folder's ``task.json`` and tokenizer (no corpus)."""
        task = cls(cfg)
        path = run_dir / TASK_FILE
        if path.is_file():
            try:
                task._saved = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise CheckpointError(f"run file '{path}' is unreadable: {e}") from None
            tok = run_dir / TOKENIZER_FILE
            task._saved_tokenizer = (
                BPETokenizer.from_file(tok)
                if tok.is_file()
                else (ByteTokenizer() if task._saved.get("tokenizer") == "byte" else None)
            )
        return task

    @property
    def data(self) -> TokenData:
        if self._data is None:
            self._data = load_tokens(self.cfg.data)
        return self._data

    @property
    def vocab_size(self) -> int:
        """Tokens the corpus and tokenizer use (a task may add its own, e.g. [MASK])."""
        return int(self._saved["vocab_size"]) if self._saved else self.data.vocab_size

    @property
    def tokenizer(self) -> Tokenizer | None:
        return self._saved_tokenizer if self._saved else self.data.tokenizer

    @property
    def description(self) -> str:  # type: ignore[override]
        return self.data.description

    @property
    def entropy_rate(self) -> float | None:  # type: ignore[override]
        return self.data.entropy_rate

    def train_examples(self) -> TokenSequences:
        return TokenSequences(self.data.train, self.cfg.data.seq_len)

    def eval_examples(self) -> TokenSequences:
        return TokenSequences(self.data.val, self.cfg.data.seq_len)

    def continue_text(
        self, model: nn.Module, prompt: str, n_tokens: int, seed: int, temperature: float, top_k: int | None
    ) -> str:
        """A causal LM's sample: ``prompt`` continued (without a tokenizer, the first validation
        tokens, as ids)."""
        tok = self.tokenizer
        return sample_text(
            model, tok, [] if tok is not None else self.prompt_fallback(), prompt, n_tokens, seed, temperature, top_k
        )

    def prompt_fallback(self) -> list[int]:
        """Without a tokenizer, a sample continues the first validation tokens."""
        if self._saved and self._saved.get("prompt_ids"):
            return list(self._saved["prompt_ids"])
        return [int(i) for i in self.data.val.head(8)]

    def save_assets(self, run_dir: Path) -> None:
        tok = self.tokenizer
        kind = "byte" if isinstance(tok, ByteTokenizer) else TOKENIZER_FILE if tok is not None else None
        if isinstance(tok, BPETokenizer):
            tok.save(run_dir / TOKENIZER_FILE)
        info = {
            "task": self.name,
            "vocab_size": self.vocab_size,
            "tokenizer": kind,
            "prompt_ids": None if tok is not None else self.prompt_fallback(),
        }
        atomic_write_bytes(run_dir / TASK_FILE, json.dumps(info, indent=1).encode())
