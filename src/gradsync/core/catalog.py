"""Every strategy and every compressor, one entry each: the one list the rest of gradsync reads.

An entry says what a user may write (its name and options schema), what it composes with, whether
it is *exact* (the same math as one big batch on one device, so ``--strategy auto`` may choose it),
which torch implementation it is measured against, and where its code is: the class that runs it,
and the cost model's price and memory formula (``"module:attribute"``, imported only when used,
so this module stays torch-free). Spec parsing (:mod:`gradsync.core.config`), the strategy registry
(:func:`gradsync.parallel.build_strategy`), ``gradsync bench --strategies all``, ``gradsync
plan``'s table and ``auto``'s candidates all read it.

Adding a strategy = one file under ``gradsync/parallel/`` + one entry here (+ its price and memory
functions in :mod:`gradsync.planning.costmodel`); ``tests/unit/test_catalog.py`` checks that every
reference resolves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gradsync.core.errors import ConfigError
from gradsync.core.spec import Param, Spec, positive

QUANT = ("fp32", "bf16", "int8", "int4")  # precisions of DiLoCo's outer communication
QUANT_BLOCK = 128  # elements per fp32 scale when quantised to int8 / int4
AUTO = "auto"  # --strategy auto: chosen by the cost model at launch, never run as such


@dataclass(frozen=True)
class StrategyEntry:
    name: str
    cls: str  # "module:Class" of its gradsync.parallel.base.Strategy
    price: str  # "module:function" pricing one step in the cost model
    memory: str  # "module:function": bytes per rank of parameters, gradients, optimizer, extras
    options: Mapping[str, Param] = field(default_factory=dict)
    exact: bool = False  # synchronous, same math as one big batch: a candidate of --strategy auto
    reference: str | None = "torch-ddp"  # the torch implementation it is benchmarked against
    compressors: tuple[str, ...] = ()  # the --compress values it takes besides none
    example: str = ""  # the spec bench and plan use ("" = the bare name)
    priced_as: str | None = None  # a torch reference that moves the same bytes as this entry of ours
    synchronous: bool = True  # False: workers step on their own gradients between averages
    # what the options must meet together: options -> the error message, "" when they are fine
    rules: Callable[[Mapping[str, Any]], str] = lambda options: ""

    @property
    def spec(self) -> str:
        return self.example or self.name


@dataclass(frozen=True)
class CompressorEntry:
    name: str
    reducer: str  # "module:Class" of its gradsync.parallel.grad_paths.compression.Reducer (the bucketed path)
    price: str  # "module:function": per-bucket communication and compression compute
    options: Mapping[str, Param] = field(default_factory=dict)
    error_feedback: bool = False  # keeps a residual as large as the gradient
    example: str = ""
    in_all: bool = True  # part of ``bench --strategies all`` and plan's default rows

    @property
    def spec(self) -> str:
        return self.example or self.name


def _diloco_rules(o: Mapping[str, Any]) -> str:
    if o["H"] % o["fragments"]:
        return (
            f"fragments={o['fragments']} must divide H={o['H']} (fragment f is synchronised at (f+1)H/fragments + kH)"
        )
    if o["overlap"] > o["H"]:
        return f"overlap={o['overlap']} must be <= H={o['H']}: a fragment lands, at the latest, as it is sent again"
    if o["keep"] and o["mix"] > 0:
        return f"keep=true and mix={o['mix']} both say what a landing fragment becomes; choose one"
    return ""


_P = "gradsync.parallel"
_CM = "gradsync.planning.costmodel"
_TORCH_HOOKS = ("fp16", "bf16", "powersgd")  # torch's own DDP communication hooks

# Each entry: name, class, price, memory, then what differs from the defaults. Described in
# the guide's chapter 3 (docs/guide/algorithm.md).
STRATEGIES: dict[str, StrategyEntry] = {
    e.name: e
    for e in (
        StrategyEntry(
            "allreduce",
            f"{_P}.allreduce:AllReduceStrategy",
            f"{_CM}.price:price_allreduce",
            f"{_CM}.memory:memory_replicated",
        ),
        StrategyEntry(
            "bucketed",
            f"{_P}.bucketed:BucketedStrategy",
            f"{_CM}.price:price_bucketed",
            f"{_CM}.memory:memory_replicated",
            options={"hierarchical": Param(bool, False)},
            exact=True,
            compressors=("fp16", "bf16", "powersgd", "topk", "int8", "int4"),
        ),
        StrategyEntry(
            "torch-ddp",
            f"{_P}.reference.torch_ddp:TorchDDPStrategy",
            f"{_CM}.price:price_bucketed",
            f"{_CM}.memory:memory_replicated",
            reference=None,
            compressors=_TORCH_HOOKS,
            priced_as="bucketed",
        ),
        StrategyEntry(
            "zero1",
            f"{_P}.zero1:Zero1Strategy",
            f"{_CM}.price:price_zero1",
            f"{_CM}.memory:memory_zero1",
            exact=True,
            reference="torch-zero1",
        ),
        StrategyEntry(
            "torch-zero1",
            f"{_P}.reference.torch_zero:TorchZero1Strategy",
            f"{_CM}.price:price_zero1",
            f"{_CM}.memory:memory_zero1",
            reference=None,
            priced_as="zero1",
        ),
        StrategyEntry(
            "zero2",
            f"{_P}.zero2:Zero2Strategy",
            f"{_CM}.price:price_zero2",
            f"{_CM}.memory:memory_zero2",
            options={"hybrid": Param(bool, False)},
            exact=True,
            reference="torch-fsdp:reshard=false",  # FSDP2 keeping the weights whole from forward on: ZeRO-2
        ),
        StrategyEntry(
            "zero3",
            f"{_P}.zero3:Zero3Strategy",
            f"{_CM}.price:price_zero3",
            f"{_CM}.memory:memory_zero3",
            options={
                "prefetch": Param(int, 1, lambda v: v >= 0, ">= 0 (units gathered ahead)"),
                "reshard": Param(bool, True),
                "hybrid": Param(bool, False),
            },
            exact=True,
            reference="torch-fsdp",
        ),
        StrategyEntry(
            "torch-fsdp",
            f"{_P}.reference.torch_fsdp:TorchFSDPStrategy",
            f"{_CM}.price:price_torch_fsdp",
            f"{_CM}.memory:memory_zero3",
            options={"reshard": Param(bool, True)},  # fully_shard's reshard_after_forward
            reference=None,
        ),
        StrategyEntry(
            "localsgd",
            f"{_P}.localsgd:LocalSGDStrategy",
            f"{_CM}.price:price_local",
            f"{_CM}.memory:memory_replicated",
            options={"H": Param(int, 8, positive, "a positive number of steps")},
            example="localsgd:8",
            synchronous=False,
        ),
        StrategyEntry(
            "diloco",
            f"{_P}.diloco:DiLoCoStrategy",
            f"{_CM}.price:price_local",
            f"{_CM}.memory:memory_diloco",
            options={
                "H": Param(int, 8, positive, "a positive number of steps"),
                "outer_lr": Param(float, 0.7, positive, "> 0"),
                "momentum": Param(float, 0.9, lambda v: 0 <= v < 1, "in [0, 1)"),
                "nesterov": Param(bool, True),
                "fragments": Param(int, 1, positive, "a positive integer"),
                "overlap": Param(int, 0, lambda v: v >= 0, ">= 0 (inner steps)"),
                "mix": Param(float, 0.0, lambda v: 0 <= v < 1, "in [0, 1)"),
                "keep": Param(bool, False),
                "quant": Param(str, "fp32", lambda v: v in QUANT, f"one of {', '.join(QUANT)}"),
            },
            example="diloco:8",
            synchronous=False,
            rules=_diloco_rules,
        ),
    )
}

COMPRESSORS: dict[str, CompressorEntry] = {
    e.name: e
    for e in (
        CompressorEntry("none", f"{_P}.grad_paths.compression:AllReduceMean", f"{_CM}.price:bucket_comm_none"),
        CompressorEntry("fp16", f"{_P}.grad_paths.compression:LowPrecision", f"{_CM}.price:bucket_comm_low_precision"),
        # bf16 takes fp16's path and bytes: name it to bench it
        CompressorEntry(
            "bf16", f"{_P}.grad_paths.compression:LowPrecision", f"{_CM}.price:bucket_comm_low_precision", in_all=False
        ),
        CompressorEntry(
            "powersgd",
            f"{_P}.grad_paths.compression:PowerSGD",
            f"{_CM}.price:bucket_comm_powersgd",
            options={
                "rank": Param(int, 4, positive, "a positive integer"),
                "min_numel": Param(int, 1024, lambda v: v >= 0, ">= 0"),
                "warm_start": Param(bool, True),
            },
            error_feedback=True,
            example="powersgd:rank=4",
        ),
        CompressorEntry(
            "topk",
            f"{_P}.grad_paths.compression:TopK",
            f"{_CM}.price:bucket_comm_topk",
            options={
                "ratio": Param(float, 0.01, lambda v: 0 < v <= 1, "in (0, 1]"),
                "warmup": Param(int, 0, lambda v: v >= 0, ">= 0"),
            },
            error_feedback=True,
            example="topk:ratio=0.01",
        ),
        CompressorEntry(
            "int8", f"{_P}.grad_paths.compression:Quantized", f"{_CM}.price:bucket_comm_quantized", error_feedback=True
        ),
        CompressorEntry(
            "int4",
            f"{_P}.grad_paths.compression:Quantized",
            f"{_CM}.price:bucket_comm_quantized",
            error_feedback=True,
            in_all=False,
        ),
    )
}

# The option schemas the spec parser checks --strategy and --compress against.
STRATEGY_SCHEMA: Mapping[str, Mapping[str, Param]] = {AUTO: {}, **{n: e.options for n, e in STRATEGIES.items()}}
COMPRESSOR_SCHEMA: Mapping[str, Mapping[str, Param]] = {n: e.options for n, e in COMPRESSORS.items()}


def strategy(name: str) -> StrategyEntry:
    if name not in STRATEGIES:
        raise ConfigError(f"strategy '{name}' is unknown; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def compressor(name: str) -> CompressorEntry:
    if name not in COMPRESSORS:
        raise ConfigError(f"compressor '{name}' is unknown; choose one of {', '.join(COMPRESSORS)}")
    return COMPRESSORS[name]


def check_composition(strategy_spec: Spec, compress: Spec) -> None:
    """Raise unless ``strategy_spec``'s options agree with each other and ``compress`` can run
    under it."""
    entry = STRATEGIES.get(strategy_spec.name)
    problem = entry.rules(strategy_spec.options) if entry else ""
    if problem:
        raise ConfigError(f"parallel.strategy {strategy_spec.name}: {problem}")
    if compress.name == "none":
        return
    if strategy_spec.options.get("hierarchical"):
        raise ConfigError(
            f"parallel.compress {compress.name} does not compose with bucketed:hierarchical=true "
            "(the two-level all-reduce sends fp32 shards); drop one of them"
        )
    if entry is None or compress.name not in entry.compressors:
        where = ", ".join(f"{e.name} ({'/'.join(e.compressors)})" for e in STRATEGIES.values() if e.compressors)
        raise ConfigError(
            f"parallel.compress {compress.name} is not implemented for strategy "
            f"{strategy_spec.name}; compression composes with {where}"
        )


def resolve(ref: str) -> Any:
    """The object a ``"module:attribute"`` reference names (imported now)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


# -- entries as bench and plan list them ("strategy[+compressor spec]") --------------------------


def entry_name(strategy_spec: str, compress_spec: str = "none") -> str:
    return strategy_spec if compress_spec == "none" else f"{strategy_spec}+{compress_spec}"


def split_entry(entry: str) -> tuple[str, str]:
    """``bucketed+powersgd:rank=4`` -> (``bucketed``, ``powersgd:rank=4``); no ``+`` -> compressor none."""
    strategy_spec, _, compress_spec = entry.partition("+")
    return strategy_spec, compress_spec or "none"


def compressed_entries(strategy_name: str) -> list[str]:
    """The strategy with each compressor it takes (those in ``all``), at the compressor's example
    options."""
    e = STRATEGIES[strategy_name]
    return [entry_name(e.spec, COMPRESSORS[c].spec) for c in e.compressors if COMPRESSORS[c].in_all]


def all_entries() -> list[str]:
    """``bench --strategies all``: every strategy (each followed by the references that use it with
    options, such as FSDP2 without resharding for ``zero2``), then every composition with a
    compressor."""
    refs = list(
        dict.fromkeys(e.reference for e in STRATEGIES.values() if e.reference and e.reference not in STRATEGIES)
    )
    out = []
    for e in STRATEGIES.values():
        out += [e.spec, *(r for r in refs if r.partition(":")[0] == e.name)]
    return out + [c for n in STRATEGIES for c in compressed_entries(n)]


def _strategy_of(entry: str) -> StrategyEntry:
    return STRATEGIES[split_entry(entry)[0].partition(":")[0]]


def reference_of(entry: str) -> str | None:
    """The torch entry ``entry`` is measured against: the strategy's reference, with the same
    compressor where that reference takes it (torch's communication hooks)."""
    compress_spec = split_entry(entry)[1]
    ref = _strategy_of(entry).reference
    if ref is None:
        return None
    c = compress_spec.partition(":")[0]
    return entry_name(ref, compress_spec) if c in STRATEGIES[ref.partition(":")[0]].compressors else ref


def plan_entries() -> list[str]:
    """``gradsync plan``'s default rows: every strategy priced on its own (torch references that
    move the same bytes as one of ours are left out), and ``bucketed`` with each compressor."""
    return [e.spec for e in STRATEGIES.values() if e.priced_as is None] + compressed_entries("bucketed")


def changes_optimization(entry: str) -> bool:
    """True for entries that are not the math of one big batch: a compressor, or a strategy whose
    workers step on their own gradients (local SGD, DiLoCo)."""
    return split_entry(entry)[1] != "none" or not _strategy_of(entry).synchronous


def split_entries(text: str) -> list[str]:
    """``a,b:1,k=v,c`` -> ``["a", "b:1,k=v", "c"]``: a comma starts a new entry unless what follows
    is a ``key=value`` option of the previous spec; ``all`` is :func:`all_entries`."""
    if text.strip() == "all":
        return all_entries()
    entries: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if entries and "=" in part and ":" not in part.split("=")[0] and "+" not in part:
            entries[-1] += "," + part
        else:
            entries.append(part)
    return entries


# Built-in tasks (``--task``): name -> the Task class, resolved when a run builds it. Any other
# task is ``package.module:factory``. Described in the guide's chapter 6 (docs/guide/applications.md).
_T = "gradsync.tasks"
TASKS: dict[str, str] = {
    "gpt": f"{_T}.gpt:GPTTask",
    "bert": f"{_T}.bert:BertTask",
    "image": f"{_T}.image:ImageTask",
    "speech": f"{_T}.speech:SpeechTask",
    "hf-causal-lm": f"{_T}.hf:HFCausalLMTask",
    "hf-masked-lm": f"{_T}.hf:HFMaskedLMTask",
}


# What each built-in task trains well with, applied where the user set nothing (the GPT's are the
# config's own defaults). Measured on this repository's data on 2 CPU cores: the guide's example
# runs (benchmarks/guide_runs.py). BERT: at lr 3e-3 (and 2e-3) a post-LayerNorm BERT collapses to
# the most frequent token, and at seq 128 it sits on a plateau for 1,500 steps; at seq 32 it
# learns within 300. The same tokens in 1,300 steps of 128 sequences reached masked-token accuracy
# 0.617 (2.2x the unigram baseline) where 650 steps of 256 reached 0.524. Image and speech: small
# data sets, learnt in a few hundred steps of 64 examples, evaluated on 1,000 held-out ones.
TASK_DEFAULTS: dict[str, dict[str, object]] = {
    "bert": {
        "optim.lr": 1e-3,
        "data.seq_len": 32,
        "train.global_batch": 128,
        "train.micro_batch": 64,
        "train.max_steps": 1300,
    },
    "image": {
        "train.micro_batch": 32,
        "train.global_batch": 64,
        "train.max_steps": 300,
        "train.eval_interval": 50,
        "train.eval_sequences": 1000,
    },
    "speech": {
        "train.micro_batch": 32,
        "train.global_batch": 64,
        "train.max_steps": 200,
        "train.eval_interval": 50,
        "train.eval_sequences": 1000,
    },
}
WARMUP_SHARE = 4  # unless set, warm-up lasts at most a quarter of the run (train.max_steps / 4)


# Tasks whose examples are token sequences (tokens/s counts tokens; elsewhere it counts samples).
LANGUAGE_TASKS = ("gpt", "bert", "hf-causal-lm", "hf-masked-lm")


def exact_strategies() -> list[str]:
    """The candidates of ``--strategy auto`` (``--auto-allows exact``)."""
    return [n for n, e in STRATEGIES.items() if e.exact]


# What ``--strategy auto`` may choose beyond the exact strategies (``parallel.auto_allows``).
AUTO_ALLOWS = ("exact", "rounded", "approximate")
# Streaming DiLoCo as auto weighs it, least stale first. With H <= 4 the paper's outer Nesterov
# (lr 0.7, momentum 0.9) overshoots (measured, default job: validation loss 2.65 against 1.91 for
# bucketed at step 160 with H=4), so small H average the fragments plainly (outer_lr 1, no
# momentum) and keep the steps taken while a fragment travels; 4-bit codes let a fragment a step
# travel behind one step's compute. From H=8 on, the paper's outer step and merge.
_SMALL_H = "overlap=1,keep=true,outer_lr=1,momentum=0,quant=int4"
AUTO_STREAMING = (
    f"diloco:2,fragments=2,{_SMALL_H}",
    f"diloco:4,fragments=4,{_SMALL_H}",
    *(f"diloco:{h},fragments=4,overlap=1,mix=0.5,quant=int8" for h in (8, 16, 32)),
)


def auto_ladder(allows: str) -> list[list[str]]:
    """The rungs ``--strategy auto`` climbs, each further from the math of one big batch than the
    one before: the exact strategies; with ``rounded``, gradients averaged in fp16 (the mean
    rounded to half precision, as DDP's ``fp16_compress_hook``); with ``approximate``, int8 then
    int4 gradients with error feedback, then streaming DiLoCo (Douillard et al. 2025: fragments
    sent in few bits behind the next step's compute, :data:`AUTO_STREAMING`) from H = 2 to 32
    inner steps. Plain local SGD and DiLoCo are left out: streaming DiLoCo sends the same bytes
    without blocking."""
    if allows not in AUTO_ALLOWS:
        raise ConfigError(f"auto_allows '{allows}' is unknown; choose one of {', '.join(AUTO_ALLOWS)}")
    rungs = [exact_strategies()]
    if allows != "exact":
        rungs.append(["bucketed+fp16"])
    if allows == "approximate":
        rungs += [["bucketed+int8"], ["bucketed+int4"], *([e] for e in AUTO_STREAMING)]
    return rungs
