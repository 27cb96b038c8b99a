"""GPT: shapes, presets, parameter counts, FLOPs per token, causality, sampling."""

from __future__ import annotations

import pytest
import torch

from gradsync.model import PRESETS, build_gpt
from gradsync.model.gpt import GPT, GPTShape


def test_forward_returns_logits_or_loss() -> None:
    m = build_gpt("tiny", 50, 16)
    x = torch.randint(0, 50, (3, 16))
    assert m(x).shape == (3, 16, 50)
    loss = m(x, torch.randint(0, 50, (3, 16)))  # an untrained model is near uniform: ln 50
    assert loss.ndim == 0 and abs(loss.item() - torch.log(torch.tensor(50.0)).item()) < 0.3


def test_attention_is_causal() -> None:
    torch.manual_seed(0)
    m = build_gpt("tiny", 50, 16).eval()
    x = torch.randint(0, 50, (1, 16))
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % 50
    a, b = m(x), m(y)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_embedding_is_tied_to_the_output_head() -> None:
    m = build_gpt("tiny", 50, 16)
    assert m.lm_head.weight is m.wte.weight


@pytest.mark.parametrize("preset,expected_millions", [("gpt2", 124.4), ("gpt2-medium", 354.8)])
def test_gpt2_presets_have_the_published_sizes(preset: str, expected_millions: float) -> None:
    shape = GPTShape.from_preset(preset, vocab_size=50257, block_size=1024)
    with torch.device("meta"):
        m = GPT(shape)
    assert m.num_params() / 1e6 == pytest.approx(expected_millions, rel=0.01)


def test_flops_per_token_follows_6n_plus_attention() -> None:
    m = build_gpt("small", 256, 128)
    s = m.shape
    n = m.num_params(non_embedding=True)
    assert m.flops_per_token(128) == 6 * n + 12 * s.n_layer * s.n_embd * 128


def test_presets_are_consistent() -> None:
    for name, d in PRESETS.items():
        assert d["n_embd"] % d["n_head"] == 0, name


def test_generate_appends_tokens_deterministically() -> None:
    m = build_gpt("tiny", 50, 16)
    idx = torch.zeros(1, 3, dtype=torch.long)
    a = m.generate(idx, 20, generator=torch.Generator().manual_seed(1))
    b = m.generate(idx, 20, generator=torch.Generator().manual_seed(1))
    assert a.shape == (1, 23) and torch.equal(a, b)
