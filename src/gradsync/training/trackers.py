"""Experiment trackers: every record of ``metrics.jsonl`` mirrored to TensorBoard, Weights &
Biases or trackio (``--loggers tensorboard,wandb,trackio``), by rank 0 only.

``metrics.jsonl`` stays the source of truth and a tracker run is a copy of it: each record
becomes scalars named ``KIND/KEY`` (``train/loss``, ``train/comm_blocked_s``, ``eval/val_loss``,
``memory/optimizer``, ...) at the record's step. A run killed after its last checkpoint has
logged steps that will run again; so that no tracker shows a step twice, a resumed run starts
each tracker afresh and first replays the records kept in ``metrics.jsonl`` (which the resume
has cut back to its checkpoint):

* TensorBoard: ``RUN/tensorboard/`` is replaced, so its event files hold one value per step;
* W&B and trackio: a new tracker run in the same group/project, named
  ``NAME (resumed at step N)``; the interrupted one is left as it was.

W&B follows its own environment (``WANDB_MODE=offline``, ``WANDB_PROJECT``, ``WANDB_API_KEY``)
and writes under ``RUN/wandb/``; trackio stores locally (``TRACKIO_DIR``) unless told otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from gradsync.core.config import LOGGERS
from gradsync.core.errors import ConfigError

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}  # name: package it needs
assert set(TRACKERS) == set(LOGGERS)
PROJECT = "gradsync"


class Tracker(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...
    def close(self) -> None: ...


def parse_loggers(spec: str) -> list[str]:
    """``"tensorboard,wandb"`` -> the names (``TrainConfig`` has checked them), each once."""
    return list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))


def check_installed(names: list[str]) -> None:
    """One line for a tracker whose package is missing (checked before any worker starts)."""
    for n in names:
        if importlib.util.find_spec(TRACKERS[n]) is None:
            raise ConfigError(f"--loggers {n} needs the '{TRACKERS[n]}' package: pip install 'gradsync[track]'")


def tracker_values(record: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """A metrics record as (step, scalars named KIND/KEY); values that are not numbers are left out."""
    kind = record.get("kind", "train")
    values = {
        f"{kind}/{k}": float(v) for k, v in record.items() if k not in ("kind", "step") and isinstance(v, (int, float))
    }  # bools count as 0/1
    return int(record.get("step", 0)), values


def open_trackers(names: list[str], run_dir: Path, config: dict[str, Any], resumed_at: int | None) -> list[Tracker]:
    name = run_dir.resolve().name
    title = name if resumed_at is None else f"{name} (resumed at step {resumed_at})"
    out: list[Tracker] = []
    try:
        for n in names:
            kinds: dict[str, Any] = {
                "tensorboard": TensorBoardTracker,
                "wandb": WandbTracker,
                "trackio": TrackioTracker,
            }
            out.append(kinds[n](run_dir, name, title, config))
    except Exception as e:
        for t in out:
            t.close()
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(
            f"--loggers {n}: could not start it: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    return out


class TensorBoardTracker:
    """Event files in ``RUN/tensorboard/`` through ``torch.utils.tensorboard``."""

    def __init__(self, run_dir: Path, name: str, title: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = run_dir / "tensorboard"
        shutil.rmtree(folder, ignore_errors=True)  # rebuilt from metrics.jsonl (see the module docstring)
        self.writer = SummaryWriter(str(folder), flush_secs=10)

    def log(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run (``WANDB_MODE=offline`` writes it under ``RUN/wandb/`` for ``wandb sync``)."""

    def __init__(self, run_dir: Path, name: str, title: str, config: dict[str, Any]) -> None:
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", PROJECT),
            name=title,
            group=name,
            dir=str(run_dir),
            config=config,
            reinit="create_new",
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioTracker:
    """A trackio run (local SQLite under ``TRACKIO_DIR``, or a Space when trackio is told so)."""

    def __init__(self, run_dir: Path, name: str, title: str, config: dict[str, Any]) -> None:
        import trackio

        self.trackio = trackio
        self.run = trackio.init(
            project=os.environ.get("TRACKIO_PROJECT", PROJECT),
            name=title,
            group=name,
            config=config,
            auto_log_gpu=False,
            auto_log_cpu=False,
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()
