"""``gradsync config``: the configuration a ``gradsync train`` with the same flags would run, as
TOML (reusable with ``--config``), before anything is checked on disk or started: the keys that
differ from the defaults, or with ``--show`` every key with its meaning.

Values come from the defaults, a Slurm job step's environment, ``--config`` and the flags, in
that order (:func:`gradsync.core.args.config_from_args`), then, where none of them set a key, the
task's own defaults and a warm-up no longer than a quarter of the run (marked ``# from ...``).
What ``gradsync train`` resolves later (the run folder, ``--strategy auto``, the measured peak)
is written into the run's ``config.toml``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gradsync.core.args import add_config_args, config_from_args
from gradsync.core.config import key_meanings, sources


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--show",
        action="store_true",
        help="every key, with its meaning (default: only the keys that differ from the defaults)",
    )
    add_config_args(p)


def run(ns: argparse.Namespace, extra: Sequence[str]) -> int:
    cfg = config_from_args(ns, extra)
    origins = sources(cfg)
    text = cfg.to_toml(key_meanings(), origins=origins) if ns.show else cfg.to_toml(changed_only=True, origins=origins)
    print(text.rstrip("\n") if text.strip() else "# every key has its default value")
    return 0
