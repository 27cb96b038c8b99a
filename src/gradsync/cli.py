"""``gradsync`` command line: a table of commands, each a module of :mod:`gradsync.commands`
imported only when it is the one asked for (so ``gradsync plan`` runs without torch).

Bad input exits with status 2 and one line, ``gradsync: error: ...``, that says what to fix.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from gradsync.core.args import ArgParser, fail
from gradsync.core.console import survive_closed_output
from gradsync.core.errors import EXIT_PREEMPTED, GradsyncError, Preempted, one_line_error

# name: (module, one-line help). The help is here so that `gradsync --help` imports no command.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "gradsync.commands.train",
        "train a model (--task gpt, bert, image, speech, hf-*, yours) with N data-parallel workers (the main job)",
    ),
    "run": (
        "gradsync.commands.run",
        "run your own training script on N workers (launcher, rendezvous, timeouts, restarts)",
    ),
    "prepare": (
        "gradsync.commands.prepare",
        "tokenize a corpus once, in parallel, into shards a run memory-maps "
        "(text, JSON Lines, Parquet, a saved datasets folder)",
    ),
    "lighthouse": (
        "gradsync.commands.lighthouse",
        "the torchft Lighthouse of a live job (--fault-tolerance live): forms each step's quorum of replicas",
    ),
    "sample": ("gradsync.commands.sample", "what a trained model says: text, or predictions"),
    "export": ("gradsync.commands.export", "write a trained model for other tools (transformers, safetensors)"),
    "bench": ("gradsync.commands.bench", "compare strategies side by side (tokens/s, step time, comm)"),
    "calibrate": (
        "gradsync.commands.calibrate",
        "measure collectives (alpha, beta), compute and optimizer speed for the cost model; writes a JSON profile",
    ),
    "config": (
        "gradsync.commands.config",
        "print the configuration a train with these flags would run: the "
        "changed keys as TOML, or --show every key with its meaning",
    ),
    "timeline": (
        "gradsync.commands.timeline",
        "where a profiled run's time went (--train.profile): each collective of a step, ranks x time as a PNG, "
        "the cost model's prediction beside it",
    ),
    "plan": (
        "gradsync.commands.plan",
        "predict step time, tokens/s, MFU and memory of every strategy on a "
        "cluster, recommend one, plot scaling (the cost model; no GPUs needed)",
    ),
}


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``gradsync COMMAND`` (imports that command's module only)."""
    module = importlib.import_module(COMMANDS[command][0])
    p = ArgParser(prog=f"gradsync {command}", description=COMMANDS[command][1])
    module.add_args(p)
    return p


def _top_level_help() -> str:
    width = max(len(n) for n in COMMANDS)
    rows = "\n".join(f"  {n:<{width}}  {h}" for n, (_, h) in COMMANDS.items())
    return (
        "usage: gradsync {" + ",".join(COMMANDS) + "} ...\n\nData-parallel training of language models.\n\n"
        f"commands:\n{rows}\n\n`gradsync COMMAND --help` lists a command's options."
    )


def main(argv: Sequence[str] | None = None) -> int:
    # torch's C++ warnings (store reconnects, reverse-DNS misses) print C++ stack frames that bury the
    # one line gradsync prints; errors still show. Set TORCH_CPP_LOG_LEVEL=INFO to see them all.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    survive_closed_output()  # `gradsync ... | head` ends the output, not the run
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # --task my_module:make finds a module here, as `python -m` would
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_top_level_help(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    command = args[0]
    if command not in COMMANDS:
        fail(f"argument command: invalid choice: '{command}' (choose from {', '.join(COMMANDS)})")
    ns, extra = build_parser(command).parse_known_args(args[1:])
    try:
        return int(importlib.import_module(COMMANDS[command][0]).run(ns, extra))
    except Preempted as e:
        print(f"gradsync: {e}", file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    except (GradsyncError, OSError, MemoryError, RuntimeError) as e:  # a world of one trains in this process
        message = one_line_error(e)
        if message is None:
            raise
        fail(message)
    except KeyboardInterrupt:
        fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
