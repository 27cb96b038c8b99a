"""``--task hf-causal-lm`` and ``--task hf-masked-lm``: a Hugging Face ``transformers`` model
trained on gradsync's corpora, with every strategy.

The model comes from ``--hf.config config.json`` (random initialisation, seeded like any run) or
``--hf.pretrained DIR`` (weights the user has on disk, for fine-tuning; nothing is downloaded).
It is wrapped so that, like gradsync's own models, ``forward(inputs, targets)`` returns the mean
loss; the strategies see an ordinary ``nn.Module``. ``transformers`` is an optional extra:
``pip install 'gradsync[hf]'``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradsync.core.errors import ConfigError
from gradsync.data.tokenizers import BPETokenizer
from gradsync.model.bert import IGNORE
from gradsync.model.generation import generate
from gradsync.tasks.bert import MaskedLMTask
from gradsync.tasks.lm import TokenTask

HF_CONFIG_FILE = "hf_config.json"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError("the hf-* tasks need Hugging Face transformers: pip install 'gradsync[hf]'") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def read_hf_config(path: str) -> Any:
    """A ``transformers`` config from a ``config.json`` (its ``model_type`` picks the class)."""
    tf = _transformers()
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"hf.config '{path}' cannot be read: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"hf.config '{path}' is not valid JSON: {e}") from None
    if not isinstance(d, dict) or "model_type" not in d:
        raise ConfigError(
            f'hf.config \'{path}\' has no "model_type" (e.g. "gpt2", "bert"); is it a transformers config.json?'
        )
    try:
        return tf.AutoConfig.for_model(**d)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"hf.config '{path}' does not describe a transformers model: {e}") from None


class HFCausalLM(nn.Module):
    """``forward(idx, targets)``: mean next-token cross-entropy (``targets`` are already shifted,
    as gradsync's batches give them); ``forward(idx)``: logits."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf
        c: Any = hf.config
        self.block_size = int(getattr(c, "n_positions", None) or c.max_position_embeddings)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.hf(input_ids=idx).logits
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))

    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.8,
        top_k: int | None = 40,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return generate(self, idx, max_new_tokens, self.block_size, temperature, top_k, generator)


class HFMaskedLM(nn.Module):
    """``forward(idx, labels)``: mean cross-entropy over positions whose label is not -100."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, idx: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.hf(input_ids=idx).logits
        if labels is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE)


class HFModelSource:
    """Where an hf-* task's model comes from: ``hf.config`` or ``hf.pretrained``, through the
    ``transformers`` Auto class of the task's head."""

    def __init__(self, task: TokenTask, auto_class: str, vocab_needed: int) -> None:
        self.task = task
        self.cfg = task.cfg.hf
        self.auto_class = auto_class
        self.vocab_needed = vocab_needed

    def config(self) -> Any:
        if not (self.cfg.config or self.cfg.pretrained):
            raise ConfigError(
                f"task {self.task.name} needs --hf.config CONFIG.json (random init) or "
                "--hf.pretrained DIR (weights on disk)"
            )
        return read_hf_config(self.cfg.config or self.cfg.pretrained)

    def build(self) -> nn.Module:
        auto = getattr(_transformers(), self.auto_class)
        config = self.config()
        if config.vocab_size < self.vocab_needed:
            raise ConfigError(
                f"the HF model's vocab_size ({config.vocab_size}) is smaller than the data needs "
                f"({self.vocab_needed}); use a matching --tokenizer or a larger vocab_size"
            )
        if self.cfg.pretrained:
            try:
                return auto.from_pretrained(self.cfg.pretrained, local_files_only=True)
            except (OSError, ValueError) as e:
                raise ConfigError(
                    f"hf.pretrained '{self.cfg.pretrained}' holds no loadable weights: {str(e).splitlines()[0]}"
                ) from None
        return auto.from_config(config)

    def save(self, run_dir: Path) -> None:
        """The model's config beside the run's tokenizer: what ``gradsync export`` writes out."""
        self.config().to_json_file(str(run_dir / HF_CONFIG_FILE))


class HFCausalLMTask(TokenTask):
    name = "hf-causal-lm"

    def build_model(self) -> HFCausalLM:
        return HFCausalLM(HFModelSource(self, "AutoModelForCausalLM", self.vocab_size).build())

    def save_assets(self, run_dir: Path) -> None:
        super().save_assets(run_dir)
        HFModelSource(self, "AutoModelForCausalLM", self.vocab_size).save(run_dir)

    def predict(
        self, model: nn.Module, prompt: str, n_tokens: int, seed: int, temperature: float = 0.8, top_k: int | None = 40
    ) -> str:
        return self.continue_text(model, prompt, n_tokens, seed, temperature, top_k)


class HFMaskedLMTask(MaskedLMTask):
    """Masked LM as ``--task bert`` does it; [MASK] is the tokenizer's own ``[MASK]`` token when
    it has one, else the id after the corpus vocabulary (the model's vocab_size must leave room)."""

    name = "hf-masked-lm"

    @property
    def mask_id(self) -> int:
        tok = self.tokenizer
        found = tok.token_id("[MASK]") if isinstance(tok, BPETokenizer) else None
        return found if found is not None else self.vocab_size

    def _source(self) -> HFModelSource:
        return HFModelSource(self, "AutoModelForMaskedLM", max(self.vocab_size, self.mask_id + 1))

    def build_model(self) -> HFMaskedLM:
        return HFMaskedLM(self._source().build())

    def save_assets(self, run_dir: Path) -> None:
        super().save_assets(run_dir)
        self._source().save(run_dir)
