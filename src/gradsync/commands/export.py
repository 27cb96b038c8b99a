"""``gradsync export RUN --format hf|safetensors OUT``: a trained model in a format other tools load."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gradsync.core.errors import ConfigError
from gradsync.tasks.export import FORMATS, export


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint file, or a run folder (its newest intact checkpoint)")
    p.add_argument("out", help="a new folder to write")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="hf",
        help="hf: a folder transformers' from_pretrained loads (gpt, bert, hf-* tasks); "
        "safetensors: the model's tensors, any task",
    )


def run(ns: argparse.Namespace, extra: Sequence[str]) -> int:
    if extra:
        raise ConfigError(f"export: unrecognized argument(s) {' '.join(extra)}")
    out = export(ns.checkpoint, ns.format, ns.out)
    print(f"gradsync: exported {ns.checkpoint} as {ns.format} to {out}")
    return 0
