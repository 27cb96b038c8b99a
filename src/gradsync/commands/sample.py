"""``gradsync sample``: what a trained model says (text for language models, predictions for
classifiers), from a checkpoint file or the newest intact one in a run folder."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gradsync.core.errors import ConfigError
from gradsync.tasks import load_trained


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint file, or a run folder (its latest checkpoint)")
    p.add_argument("--prompt", default="def ")
    p.add_argument("--tokens", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)


def run(ns: argparse.Namespace, extra: Sequence[str]) -> int:
    if extra:
        raise ConfigError(f"sample: unrecognized argument(s) {' '.join(extra)}")
    if ns.tokens < 1 or ns.temperature <= 0 or ns.top_k < 1:
        raise ConfigError("sample: --tokens and --top-k must be >= 1 and --temperature > 0")
    task, model, _ = load_trained(ns.checkpoint)
    text = task.predict(model, ns.prompt, ns.tokens, ns.seed, ns.temperature, ns.top_k)
    if not text:
        raise ConfigError(f"sample: task {task.name} has no sample output (its predict() returns nothing)")
    print(text)
    return 0
