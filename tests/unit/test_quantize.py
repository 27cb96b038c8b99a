"""Pure parts of the network strategies: block quantisation and error feedback, DiLoCo's
fragments, the node layout, and the one-line errors of the new spec options."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from gradsync.core.config import ParallelConfig
from gradsync.core.errors import ConfigError
from gradsync.parallel.diloco import fragment_params
from gradsync.parallel.grad_paths.quantize import BLOCK, LEVELS, dequantize, padded_length, payload_bytes, quantize
from gradsync.parallel.grad_paths.quantized_mean import pack, unpack


@pytest.mark.parametrize("bits", [8, 4])
def test_quantisation_error_is_at_most_half_a_step_per_block(bits: int) -> None:
    x = torch.randn(4 * BLOCK) * torch.logspace(-3, 2, 4).repeat_interleave(BLOCK)  # blocks of very different scale
    codes, scales = quantize(x, bits)
    assert codes.dtype == torch.uint8 and codes.numel() * 8 == x.numel() * bits
    assert codes.numel() + 4 * scales.numel() == payload_bytes(x.numel(), bits)
    err = (dequantize(codes, scales, bits) - x).view(-1, BLOCK).abs().amax(dim=1)
    assert torch.all(err <= scales / 2 * (1 + 1e-5))
    assert torch.allclose(scales, x.view(-1, BLOCK).abs().amax(dim=1) / LEVELS[bits])


@pytest.mark.parametrize("bits", [8, 4])
def test_the_error_quantize_keeps_is_what_decoding_loses_to_the_bit(bits: int) -> None:
    """Error feedback takes the error from the encoder's own rounded values instead of decoding the
    codes again: the residual must be x - dequantize(codes) exactly, or error feedback would carry
    an error other than the one the codes lost (a zero block included: its scale is 0)."""
    x = torch.randn(5 * BLOCK) * torch.logspace(-4, 3, 5).repeat_interleave(BLOCK)
    x[2 * BLOCK : 3 * BLOCK] = 0
    error = torch.full_like(x, float("nan"))
    codes, scales = quantize(x, bits, error_out=error)
    assert torch.equal(error, x - dequantize(codes, scales, bits))
    plain_codes, plain_scales = quantize(x, bits)
    assert torch.equal(codes, plain_codes) and torch.equal(scales, plain_scales)


def test_integers_within_the_levels_survive_4_bit_packing_exactly() -> None:
    x = torch.arange(-7, 9).float().clamp(max=7).repeat(BLOCK // 16 * 2)
    codes, scales = quantize(x, 4)
    assert torch.equal(dequantize(codes, scales, 4), x)


def test_error_feedback_sends_the_sum_not_just_the_rounding() -> None:
    """What 4-bit codes lose each time is carried to the next: over k rounds the decoded sum is
    within one step of k·x, where dropping the error would be off by up to k half-steps."""
    x = torch.full((BLOCK,), 0.3)
    x[0] = 7.0  # the scale is 1: 0.3 rounds to 0 every time without feedback
    residual, sent = torch.zeros_like(x), torch.zeros_like(x)
    for _ in range(20):
        v = x + residual
        codes, scales = quantize(v, 4)
        d = dequantize(codes, scales, 4)
        residual = v - d
        sent += d
    assert (sent - 20 * x).abs().max() <= 1.0
    plain = dequantize(*quantize(x, 4), 4)
    assert (20 * plain - 20 * x).abs().max() == pytest.approx(6.0)


@pytest.mark.parametrize("bits,chunks", [(8, 3), (4, 2), (8, 1)])
def test_codes_and_scales_share_one_buffer_split_evenly_by_chunk(bits: int, chunks: int) -> None:
    x = torch.randn(padded_length(5 * BLOCK, chunks))
    codes, scales = quantize(x, bits)
    buf = pack(codes, scales, chunks)
    assert buf.dtype == torch.uint8 and buf.numel() == payload_bytes(x.numel(), bits)
    row = buf.numel() // chunks  # what an all-to-all sends to each rank: one chunk, codes with their scales
    for r in range(chunks):
        c, s = unpack(buf[r * row : (r + 1) * row], 1, codes.numel() // chunks)
        assert torch.equal(c.view(-1), codes.view(chunks, -1)[r]) and torch.equal(
            s.view(-1), scales.view(chunks, -1)[r]
        )
    c, s = unpack(buf, chunks, codes.numel() // chunks)
    assert torch.equal(dequantize(c.view(-1), s.view(-1), bits), dequantize(codes, scales, bits))


def test_padded_length_whole_blocks_per_rank() -> None:
    assert padded_length(1, 1) == BLOCK and padded_length(BLOCK + 1, 2) == 2 * BLOCK
    assert padded_length(3 * BLOCK, 2) == 4 * BLOCK


def test_fragments_are_strided_blocks_with_the_rest_balanced() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(100, 8)  # 800 elements
            self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))  # 72 each
            self.norm = nn.LayerNorm(8)  # 16

    net = Net()
    params = list(net.parameters())
    frags = fragment_params(net, params, 2)
    names = {id(p): n for n, p in net.named_parameters()}
    assert [[names[id(p)] for p in f] for f in frags] == [
        ["embed.weight", "blocks.0.weight", "blocks.0.bias", "blocks.2.weight", "blocks.2.bias"],
        ["blocks.1.weight", "blocks.1.bias", "blocks.3.weight", "blocks.3.bias", "norm.weight", "norm.bias"],
    ]
    assert fragment_params(net, params, 1) == [params]
    with pytest.raises(ConfigError, match="fragments=5 needs at least 5 blocks"):
        fragment_params(net, params, 5)


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("diloco:8,fragments=3", "fragments=3 must divide H=8"),
        ("diloco:8,overlap=9", "overlap=9 must be <= H=8"),
        ("diloco:8,quant=int3", "quant must be one of fp32, bf16, int8, int4"),
        ("diloco:8,mix=1", "mix must be in [0, 1)"),
        ("diloco:8,fragments=0", "fragments must be a positive integer"),
        ("diloco:8,overlap=1,keep=true,mix=0.5", "keep=true and mix=0.5 both say what a landing fragment becomes"),
    ],
)
def test_streaming_specs_say_what_to_fix(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        ParallelConfig(strategy=spec)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "strategy, compress, needle",
    [
        ("bucketed:hierarchical=true", "fp16", "does not compose with bucketed:hierarchical=true"),
        ("bucketed:hierarchical=maybe", "none", "hierarchical must be of type bool"),
        ("zero3:prefetch=-1", "none", "prefetch must be >= 0"),
        ("zero2:hybrid=yes please", "none", "hybrid must be of type bool"),
    ],
)
def test_hierarchical_and_prefetch_specs_say_what_to_fix(strategy: str, compress: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        ParallelConfig(strategy=strategy, compress=compress)
    assert needle in str(e.value) and "\n" not in str(e.value)


class _Told:
    """Stands in for a Comm: what every rank said about its node."""

    def __init__(self, seen: list[tuple[str, int]]) -> None:
        self.seen = seen

    def all_gather_object(self, obj: object) -> list[tuple[str, int]]:
        return self.seen


def test_node_layout_groups_ranks_by_node_and_local_rank() -> None:
    from gradsync.runtime.topology import node_layout

    told = [("node1", 1), ("node0", 0), ("node1", 0), ("node0", 1)]
    # by local rank inside a node; nodes ordered by their lowest rank (rank 0's node first)
    assert node_layout(_Told(told)).nodes == ((2, 0), (1, 3))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="same number of workers on every node; this job has 2, 1"):
        node_layout(_Told([("a", 0), ("a", 1), ("b", 0)]))  # type: ignore[arg-type]
