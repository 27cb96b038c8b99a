"""Block-wise symmetric quantisation of fp32 vectors to 8 or 4 bits, for the bytes that cross a
slow link (streaming DiLoCo's pseudo-gradients, Douillard et al. 2025).

A vector is cut into blocks of ``BLOCK`` elements; each block is sent as integers in
[-L, L] (L = 127 for 8 bits, 7 for 4 bits; two 4-bit values share a byte) and one fp32 scale,
its largest magnitude / L. Rounding is to nearest, so the error of one element is at most half a
step, scale / 2; callers keep that error and add it to the next vector they send (error feedback),
so nothing is lost over time, only delayed.

Bytes for n elements: n (8 bits) or n / 2 (4 bits), plus 4 n / ``BLOCK`` for the scales.
"""

from __future__ import annotations

import torch

from gradsync.core.catalog import QUANT_BLOCK as BLOCK

LEVELS = {8: 127, 4: 7}


def padded_length(n: int, multiple: int = 1) -> int:
    """``n`` rounded up to whole blocks, and to a multiple of ``multiple`` blocks."""
    blocks = -(-n // BLOCK)
    return -(-blocks // multiple) * multiple * BLOCK


def payload_bytes(n: int, bits: int) -> int:
    """Bytes one vector of ``n`` elements (a whole number of blocks) takes: values + scales."""
    return n * bits // 8 + 4 * (n // BLOCK)


def quantize(x: torch.Tensor, bits: int, error_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (fp32, a whole number of blocks) -> (uint8 codes, fp32 scales per block). With
    ``error_out`` (shaped like ``x``), also what the encoding lost, ``x - dequantize(codes, scales)``
    to the bit, from the rounded values at hand: error feedback without decoding the codes again."""
    if bits not in LEVELS:
        raise ValueError(f"quantisation to {bits} bits is not implemented; use 8 or 4")
    if x.numel() % BLOCK:
        raise ValueError(f"a quantised vector holds whole blocks of {BLOCK}, got {x.numel()} elements")
    levels = LEVELS[bits]
    blocks = x.view(-1, BLOCK)
    scales = torch.maximum(blocks.amax(dim=1), blocks.amin(dim=1).neg_()).div_(levels)  # 4x abs().amax() on CPU
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.div(blocks, safe[:, None]).round_().clamp_(-levels, levels)
    if error_out is not None:  # dequantize's product: q is exactly its (code - levels)
        torch.sub(blocks, q * scales[:, None], out=error_out.view(-1, BLOCK))
    codes = q.to(torch.int16).add_(levels).to(torch.uint8).view(-1)
    if bits == 4:
        codes = (codes[0::2] << 4) | codes[1::2]
    return codes, scales


def codec_work(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The encoding work one rank does per element of a two-stage quantised mean (p = 2): encode
    with its residual, decode the codes it and its peer sent for its chunk, encode the average
    and keep that residual, decode the gathered mean. ``gradsync calibrate`` times it, so the cost
    model prices quantisation with what it costs here (allocation-heavy: far more than a few
    element-wise passes on a CPU)."""
    residual = torch.empty_like(x)
    codes, scales = quantize(x, bits, residual)
    chunk = dequantize(codes, scales, bits).add_(residual).div_(2)
    c2, s2 = quantize(chunk, bits, residual)
    return dequantize(c2, s2, bits)


def dequantize(codes: torch.Tensor, scales: torch.Tensor, bits: int) -> torch.Tensor:
    """The fp32 vector :func:`quantize` encoded."""
    levels = LEVELS[bits]
    if bits == 4:
        codes = torch.stack([codes >> 4, codes & 0xF], dim=1).view(-1)
    values = codes.to(torch.float32) - levels
    return (values.view(-1, BLOCK) * scales[:, None]).view(-1)
