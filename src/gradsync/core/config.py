"""Typed run configuration: one frozen dataclass per component, validated on construction.

A run is described by :class:`Config`, made of :class:`ModelConfig`, :class:`DataConfig`,
:class:`OptimConfig`, :class:`ParallelConfig` and :class:`TrainConfig`. Values come, in order of
precedence, from command-line overrides (``--train.max_steps=100`` or a friendly alias such as
``--max-steps 100``), a TOML file (``--config run.toml`` with ``[model]``, ``[data]``, ... tables),
and the defaults below. Every value is checked in ``__post_init__`` so that a bad value fails
before any process is started, with a one-line :class:`~gradsync.core.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from gradsync.core.catalog import (
    AUTO,
    AUTO_ALLOWS,
    COMPRESSOR_SCHEMA,
    STRATEGY_SCHEMA,
    TASK_DEFAULTS,
    TASKS,
    WARMUP_SHARE,
    check_composition,
)
from gradsync.core.errors import ConfigError
from gradsync.core.shapes import PRESETS
from gradsync.core.spec import Spec, parse_spec
from gradsync.core.values import coerce

OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("fp32", "bf16")
BACKENDS = ("auto", "gloo", "nccl")
FAULT_TOLERANCE = ("restart", "live")
# the strategies a live (torchft) job runs: synchronous ones inside a replica, each rank holding the
# whole model (ZeRO-1/2 gather it after every update) and its shard of the optimizer state, which
# the same rank of a returning replica copies from a peer; and the local methods across replicas
# of one worker each (their average every H steps is across replicas)
LIVE_STRATEGIES = ("allreduce", "bucketed", "zero1", "zero2", "localsgd", "diloco")
LOGGERS = ("tensorboard", "wandb", "trackio")  # experiment trackers (gradsync.training.trackers)
CHECKPOINTING = ("none", "selective", "full")  # activation checkpointing (gradsync.model.activation_checkpointing)


T = typing.TypeVar("T")


def key(default: T, meaning: str) -> T:
    """A config key: its default and what it means (``gradsync config --show`` prints it)."""
    return field(default=default, metadata={"help": meaning})


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class TaskConfig:
    """What is trained: a built-in task (see ``gradsync.core.catalog.TASKS``) or ``module:factory``, a
    function ``factory(cfg) -> gradsync.tasks.Task`` importable by every worker."""

    name: str = key("gpt", "gpt | bert | image | speech | hf-causal-lm | hf-masked-lm | package.module:factory")

    def __post_init__(self) -> None:
        _check(
            self.name in TASKS or _is_factory_ref(self.name),
            f"task.name '{self.name}' is unknown; choose one of {', '.join(TASKS)} or give package.module:factory",
        )


def _is_factory_ref(name: str) -> bool:
    mod, sep, attr = name.partition(":")
    return bool(sep) and all(part.isidentifier() for part in mod.split(".")) and attr.isidentifier()


@dataclass(frozen=True)
class BertConfig:
    """Masked-LM corruption (Devlin et al. 2019): ``mask_prob`` of the positions are chosen; of
    those 80% become [MASK], 10% a random token, 10% stay. The encoder's shape is ``[model]``'s."""

    mask_prob: float = key(0.15, "share of positions chosen as masked-LM targets (80% [MASK], 10% random, 10% kept)")

    def __post_init__(self) -> None:
        _check(0.0 < self.mask_prob < 1.0, f"bert.mask_prob must be in (0, 1), got {self.mask_prob}")


@dataclass(frozen=True)
class ImageConfig:
    """Image classification. ``source``: ``digits`` (scikit-learn's bundled 8×8 handwritten
    digits), a folder in ImageFolder layout (one subfolder per class), or an ``.npz`` with
    ``images`` (N, H, W[, C]) and ``labels`` (N)."""

    source: str = key(
        "digits", "digits (scikit-learn's, no download) | an ImageFolder folder | an .npz (images, labels)"
    )
    size: int = key(0, "resize folder images to size×size; 0 = keep (all must then be equal)")
    channels: int = key(1, "1 (grayscale) or 3 (RGB), for folder images")
    width: int = key(32, "channels of the first conv layer")
    augment: bool = key(True, "random shifts of up to 1/8 of the side, seeded per sample")
    test_fraction: float = key(0.2, "share of images (by name hash) held out when the source has no test split")

    def __post_init__(self) -> None:
        _check(bool(self.source.strip()), "image.source must not be empty")
        _check(self.size >= 0, f"image.size must be >= 0, got {self.size}")
        _check(self.channels in (1, 3), f"image.channels must be 1 or 3, got {self.channels}")
        _check(self.width >= 4, f"image.width must be >= 4, got {self.width}")
        _check(0.0 < self.test_fraction < 0.9, f"image.test_fraction must be in (0, 0.9), got {self.test_fraction}")


@dataclass(frozen=True)
class SpeechConfig:
    """Keyword classification from audio. ``source``: ``espeak-digits`` (spoken digits synthesized
    on this machine with espeak-ng, test voices never seen in training) or a folder of WAV files,
    one subfolder per label (the Speech Commands layout)."""

    source: str = key(
        "espeak-digits", "espeak-digits (made once with espeak-ng) | a WAV folder in the Speech Commands layout"
    )
    sample_rate: int = key(16000, "Hz; clips are resampled to it")
    clip_s: float = key(1.0, "seconds per clip; longer ones are cut, shorter ones padded")
    n_mels: int = key(40, "mel bands of the log-mel features")
    width: int = key(64, "channels of the first conv layer")
    augment: bool = key(True, "random time shifts of up to 100 ms, seeded per sample")
    test_fraction: float = key(0.2, "folder data: share of files (by name hash) held out")

    def __post_init__(self) -> None:
        _check(bool(self.source.strip()), "speech.source must not be empty")
        _check(
            8000 <= self.sample_rate <= 48000, f"speech.sample_rate must be in [8000, 48000], got {self.sample_rate}"
        )
        _check(0.1 <= self.clip_s <= 10, f"speech.clip_s must be in [0.1, 10], got {self.clip_s}")
        _check(8 <= self.n_mels <= 128, f"speech.n_mels must be in [8, 128], got {self.n_mels}")
        _check(self.width >= 4, f"speech.width must be >= 4, got {self.width}")
        _check(0.0 < self.test_fraction < 0.9, f"speech.test_fraction must be in (0, 0.9), got {self.test_fraction}")


@dataclass(frozen=True)
class HFConfig:
    """A Hugging Face ``transformers`` model (tasks ``hf-causal-lm``, ``hf-masked-lm``): ``config``
    is a config.json to initialise randomly, ``pretrained`` a folder with weights to fine-tune."""

    config: str = key("", "a transformers config.json: that architecture, randomly initialised (seeded)")
    pretrained: str = key("", "a local transformers model folder to fine-tune (nothing is downloaded)")

    def __post_init__(self) -> None:
        _check(not (self.config and self.pretrained), "give hf.config or hf.pretrained, not both")


@dataclass(frozen=True)
class ModelConfig:
    """GPT (and BERT) shape. ``preset`` fills every dimension left unset (see ``gradsync.core.shapes.PRESETS``)."""

    preset: str = key("small", "tiny | mini | small | base | gpt2 | gpt2-medium | gpt2-large | gpt2-xl")
    n_layer: int | None = key(None, "transformer blocks; overrides the preset")
    n_head: int | None = key(None, "attention heads; overrides the preset")
    n_embd: int | None = key(None, "width of the residual stream; overrides the preset")
    dropout: float = key(0.0, "dropout probability")

    def __post_init__(self) -> None:
        _check(self.preset in PRESETS, f"model.preset '{self.preset}' is unknown; choose one of {', '.join(PRESETS)}")
        for name in ("n_layer", "n_head", "n_embd"):
            v = getattr(self, name)
            _check(v is None or v > 0, f"model.{name} must be a positive integer, got {v}")
        _check(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.n_embd is not None or self.n_head is not None:
            emb = self.n_embd or PRESETS[self.preset]["n_embd"]
            heads = self.n_head or PRESETS[self.preset]["n_head"]
            _check(emb % heads == 0, f"model.n_embd ({emb}) must be divisible by model.n_head ({heads})")


@dataclass(frozen=True)
class DataConfig:
    """Where tokens come from.

    ``source`` is ``stdlib`` (the running interpreter's standard library sources), ``synthetic``
    (an order-k Markov chain with an exactly known entropy rate), or a path: a text file, a
    folder, a glob, or pre-tokenized ``.bin`` shards (nanoGPT raw uint16, or llm.c headered).
    """

    source: str = key("stdlib", "stdlib | synthetic | text files (file, folder, glob) | .bin shards")
    tokenizer: str = key("byte", "byte | bpe | path to a tokenizers tokenizer.json")
    bpe_vocab_size: int = key(4096, "vocabulary of the byte-level BPE trained when tokenizer = bpe")
    seq_len: int = key(128, "tokens per training sequence")
    val_fraction: float = key(0.05, "share of documents (by name hash) held out for validation")
    vocab_size: int | None = key(None, "only for pre-tokenized shards without a tokenizer")
    synthetic_vocab: int = key(16, "synthetic data: vocabulary of the Markov chain")
    synthetic_order: int = key(2, "synthetic data: tokens of context the chain depends on")
    synthetic_tokens: int = key(400_000, "synthetic data: tokens generated")
    synthetic_alpha: float = key(
        0.2, "synthetic data: Dirichlet concentration of the transition rows (smaller = more predictable)"
    )
    synthetic_seed: int = key(0, "synthetic data: seed of the chain and of the sampled tokens")

    def __post_init__(self) -> None:
        _check(bool(self.source.strip()), "data.source must not be empty")
        _check(
            self.tokenizer in ("byte", "bpe") or self.tokenizer.endswith(".json"),
            f"data.tokenizer '{self.tokenizer}' is unknown; choose byte, bpe or a tokenizer.json path",
        )
        _check(
            260 <= self.bpe_vocab_size <= 65535,
            f"data.bpe_vocab_size must be in [260, 65535], got {self.bpe_vocab_size}",
        )
        _check(self.seq_len >= 2, f"data.seq_len must be at least 2, got {self.seq_len}")
        _check(0.0 < self.val_fraction < 0.5, f"data.val_fraction must be in (0, 0.5), got {self.val_fraction}")
        _check(
            self.vocab_size is None or self.vocab_size > 0, f"data.vocab_size must be positive, got {self.vocab_size}"
        )
        _check(
            2 <= self.synthetic_vocab <= 1024, f"data.synthetic_vocab must be in [2, 1024], got {self.synthetic_vocab}"
        )
        _check(1 <= self.synthetic_order <= 4, f"data.synthetic_order must be in [1, 4], got {self.synthetic_order}")
        _check(
            self.synthetic_vocab**self.synthetic_order <= 1 << 20,
            "data.synthetic_vocab ** data.synthetic_order must be at most 2**20 contexts",
        )
        _check(
            self.synthetic_tokens >= 1000, f"data.synthetic_tokens must be at least 1000, got {self.synthetic_tokens}"
        )
        _check(self.synthetic_alpha > 0, f"data.synthetic_alpha must be > 0, got {self.synthetic_alpha}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW (or plain SGD with momentum, for the local-SGD equivalences) with linear warmup then
    cosine decay to ``lr * min_lr_ratio``; global-norm clipping."""

    name: str = key("adamw", "adamw | sgd")
    lr: float = key(3e-3, "peak learning rate, after linear warmup")
    min_lr_ratio: float = key(0.1, "the cosine decay ends at lr × this")
    warmup_steps: int = key(50, "steps of linear warmup from 0 to lr")
    weight_decay: float = key(0.1, "decoupled weight decay (matrices only)")
    beta1: float = key(0.9, "AdamW's first-moment decay")
    beta2: float = key(0.95, "AdamW's second-moment decay")
    eps: float = key(1e-8, "AdamW's denominator epsilon")
    grad_clip: float = key(1.0, "0 disables clipping")
    momentum: float = key(0.0, "sgd only")
    kernel: str = key(
        "auto",
        "auto (fused where torch has it for the parameters, else default) | default (torch's per-tensor loop "
        "on CPU) | foreach (batched) | fused (one kernel); the same update, fused to rounding",
    )

    def __post_init__(self) -> None:
        _check(self.name in OPTIMIZERS, f"optim.name '{self.name}' is unknown; choose one of {', '.join(OPTIMIZERS)}")
        _check(0 <= self.momentum < 1, f"optim.momentum must be in [0, 1), got {self.momentum}")
        _check(
            self.name == "sgd" or self.momentum == 0,
            "optim.momentum applies to optim.name=sgd only (AdamW uses optim.beta1)",
        )
        _check(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        _check(0 <= self.min_lr_ratio <= 1, f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        _check(
            0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
            f"optim.beta1 and optim.beta2 must be in [0, 1), got {self.beta1}, {self.beta2}",
        )
        _check(self.eps > 0, f"optim.eps must be > 0, got {self.eps}")
        _check(self.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0 disables), got {self.grad_clip}")
        _check(
            self.kernel in ("auto", "default", "foreach", "fused"),
            f"optim.kernel must be auto, default, foreach or fused, got '{self.kernel}'",
        )


@dataclass(frozen=True)
class ParallelConfig:
    """How workers are launched and how gradients travel."""

    nproc: int = key(2, "workers per node")
    nnodes: int = key(1, "nodes; under Slurm, the job step's")
    rdzv_endpoint: str = key("", "host:port of the c10d rendezvous; empty = a free local port")
    rdzv_id: str = key("gradsync", "names the job at the rendezvous: every node of a job gives the same")
    node_rank: int = key(-1, "this node's rank, e.g. from Slurm; node 0 hosts the rendezvous; -1 = by host name")
    local_addr: str = key("", 'this node\'s address as the other nodes reach it; "" = from the hostname')
    strategy: str = key("bucketed", "a spec: bucketed, zero2, localsgd:8, diloco:8,outer_lr=0.7, ...")
    compress: str = key("none", "a spec: none, fp16, bf16, powersgd:rank=4, topk:ratio=0.01")
    bucket_mb: float = key(
        25.0,
        "size of a gradient bucket all-reduced as one (bucketed, zero1/2, torch-ddp); "
        "0 = the size the cost model predicts fastest from the calibrated profile",
    )
    first_bucket_mb: float = key(1.0, "the first bucket is smaller, so communication starts early in backward")
    find_unused: bool = key(
        False,
        "as torch DDP's find_unused_parameters: parameters no rank used in a step keep a None gradient "
        "(the optimizer leaves them alone); one small all-reduce a step",
    )
    sync_batchnorm: bool = key(
        False, "BatchNorm statistics over the global batch (two small all-reduces per layer and pass)"
    )
    backend: str = key("auto", "auto: nccl on CUDA, gloo on CPU")
    timeout_s: float = key(300.0, "every collective fails after this long instead of hanging")
    threads: int = key(0, "intra-op threads per worker; 0 = cores / local workers")
    max_restarts: int = key(0, "restart all workers from the newest checkpoint up to N times when one dies")
    fault_tolerance: str = key(
        "restart",
        "restart: a dead worker stops every worker, which restart from the newest checkpoint | live: this "
        "launch is one replica of a torchft job; the replicas alive at a step take it, a dead one is dropped "
        "and a returning one copies the live state from a peer (needs parallel.lighthouse and replica_id)",
    )
    lighthouse: str = key("", "host:port of the torchft Lighthouse of a live job (gradsync lighthouse runs one)")
    replica_id: int = key(-1, "this replica's number in a live job, 0, 1, ...; a restarted replica gives its old one")
    min_replicas: int = key(1, "live: a step needs at least this many replicas; fewer for quorum_timeout_s is an error")
    quorum_timeout_s: float = key(60.0, "live: how long a step waits for a quorum of replicas")
    profile: str = key("", 'calibration profile for strategy=auto; "" = profile.json in the gradsync cache')
    auto_allows: str = key(
        "exact",
        "what strategy=auto may choose: exact (synchronous, full precision), rounded (also fp16 gradients), "
        "approximate (also int8/int4 gradients, streaming DiLoCo); it takes the least approximate one "
        "predicted within 10% of the fastest",
    )

    def __post_init__(self) -> None:
        _check(self.nproc >= 1, f"parallel.nproc must be >= 1, got {self.nproc}")
        _check(self.nnodes >= 1, f"parallel.nnodes must be >= 1, got {self.nnodes}")
        _check(
            -1 <= self.node_rank < self.nnodes,
            f"parallel.node_rank must be -1 (unknown) or in [0, nnodes={self.nnodes}), got {self.node_rank}",
        )
        check_composition(self.strategy_spec, self.compress_spec)
        _check(
            self.strategy != AUTO or self.compress == "none",
            "parallel.strategy=auto chooses the compression too (parallel.auto_allows says which); "
            "drop parallel.compress or name a strategy",
        )
        _check(
            self.auto_allows in AUTO_ALLOWS,
            f"parallel.auto_allows '{self.auto_allows}' is unknown; choose one of {', '.join(AUTO_ALLOWS)}",
        )
        _check(
            self.bucket_mb >= 0 and self.first_bucket_mb > 0,
            "parallel.bucket_mb must be > 0 (or 0: chosen from the calibrated profile) and "
            "parallel.first_bucket_mb > 0",
        )
        _check(
            self.backend in BACKENDS,
            f"parallel.backend '{self.backend}' is unknown; choose one of {', '.join(BACKENDS)}",
        )
        _check(self.timeout_s >= 1, f"parallel.timeout_s must be at least 1 second, got {self.timeout_s:g}")
        _check(self.threads >= 0, f"parallel.threads must be >= 0, got {self.threads}")
        _check(self.max_restarts >= 0, f"parallel.max_restarts must be >= 0, got {self.max_restarts}")
        _check(
            self.nnodes == 1 or bool(self.rdzv_endpoint),
            "parallel.rdzv_endpoint (host:port) is required when parallel.nnodes > 1",
        )
        _check(
            self.fault_tolerance in FAULT_TOLERANCE,
            f"parallel.fault_tolerance '{self.fault_tolerance}' is unknown; choose one of {', '.join(FAULT_TOLERANCE)}",
        )
        _check(self.min_replicas >= 1, f"parallel.min_replicas must be >= 1, got {self.min_replicas}")
        _check(
            self.quorum_timeout_s >= 1, f"parallel.quorum_timeout_s must be >= 1 second, got {self.quorum_timeout_s:g}"
        )
        if self.fault_tolerance == "live":
            _check(
                bool(self.lighthouse) and ":" in self.lighthouse,
                "parallel.fault_tolerance=live needs parallel.lighthouse=HOST:PORT, the torchft Lighthouse "
                "(start one with: gradsync lighthouse --port PORT --min-replicas N)",
            )
            _check(
                self.replica_id >= 0,
                "parallel.fault_tolerance=live needs parallel.replica_id (0, 1, ...: this replica's number)",
            )
            _check(
                self.nnodes == 1,
                "parallel.fault_tolerance=live: a replica is one node's workers (nnodes=1); run one "
                "gradsync train per node, each with its own parallel.replica_id",
            )
            _check(
                not self.find_unused,
                "parallel.find_unused with parallel.fault_tolerance=live is not implemented (replicas "
                "that used different parameters would average gradients of different shapes)",
            )
            spec = self.strategy_spec
            name = spec.name
            _check(
                name in LIVE_STRATEGIES,
                f"parallel.fault_tolerance=live runs {', '.join(LIVE_STRATEGIES)} inside a replica; "
                f"'{name}' with live recovery is not implemented",
            )
            _check(
                name not in ("localsgd", "diloco") or self.nproc == 1,
                f"parallel.fault_tolerance=live runs {name} across replicas of one worker each "
                "(parallel.nproc=1); inside a replica use bucketed, zero1 or zero2",
            )
            _check(
                name != "diloco" or (spec.options.get("overlap") == 0 and spec.options.get("quant") == "fp32"),
                "parallel.fault_tolerance=live with streaming DiLoCo (overlap > 0) or quantised fragments "
                "is not implemented; use diloco with overlap=0 and quant=fp32",
            )
            _check(
                not spec.options.get("hybrid"),
                "parallel.fault_tolerance=live: hybrid sharding is across nodes, and a live replica is one "
                f"node; use {name} without hybrid=true (the replicas are the cross-node level)",
            )

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def strategy_spec(self) -> Spec:
        return parse_spec(self.strategy, STRATEGY_SCHEMA, "parallel.strategy")

    @property
    def compress_spec(self) -> Spec:
        return parse_spec(self.compress, COMPRESSOR_SCHEMA, "parallel.compress")

    def threads_per_worker(self, local_workers: int) -> int:
        """``threads``, or the machine's cores shared evenly among the workers on this node."""
        return self.threads or max(1, (os.cpu_count() or 1) // max(1, local_workers))


@dataclass(frozen=True)
class TrainConfig:
    """The loop: batch sizes in sequences, step counts, precision, logging, checkpoints."""

    micro_batch: int = key(16, "sequences per worker per forward/backward")
    global_batch: int = key(64, "sequences per optimizer step, summed over workers and micro-steps")
    max_steps: int = key(650, "length of the run (the LR schedule spans it)")
    stop_after: int = key(0, "stop this invocation after N steps (checkpointed), e.g. for a job time limit")
    precision: str = key("fp32", "fp32 | bf16 (autocast)")
    activation_checkpointing: str = key("none", "none | selective | full: recompute block activations in backward")
    compile: bool = key(False, "torch.compile the model (inductor; on CPU its C++ backend needs a compiler)")
    seed: int = key(1337, "seeds the model, the data order, dropout and sampling")
    log_interval: int = key(1, "steps between records in metrics.jsonl")
    profile: str = key(
        "",
        "steps to profile, FIRST:LAST (LAST excluded), e.g. 20:25: torch.profiler traces and gradsync's "
        'timeline of every rank in RUN/profile/ (gradsync timeline RUN draws it); "" = off',
    )
    eval_interval: int = key(100, "steps between evaluations on held-out data")
    eval_sequences: int = key(64, "held-out examples each evaluation uses")
    ckpt_interval: int = key(250, "0 = only at the end")
    keep_checkpoints: int = key(5, "keep the newest K checkpoints of a run; 0 = keep all")
    checkpoint_format: str = key("file", "file: rank 0 writes one file | dcp: every rank writes its slices (a folder)")
    async_checkpoint: bool = key(False, "dcp only: write in the background while training goes on")
    max_bad_steps: int = key(5, "consecutive steps with non-finite loss/gradients skipped before stopping")
    sample_tokens: int = key(300, "tokens generated from the final model into sample.txt; 0 = none")
    sample_prompt: str = key("def ", "the prompt of that sample")
    run_dir: str = key("", '"" = a new folder runs/<date-time>')
    resume: str = key("", '"" = fresh run; "auto" = latest checkpoint in run_dir; or a checkpoint path')
    peak_tflops: float = key(0.0, "per-worker peak for MFU; 0 = measure with a matmul benchmark")
    progress: bool = key(True, "a bar on a terminal, plain lines in a file; false = neither")
    print_interval: int = key(0, "steps between plain progress lines when stderr is not a terminal; 0 = ~20 a run")
    loggers: str = key("", "experiment trackers fed every metric, comma-separated: tensorboard, wandb, trackio")

    def __post_init__(self) -> None:
        _check(self.micro_batch >= 1, f"train.micro_batch must be >= 1, got {self.micro_batch}")
        _check(self.global_batch >= 1, f"train.global_batch must be >= 1, got {self.global_batch}")
        _check(self.max_steps >= 1, f"train.max_steps must be >= 1, got {self.max_steps}")
        _check(self.stop_after >= 0, f"train.stop_after must be >= 0, got {self.stop_after}")
        _check(
            self.activation_checkpointing in CHECKPOINTING,
            f"train.activation_checkpointing '{self.activation_checkpointing}' is unknown; choose one of "
            f"{', '.join(CHECKPOINTING)}",
        )
        _check(
            self.precision in PRECISIONS,
            f"train.precision '{self.precision}' is unknown; choose one of {', '.join(PRECISIONS)}",
        )
        _check(self.log_interval >= 1, f"train.log_interval must be >= 1, got {self.log_interval}")
        _check(
            not self.profile or profile_window(self.profile) is not None,
            f"train.profile must be FIRST:LAST with 0 <= FIRST < LAST (steps), e.g. 20:25; got '{self.profile}'",
        )
        unknown = [n for n in self.loggers.split(",") if n.strip() and n.strip() not in LOGGERS]
        _check(
            not unknown,
            f"train.loggers: unknown logger '{unknown[0] if unknown else ''}'; choose from {', '.join(LOGGERS)}",
        )
        _check(
            self.print_interval >= 0, f"train.print_interval must be >= 0 (0 = automatic), got {self.print_interval}"
        )
        _check(self.eval_interval >= 1, f"train.eval_interval must be >= 1, got {self.eval_interval}")
        _check(self.eval_sequences >= 1, f"train.eval_sequences must be >= 1, got {self.eval_sequences}")
        _check(self.ckpt_interval >= 0, f"train.ckpt_interval must be >= 0, got {self.ckpt_interval}")
        _check(self.max_bad_steps >= 0, f"train.max_bad_steps must be >= 0, got {self.max_bad_steps}")
        _check(
            self.checkpoint_format in ("file", "dcp"),
            f"train.checkpoint_format must be file or dcp, got '{self.checkpoint_format}'",
        )
        _check(
            not self.async_checkpoint or self.checkpoint_format == "dcp",
            "train.async_checkpoint needs train.checkpoint_format=dcp",
        )
        _check(
            self.keep_checkpoints >= 0,
            f"train.keep_checkpoints must be >= 0 (0 keeps all), got {self.keep_checkpoints}",
        )
        _check(self.sample_tokens >= 0, f"train.sample_tokens must be >= 0, got {self.sample_tokens}")
        _check(self.peak_tflops >= 0, f"train.peak_tflops must be >= 0, got {self.peak_tflops}")
        _check(0 <= self.seed < 2**63, f"train.seed must be in [0, 2**63), got {self.seed}")


@dataclass(frozen=True)
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    bert: BertConfig = field(default_factory=BertConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    hf: HFConfig = field(default_factory=HFConfig)

    def __post_init__(self) -> None:
        self.check_world(self.parallel.world_size)

    def check_world(self, world_size: int) -> None:
        """Raise unless the global batch splits evenly into ``world_size`` workers' micro-batches."""
        per_step = world_size * self.train.micro_batch
        _check(
            self.train.global_batch % per_step == 0,
            f"train.global_batch ({self.train.global_batch}) must be divisible by "
            f"world size × train.micro_batch ({world_size} × {self.train.micro_batch} = {per_step})",
        )

    def grad_accum_steps(self, world_size: int) -> int:
        self.check_world(world_size)
        return self.train.global_batch // (world_size * self.train.micro_batch)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_toml(
        self, meanings: dict[str, str] | None = None, changed_only: bool = False, origins: dict[str, str] | None = None
    ) -> str:
        """The resolved config as TOML (``None`` values are left out: they mean 'use the default';
        with ``meanings``, each key's is a comment after it and a left-out key is a comment;
        ``changed_only``: just the keys whose values differ from the defaults; ``origins``: where a
        key's value came from, as a comment, e.g. ``# from task bert`` (:func:`sources`))."""
        lines: list[str] = []
        default = Config().to_dict() if changed_only else {}
        for section, values in self.to_dict().items():
            if changed_only:
                values = {k: v for k, v in values.items() if v != default[section][k]}
                if not values:
                    continue
            lines.append(f"[{section}]")
            for k, v in values.items():
                note = f"  # {meanings[f'{section}.{k}']}" if meanings else ""
                if origins and f"{section}.{k}" in origins:
                    note += f"  # from {origins[f'{section}.{k}']}"
                if v is not None:
                    lines.append(f"{k} = {_toml_value(v)}{note}")
                elif meanings:
                    lines.append(f"# {k} = (unset){note}")
            lines.append("")
        return "\n".join(lines)

    def replace(self, **overrides: Any) -> Config:
        """A copy with dotted overrides applied, e.g. ``cfg.replace(**{"train.max_steps": 5})``."""
        return build_config(self.to_dict(), overrides)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    # a TOML basic string: JSON's escapes (\n, \t, \", \\, \uXXXX) are TOML's too
    return json.dumps(str(v), ensure_ascii=False).replace("\x7f", "\\u007f")


_SECTIONS: dict[str, type] = {
    "task": TaskConfig,
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "parallel": ParallelConfig,
    "train": TrainConfig,
    "bert": BertConfig,
    "image": ImageConfig,
    "speech": SpeechConfig,
    "hf": HFConfig,
}


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Turn ``value`` (a TOML value or a command-line string) into ``typ``, or raise ConfigError."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
            return None
        return _coerce(key, value, args[0])
    if typ not in (bool, int, float, str):
        raise ConfigError(f"{key}: unsupported type {typ}")
    try:
        out = coerce(value, typ)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be of type {typ.__name__}, got {value!r}") from None
    if typ is float and not math.isfinite(out):  # no setting means anything at inf or nan
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return out


def profile_window(spec: str) -> tuple[int, int] | None:
    """``"20:25"`` -> ``(20, 25)``: the steps ``train.profile`` records (None if malformed)."""
    first, sep, last = spec.partition(":")
    if not sep or not first.strip().isdigit() or not last.strip().isdigit():
        return None
    a, b = int(first), int(last)
    return (a, b) if a < b else None


def build_config(base: dict[str, dict[str, Any]] | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Build a validated Config from nested ``base`` values and dotted ``overrides``."""
    values: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    for section, table in (base or {}).items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown config section [{section}]; valid: {', '.join(_SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"config section [{section}] must be a table")
        for k, v in table.items():
            _set(values, f"{section}.{k}", v)
    for key, v in (overrides or {}).items():
        _set(values, key, v)
    for key, v in chosen_defaults(values).items():
        _set(values, key, v)
    parts = {s: cls(**values[s]) for s, cls in _SECTIONS.items()}
    return Config(**parts)


def chosen_defaults(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The defaults chosen for this run where ``values`` (what the user set) has nothing: the
    task's own (:data:`gradsync.core.catalog.TASK_DEFAULTS`), and a warm-up no longer than a
    quarter of the run. Shown by ``gradsync config`` and a run's opening lines (:func:`sources`)."""
    given = {f"{s}.{k}" for s, table in values.items() for k in table}
    task = values["task"].get("name", TaskConfig.name)
    batch = {"train.global_batch", "train.micro_batch"}  # a pair: the user's one with the task's may not divide
    out = {
        k: v for k, v in TASK_DEFAULTS.get(task, {}).items() if k not in given and not (k in batch and batch & given)
    }
    if "optim.warmup_steps" not in given:
        steps: Any = out.get("train.max_steps", values["train"].get("max_steps", TrainConfig.max_steps))
        cap = warmup_cap(int(steps))
        if cap is not None:
            out["optim.warmup_steps"] = cap
    return out


def warmup_cap(max_steps: int) -> int | None:
    """The warm-up a run of ``max_steps`` gets where nobody set one: a quarter of the run, when that
    is shorter than the default (None: the default stands)."""
    cap = max_steps // WARMUP_SHARE
    return cap if cap < OptimConfig.warmup_steps else None


def sources(cfg: Config) -> dict[str, str]:
    """Where the keys a run's task or length chose came from, for the keys whose value is that
    choice: ``{"optim.lr": "task bert", "optim.warmup_steps": "a quarter of train.max_steps"}``."""
    flat = {f"{s}.{k}": v for s, table in cfg.to_dict().items() for k, v in table.items()}
    out = {k: f"task {cfg.task.name}" for k, v in TASK_DEFAULTS.get(cfg.task.name, {}).items() if flat[k] == v}
    if cfg.optim.warmup_steps == warmup_cap(cfg.train.max_steps):
        out["optim.warmup_steps"] = f"train.max_steps / {WARMUP_SHARE}"
    return out


def _set(values: dict[str, dict[str, Any]], key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    cls = _SECTIONS.get(section)
    if cls is None or name not in {f.name for f in fields(cls)}:
        raise ConfigError(f"unknown config key '{key}'; valid keys: {', '.join(all_keys())}")
    values[section][name] = _coerce(key, value, _field_type(cls, name))


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in _SECTIONS.items() for f in fields(cls)]


def key_meanings() -> dict[str, str]:
    """Every config key's meaning, from its field's metadata (:func:`key`): one source of truth for
    the code and ``gradsync config --show``; a test checks that every key has one."""
    return {f"{s}.{f.name}": f.metadata.get("help", "") for s, cls in _SECTIONS.items() for f in fields(cls)}


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file '{path}' is not valid TOML: {e}") from None


# Fields that must be equal between a checkpoint's config and the resuming run's config.
RESUME_MUST_MATCH = (
    "task.name",
    "bert.mask_prob",
    "image.source",
    "image.size",
    "image.channels",
    "image.width",
    "image.test_fraction",
    "speech.source",
    "speech.sample_rate",
    "speech.clip_s",
    "speech.n_mels",
    "speech.width",
    "speech.test_fraction",
    "hf.config",
    "hf.pretrained",
    "model.preset",
    "model.n_layer",
    "model.n_head",
    "model.n_embd",
    "data.source",
    "data.tokenizer",
    "data.bpe_vocab_size",
    "data.seq_len",
    "data.val_fraction",
    "data.vocab_size",
    "data.synthetic_vocab",
    "data.synthetic_order",
    "data.synthetic_tokens",
    "data.synthetic_alpha",
    "data.synthetic_seed",
    "train.global_batch",
    "train.seed",
    "parallel.strategy",
    "parallel.compress",
    "optim.name",
)


def incompatible_fields(saved: dict[str, dict[str, Any]], current: Config) -> list[str]:
    """The fields in RESUME_MUST_MATCH whose values differ, formatted ``key: saved -> current``."""
    cur = current.to_dict()
    default = Config().to_dict()
    diffs = []
    for key in RESUME_MUST_MATCH:
        s, n = key.split(".")
        # a section a checkpoint lacks was added after it was written: it ran with the default
        a, b = (saved[s].get(n) if s in saved else default[s][n]), cur[s][n]
        if a != b:
            diffs.append(f"{key}: {a!r} -> {b!r}")
    return diffs
