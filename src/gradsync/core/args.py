"""The run configuration on the command line: the public argument parser every command and
worker entry uses.

Every config key can be set as ``--section.key=value`` (``--train.max_steps=50``) or, when its name
is unique, as ``--key value`` (``--max-steps 50``, ``--sample-tokens 100``); the short flags in
:data:`ALIASES` are listed in ``--help``. Bad input exits with status 2 and one line,
``gradsync: error: ...``, that says what to fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from gradsync.core.config import Config, all_keys, build_config, load_toml
from gradsync.core.errors import ConfigError
from gradsync.core.slurm import slurm_settings

# Short flags and the config keys they set.
ALIASES: dict[str, str] = {
    "--task": "task.name",
    "--nproc": "parallel.nproc",
    "--nnodes": "parallel.nnodes",
    "--rdzv-endpoint": "parallel.rdzv_endpoint",
    "--rdzv-id": "parallel.rdzv_id",
    "--node-rank": "parallel.node_rank",
    "--local-addr": "parallel.local_addr",
    "--strategy": "parallel.strategy",
    "--compress": "parallel.compress",
    "--bucket-mb": "parallel.bucket_mb",
    "--backend": "parallel.backend",
    "--timeout": "parallel.timeout_s",
    "--threads": "parallel.threads",
    "--max-restarts": "parallel.max_restarts",
    "--model": "model.preset",
    "--n-layer": "model.n_layer",
    "--n-head": "model.n_head",
    "--n-embd": "model.n_embd",
    "--data": "data.source",
    "--tokenizer": "data.tokenizer",
    "--seq-len": "data.seq_len",
    "--optimizer": "optim.name",
    "--lr": "optim.lr",
    "--warmup-steps": "optim.warmup_steps",
    "--weight-decay": "optim.weight_decay",
    "--grad-clip": "optim.grad_clip",
    "--micro-batch": "train.micro_batch",
    "--global-batch": "train.global_batch",
    "--max-steps": "train.max_steps",
    "--precision": "train.precision",
    "--activation-checkpointing": "train.activation_checkpointing",
    "--seed": "train.seed",
    "--run-dir": "train.run_dir",
    "--ckpt-interval": "train.ckpt_interval",
    "--eval-interval": "train.eval_interval",
    "--peak-tflops": "train.peak_tflops",
    "--loggers": "train.loggers",
}


def fail(message: str) -> NoReturn:
    """Print ``gradsync: error: message`` and exit with status 2."""
    print(f"gradsync: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


class ArgParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are gradsync's one line (status 2)."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def add_config_args(p: argparse.ArgumentParser) -> None:
    """``--config FILE.toml``, the short flags, ``--resume`` and ``--no-progress``; any other
    ``--section.key=value`` is taken from the leftovers by :func:`config_from_args`."""
    p.add_argument(
        "--config", metavar="FILE.toml", help="TOML file with [model], [data], [optim], [parallel], [train] tables"
    )
    for flag, key in ALIASES.items():
        p.add_argument(flag, dest=key, metavar=key.split(".")[1].upper(), help=f"sets {key}")
    p.add_argument(
        "--resume",
        dest="train.resume",
        nargs="?",
        const="auto",
        metavar="CKPT",
        help="continue from a checkpoint file or run folder (default: latest in --run-dir)",
    )
    p.add_argument("--no-progress", dest="train.progress", action="store_const", const="false", help="no progress bar")
    p.add_argument(
        "--compile", dest="train.compile", action="store_const", const="true", help="torch.compile the model"
    )


def config_from_args(ns: argparse.Namespace, extra: Sequence[str]) -> Config:
    """Config from the defaults, then a Slurm job step's environment (:mod:`gradsync.core.slurm`),
    then --config, then the short flags, then ``--section.key[=]value`` leftovers."""
    base = load_toml(ns.config) if getattr(ns, "config", None) else {}
    overrides: dict[str, Any] = {
        k: v for k, v in slurm_settings().items() if k.split(".")[1] not in base.get(k.split(".")[0], {})
    }
    overrides.update({k: v for k, v in vars(ns).items() if "." in k and v is not None})
    overrides.update(parse_dotted(extra))
    return build_config(base, overrides)


def parse_dotted(extra: Sequence[str]) -> dict[str, str]:
    """``["--train.max_steps=5", "--lr", "0.1"]`` -> ``{"train.max_steps": "5", "optim.lr": "0.1"}``."""
    out: dict[str, str] = {}
    items = list(extra)
    i = 0
    while i < len(items):
        arg = items[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument '{arg}'")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif i + 1 < len(items):
            key, value = arg[2:], items[i + 1]
            i += 1
        else:
            raise ConfigError(f"{arg} needs a value")
        out[_full_key(key)] = value
        i += 1
    return out


def _full_key(key: str) -> str:
    """``train.max_steps`` as is; ``max-steps`` or ``max_steps`` when the name is unique."""
    if "." in key:
        return key
    name = key.replace("-", "_")
    matches = [k for k in all_keys() if k.split(".")[1] == name]
    if len(matches) != 1:
        raise ConfigError(
            f"unrecognized argument '--{key}'; config keys are set as --section.key=value "
            f"(valid keys: {', '.join(all_keys())})"
        )
    return matches[0]
