"""``gradsync`` command line: ``train`` (the main job), ``sample`` (text from a checkpoint) and
``bench`` (strategies side by side).

Every config key can be set as ``--section.key=value`` (``--train.max_steps=50``) or, when its name
is unique, as ``--key value`` (``--max-steps 50``, ``--sample-tokens 100``). Bad input exits with status 2 and one line,
``gradsync: error: ...``, that says what to fix.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn, Sequence

from gradsync.config import Config, all_keys, build_config, load_toml
from gradsync.errors import ConfigError, GradsyncError

# Short flags and the config keys they set.
ALIASES: dict[str, str] = {
    "--nproc": "parallel.nproc",
    "--nnodes": "parallel.nnodes",
    "--rdzv-endpoint": "parallel.rdzv_endpoint",
    "--rdzv-id": "parallel.rdzv_id",
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
    "--seed": "train.seed",
    "--run-dir": "train.run_dir",
    "--ckpt-interval": "train.ckpt_interval",
    "--eval-interval": "train.eval_interval",
    "--peak-tflops": "train.peak_tflops",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    print(f"gradsync: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml", help="TOML file with [model], [data], [optim], "
                   "[parallel], [train] tables")
    for flag, key in ALIASES.items():
        p.add_argument(flag, dest=key, metavar=key.split(".")[1].upper(), help=f"sets {key}")
    p.add_argument("--resume", dest="train.resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue from a checkpoint file or run folder (default: latest in --run-dir)")
    p.add_argument("--no-progress", dest="train.progress", action="store_const", const="false",
                   help="no progress bar")


def config_from_args(ns: argparse.Namespace, extra: Sequence[str]) -> Config:
    """Config from --config, then the short flags, then ``--section.key[=]value`` leftovers."""
    base = load_toml(ns.config) if getattr(ns, "config", None) else {}
    overrides: dict[str, Any] = {k: v for k, v in vars(ns).items() if "." in k and v is not None}
    overrides.update(parse_dotted(extra))
    return build_config(base, overrides)


def parse_dotted(extra: Sequence[str]) -> dict[str, str]:
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
        raise ConfigError(f"unrecognized argument '--{key}'; config keys are set as --section.key=value "
                          f"(valid keys: {', '.join(all_keys())})")
    return matches[0]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gradsync", description="Data-parallel training of language models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    tr = sub.add_parser("train", help="train a GPT with N data-parallel workers (the main job)")
    add_config_args(tr)
    b = sub.add_parser("bench", help="compare strategies side by side (tokens/s, step time, comm)")
    add_config_args(b)
    b.add_argument("--strategies", default="allreduce,bucketed,torch-ddp")
    b.add_argument("--worlds", default="1,2", help="comma-separated worker counts")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--steps", type=int, default=30, help="timed steps per run")
    b.add_argument("--warmup", type=int, default=5, help="steps before the timed ones")
    b.add_argument("--out", default="", help="write the table as Markdown to this file")
    c = sub.add_parser("calibrate", help="measure collectives (alpha, beta), compute and optimizer speed "
                       "for the cost model; writes a JSON profile")
    add_config_args(c)
    c.add_argument("--out", default="", help="profile path (default: profile.json in the gradsync cache)")
    c.add_argument("--max-mb", type=float, default=256.0, help="largest message, MiB (from 4 KiB up)")
    pl = sub.add_parser("plan", help="predict step time, tokens/s, MFU and memory of every strategy on a "
                        "cluster, recommend one, plot scaling (the cost model; no GPUs needed)")
    from gradsync.plan import add_plan_args

    add_plan_args(pl)
    sm = sub.add_parser("sample", help="generate text from a checkpoint")
    sm.add_argument("checkpoint", help="checkpoint file, or a run folder (its latest checkpoint)")
    sm.add_argument("--prompt", default="def ")
    sm.add_argument("--tokens", type=int, default=300)
    sm.add_argument("--temperature", type=float, default=0.8)
    sm.add_argument("--top-k", type=int, default=40)
    sm.add_argument("--seed", type=int, default=0)
    return p


def sample_command(ns: argparse.Namespace) -> int:
    from gradsync.sample import load_model, sample_text

    if ns.tokens < 1 or ns.temperature <= 0 or ns.top_k < 1:
        raise ConfigError("sample: --tokens and --top-k must be >= 1 and --temperature > 0")
    model, data = load_model(ns.checkpoint)
    print(sample_text(model, data, ns.prompt, ns.tokens, ns.seed, ns.temperature, ns.top_k))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    # torch's C++ warnings (store reconnects, reverse-DNS misses) print C++ stack frames that bury the
    # one line gradsync prints; errors still show. Set TORCH_CPP_LOG_LEVEL=INFO to see them all.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    try:
        if ns.command == "train":
            from gradsync.launch import train_command

            return train_command(config_from_args(ns, extra))
        if ns.command == "sample":
            return sample_command(ns)
        if ns.command == "plan":
            from gradsync.plan import plan_command

            if extra:
                raise ConfigError(f"plan: unrecognized argument(s) {' '.join(extra)}")
            return plan_command(ns)
        if ns.command == "calibrate":
            from gradsync.calibrate import calibrate_command

            return calibrate_command(config_from_args(ns, extra), ns)
        if ns.command == "bench":
            from gradsync.bench import bench_command

            return bench_command(config_from_args(ns, extra), ns)
    except GradsyncError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted")
    return 1


if __name__ == "__main__":
    sys.exit(main())
