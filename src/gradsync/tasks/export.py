"""Trained weights out, in formats other tools load.

- ``safetensors`` (any task): ``model.safetensors`` with the model's state (tied tensors stored
  once each, as separate copies), plus the run's ``config.toml`` and ``task.json``.
- ``hf``: a folder ``transformers`` loads with ``from_pretrained``: ``config.json``,
  ``model.safetensors`` and, when the run had one, the tokenizer. ``gpt`` becomes a
  ``GPT2LMHeadModel`` (same math: tanh GELU, pre-LayerNorm, tied head), ``bert`` a
  ``BertForMaskedLM`` (one token type, exported as zeros), and the ``hf-*`` tasks their own class.

The folder is written beside its destination and renamed into place, so a failed export leaves
nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from gradsync.core.errors import ConfigError
from gradsync.data.tokenizers import BPETokenizer, ByteTokenizer
from gradsync.model import GPT
from gradsync.model.bert import LN_EPS, Bert
from gradsync.tasks import Task, load_trained
from gradsync.tasks.hf import HFCausalLM, HFMaskedLM, _transformers
from gradsync.tasks.lm import TokenTask

FORMATS = ("hf", "safetensors")


def export(source: str | Path, fmt: str, out: str | Path) -> Path:
    """Export the model of ``source`` (a checkpoint, or a run folder's newest intact one) to the
    new folder ``out`` in format ``fmt``; returns ``out``."""
    if fmt not in FORMATS:
        raise ConfigError(f"export: --format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"export: '{out}' already exists and is not an empty folder; choose a new one")
    task, model, ckpt_path = load_trained(source)
    writer: Callable[[Task, nn.Module, Path], None] = _safetensors if fmt == "safetensors" else _hf
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        writer(task, model, tmp)
        (tmp / "gradsync.json").write_text(
            json.dumps({"task": task.name, "checkpoint": str(ckpt_path), "format": fmt}, indent=1), encoding="utf-8"
        )
        if out.exists():
            out.rmdir()
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _safetensors(task: Task, model: nn.Module, out: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"task": task.name})
    (out / "config.toml").write_text(task.cfg.to_toml(), encoding="utf-8")


def _hf(task: Task, model: nn.Module, out: Path) -> None:
    if isinstance(model, GPT):
        hf = gpt_to_hf(model)
    elif isinstance(model, Bert):
        hf = bert_to_hf(model)
    elif isinstance(model, (HFCausalLM, HFMaskedLM)):
        hf = model.hf
    else:
        raise ConfigError(
            f"export: --format hf knows gpt, bert and the hf-* tasks, not task {task.name}; use --format safetensors"
        )
    hf.save_pretrained(str(out))  # type: ignore[operator]  # a transformers model, typed as nn.Module
    if isinstance(task, TokenTask):
        _save_tokenizer(task, out, masked=isinstance(model, Bert))


def _save_tokenizer(task: TokenTask, out: Path, masked: bool) -> None:
    tok = task.tokenizer
    if not isinstance(tok, (ByteTokenizer, BPETokenizer)):
        return  # pre-tokenized or synthetic data: the run had no tokenizer
    tf = _transformers()
    hf_tok: Any = tok.as_hf()
    extra = {}
    if masked:
        if hf_tok.token_to_id("[MASK]") is None:
            hf_tok.add_special_tokens(["[MASK]"])  # the id after the corpus vocabulary, as trained
        extra["mask_token"] = "[MASK]"
    tf.PreTrainedTokenizerFast(tokenizer_object=hf_tok, **extra).save_pretrained(str(out))


def gpt_to_hf(model: GPT) -> nn.Module:
    """gradsync's GPT as a ``transformers.GPT2LMHeadModel`` with the same weights. GPT-2 stores
    its linear layers as ``Conv1D`` (in, out), the transpose of ``nn.Linear``'s (out, in)."""
    tf = _transformers()
    s = model.shape
    config = tf.GPT2Config(
        vocab_size=s.vocab_size,
        n_positions=s.block_size,
        n_embd=s.n_embd,
        n_layer=s.n_layer,
        n_head=s.n_head,
        n_inner=4 * s.n_embd,
        activation_function="gelu_new",
        resid_pdrop=s.dropout,
        embd_pdrop=s.dropout,
        attn_pdrop=s.dropout,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
    )
    src = model.state_dict()
    state = {
        "transformer.wte.weight": src["wte.weight"],
        "transformer.wpe.weight": src["wpe.weight"],
        "transformer.ln_f.weight": src["ln_f.weight"],
        "transformer.ln_f.bias": src["ln_f.bias"],
        "lm_head.weight": src["wte.weight"],
    }
    for i in range(s.n_layer):
        a, b = f"blocks.{i}.", f"transformer.h.{i}."
        for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            state[b + theirs + ".weight"] = src[a + ours + ".weight"]
            state[b + theirs + ".bias"] = src[a + ours + ".bias"]
        for ours, theirs in (
            ("attn.qkv", "attn.c_attn"),
            ("attn.proj", "attn.c_proj"),
            ("mlp.fc", "mlp.c_fc"),
            ("mlp.proj", "mlp.c_proj"),
        ):
            state[b + theirs + ".weight"] = src[a + ours + ".weight"].t()
            state[b + theirs + ".bias"] = src[a + ours + ".bias"]
    return _filled(tf.GPT2LMHeadModel(config), state)


def bert_to_hf(model: Bert) -> nn.Module:
    """gradsync's BERT as a ``transformers.BertForMaskedLM`` with the same weights (the fused
    query/key/value projection split in three)."""
    tf = _transformers()
    s = model.shape
    c = s.n_embd
    config = tf.BertConfig(
        vocab_size=s.vocab_size,
        hidden_size=c,
        num_hidden_layers=s.n_layer,
        num_attention_heads=s.n_head,
        intermediate_size=4 * c,
        hidden_act="gelu",
        hidden_dropout_prob=s.dropout,
        attention_probs_dropout_prob=s.dropout,
        max_position_embeddings=s.block_size,
        type_vocab_size=1,
        layer_norm_eps=LN_EPS,
        pad_token_id=None,
        tie_word_embeddings=True,
    )
    src = model.state_dict()
    state = {
        "bert.embeddings.word_embeddings.weight": src["wte.weight"],
        "bert.embeddings.position_embeddings.weight": src["wpe.weight"],
        "bert.embeddings.token_type_embeddings.weight": torch.zeros(1, c),
        "bert.embeddings.LayerNorm.weight": src["ln_emb.weight"],
        "bert.embeddings.LayerNorm.bias": src["ln_emb.bias"],
        "cls.predictions.transform.dense.weight": src["head.weight"],
        "cls.predictions.transform.dense.bias": src["head.bias"],
        "cls.predictions.transform.LayerNorm.weight": src["ln_head.weight"],
        "cls.predictions.transform.LayerNorm.bias": src["ln_head.bias"],
        "cls.predictions.decoder.weight": src["wte.weight"],
        "cls.predictions.bias": src["decoder_bias"],
        "cls.predictions.decoder.bias": src["decoder_bias"],
    }
    for i in range(s.n_layer):
        a, b = f"blocks.{i}.", f"bert.encoder.layer.{i}."
        qkv_w, qkv_b = src[a + "attn.qkv.weight"], src[a + "attn.qkv.bias"]
        for j, name in enumerate(("query", "key", "value")):
            state[b + f"attention.self.{name}.weight"] = qkv_w[j * c : (j + 1) * c]
            state[b + f"attention.self.{name}.bias"] = qkv_b[j * c : (j + 1) * c]
        for ours, theirs in (
            ("attn.proj", "attention.output.dense"),
            ("ln1", "attention.output.LayerNorm"),
            ("fc", "intermediate.dense"),
            ("out", "output.dense"),
            ("ln2", "output.LayerNorm"),
        ):
            state[b + theirs + ".weight"] = src[a + ours + ".weight"]
            state[b + theirs + ".bias"] = src[a + ours + ".bias"]
    return _filled(tf.BertForMaskedLM(config), state)


def _filled(hf: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """``hf`` with ``state`` loaded; every tensor of ``hf`` must be given (no silent gaps)."""
    expected = set(hf.state_dict())
    missing, unknown = expected - set(state), set(state) - expected
    if missing or unknown:
        raise RuntimeError(
            f"export mapping is out of date with transformers: missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    hf.load_state_dict({k: v.contiguous() for k, v in state.items()})
    return hf.eval()


__all__ = ["FORMATS", "bert_to_hf", "export", "gpt_to_hf"]
