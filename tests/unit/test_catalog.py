"""The catalog is the one list of strategies and compressors: every entry resolves to a class, a
price and a memory formula, and everything that lists strategies reads it."""

from __future__ import annotations

import inspect

import pytest

from gradsync.core import catalog
from gradsync.core.errors import ConfigError
from gradsync.core.shapes import PRESETS
from gradsync.core.spec import parse_spec
from gradsync.parallel import Strategy, strategy_class
from gradsync.parallel.grad_paths.compression import Reducer
from gradsync.planning import costmodel as cm


@pytest.mark.parametrize("name", list(catalog.STRATEGIES))
def test_every_strategy_has_a_class_a_price_and_a_memory_formula(name: str) -> None:
    e = catalog.STRATEGIES[name]
    cls = catalog.resolve(e.cls)
    assert inspect.isclass(cls) and issubclass(cls, Strategy) and cls.name == name
    assert strategy_class(name) is cls
    assert callable(catalog.resolve(e.price)) and callable(catalog.resolve(e.memory))
    d = PRESETS["gpt2"]
    w = cm.gpt_workload(d["n_layer"], d["n_head"], d["n_embd"], 50257, 1024, micro_batch=8)
    pred = cm.predict(e.spec, w, 8, cm.device_preset("h100"), cm.network_preset("ib-ndr"))
    assert pred.step_s > pred.compute_s > 0 and pred.memory["total"] > 0
    assert set(e.compressors) <= set(catalog.COMPRESSORS)
    if e.reference is not None:
        ref = parse_spec(e.reference, catalog.STRATEGY_SCHEMA, "strategy")  # a valid spec, options too
        assert ref.name in catalog.STRATEGIES and catalog.STRATEGIES[ref.name].reference is None


@pytest.mark.parametrize("name", list(catalog.COMPRESSORS))
def test_every_compressor_has_a_reducer_and_a_price(name: str) -> None:
    e = catalog.COMPRESSORS[name]
    assert issubclass(catalog.resolve(e.reducer), Reducer)
    d = PRESETS["small"]
    w = cm.gpt_workload(d["n_layer"], d["n_head"], d["n_embd"], 256, 128, micro_batch=8)
    pred = cm.predict("bucketed", w, 4, cm.device_preset("a100-80gb"), cm.network_preset("10gbe"), e.spec)
    assert pred.comm_s > 0


def test_lists_are_read_from_the_catalog() -> None:
    entries = catalog.all_entries()
    strategies = [e.spec for e in catalog.STRATEGIES.values()]
    # every strategy, in order, each followed by the references that use it with options
    assert [e for e in entries if e in strategies] == strategies
    assert entries.index("torch-fsdp:reshard=false") == entries.index("torch-fsdp") + 1
    assert all(catalog.reference_of(e) in entries for e in entries if catalog.reference_of(e))
    assert "bucketed+powersgd:rank=4" in entries and "torch-ddp+powersgd:rank=4" in entries
    assert catalog.reference_of("bucketed+fp16") == "torch-ddp+fp16"
    assert catalog.reference_of("bucketed+topk:ratio=0.01") == "torch-ddp"  # torch has no top-k hook
    assert catalog.reference_of("zero2") == "torch-fsdp:reshard=false" and catalog.reference_of("torch-ddp") is None
    assert catalog.exact_strategies() == ["bucketed", "zero1", "zero2", "zero3"]
    assert "torch-ddp" not in catalog.plan_entries() and "zero3" in catalog.plan_entries()
    assert catalog.changes_optimization("diloco:8") and catalog.changes_optimization("bucketed+fp16")
    assert not catalog.changes_optimization("zero3")


def test_a_compressor_outside_its_strategies_is_one_line() -> None:
    with pytest.raises(
        ConfigError, match="not implemented for strategy zero2; compression composes with bucketed .*, torch-ddp"
    ):
        catalog.check_composition(
            parse_spec("zero2", catalog.STRATEGY_SCHEMA, "s"), parse_spec("fp16", catalog.COMPRESSOR_SCHEMA, "c")
        )
