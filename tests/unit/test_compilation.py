"""``--compile`` makes one graph per block (so a block's gradients leave backward when it ends and
buckets still overlap); a model without blocks is compiled whole. Compiling is lazy: nothing is
traced here, only what was wrapped is checked."""

from __future__ import annotations

import torch.nn as nn

from gradsync.model.compilation import compile_per_block
from gradsync.model.gpt import GPT, GPTShape


def _compiled(m: nn.Module) -> bool:
    return getattr(m, "_compiled_call_impl", None) is not None


def test_each_block_of_a_gpt_is_its_own_graph_and_the_rest_stays_eager() -> None:
    model = GPT(GPTShape(n_layer=3, n_head=2, n_embd=16, vocab_size=32, block_size=8))
    assert compile_per_block(model) == 3
    assert [_compiled(b) for b in model.blocks] == [True] * 3
    assert not _compiled(model)
    assert sorted(model.state_dict()) == sorted(GPT(model.shape).state_dict())  # names unchanged


def test_a_model_without_blocks_is_compiled_whole() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert compile_per_block(model) == 1
    assert _compiled(model)


def test_blocks_inside_a_block_compile_with_it() -> None:
    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.experts = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

    model = nn.Sequential(nn.Embedding(8, 4), nn.ModuleList([Layer(), Layer()]))
    assert compile_per_block(model) == 2
    layers = model[1]
    assert all(_compiled(layer) and not any(_compiled(e) for e in layer.experts) for layer in layers)
