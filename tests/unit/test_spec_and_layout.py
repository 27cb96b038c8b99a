"""Pure pieces of the strategies: spec parsing, the sharded layout, the compressor layouts."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from gradsync.core.catalog import COMPRESSOR_SCHEMA as COMPRESSORS
from gradsync.core.catalog import STRATEGY_SCHEMA as STRATEGIES
from gradsync.core.catalog import check_composition
from gradsync.core.errors import ConfigError
from gradsync.core.spec import parse_spec
from gradsync.parallel.layout import FlatUnit


def test_spec_defaults_positional_and_named_options() -> None:
    assert parse_spec("zero1", STRATEGIES, "s").options == {}
    assert parse_spec("zero2", STRATEGIES, "s").options == {"hybrid": False}
    assert parse_spec("localsgd", STRATEGIES, "s")["H"] == 8
    assert parse_spec("localsgd:16", STRATEGIES, "s")["H"] == 16
    d = parse_spec("diloco:4, outer_lr=0.5 ,nesterov=false", STRATEGIES, "s")
    assert (d["H"], d["outer_lr"], d["momentum"], d["nesterov"]) == (4, 0.5, 0.9, False)
    assert parse_spec("topk:0.05", COMPRESSORS, "c")["ratio"] == 0.05
    assert str(parse_spec("powersgd:rank=2", COMPRESSORS, "c")) == "powersgd:rank=2,min_numel=1024,warm_start=True"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("zero4", "'zero4' is unknown"),
        ("localsgd:-1", "H must be a positive number of steps"),
        ("localsgd:2,3", "write options as key=value"),
        ("zero1:3", "write options as key=value"),
        ("diloco:momentum=1.5", "momentum must be in [0, 1)"),
        ("diloco:speed=3", "unknown option 'speed'"),
    ],
)
def test_bad_strategy_specs_say_what_to_fix(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_spec(text, STRATEGIES, "parallel.strategy")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_compression_composes_with_bucketed_and_torch_ddp_only() -> None:
    def spec(s: str) -> object:
        return parse_spec(s, STRATEGIES, "s")

    check_composition(spec("bucketed"), parse_spec("topk", COMPRESSORS, "c"))  # type: ignore[arg-type]
    check_composition(spec("zero3"), parse_spec("none", COMPRESSORS, "c"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not implemented for strategy zero1"):
        check_composition(spec("zero1"), parse_spec("bf16", COMPRESSORS, "c"))  # type: ignore[arg-type]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_flat_unit_pieces_cover_every_element_exactly_once(world: int) -> None:
    params = [nn.Parameter(torch.randn(*shape)) for shape in [(5, 3), (7,), (2, 2, 2), (1,)]]
    numel = sum(p.numel() for p in params)
    covered = {id(p): torch.zeros(p.numel(), dtype=torch.int64) for p in params}
    for rank in range(world):
        u = FlatUnit(0, params, world, rank)
        assert u.padded % world == 0 and u.padded - numel < world and u.chunk * world == u.padded
        flat = u.flatten([p.data for p in params])
        chunk = u.my_chunk(flat)
        for pc in u.pieces:
            assert pc.at >= 0 and pc.at + pc.hi - pc.lo <= u.chunk
            assert torch.equal(chunk[pc.at : pc.at + pc.hi - pc.lo], pc.param.data.reshape(-1)[pc.lo : pc.hi])
            covered[id(pc.param)][pc.lo : pc.hi] += 1
    assert all(torch.all(c == 1) for c in covered.values())


def test_flat_unit_views_are_shaped_slices_of_the_buffer() -> None:
    params = [nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(5))]
    u = FlatUnit(0, params, 2, 0)
    flat = u.flatten([p.data for p in params])
    views = u.views(flat)
    assert [v.shape for v in views] == [p.shape for p in params]
    views[1].fill_(7.0)
    assert torch.all(flat[12:17] == 7.0) and torch.all(flat[17:] == 0)  # padding stays zero
