"""Tasks: what is trained (see :class:`~gradsync.tasks.base.Task`). The built-in ones are named in
:data:`gradsync.core.catalog.TASKS`; ``--task package.module:factory`` runs any other."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from gradsync.checkpoint import format as ckpt
from gradsync.core.catalog import TASKS, resolve
from gradsync.core.config import Config, build_config
from gradsync.core.errors import DEBUG_HINT, CheckpointError, ConfigError, GradsyncError
from gradsync.tasks.base import Task, accuracy_metrics, classification_sums

__all__ = ["Task", "accuracy_metrics", "build_task", "classification_sums", "load_trained"]


def build_task(cfg: Config, run_dir: Path | None = None) -> Task:
    """The task ``cfg.task.name`` names. With ``run_dir``, a finished run's task, rebuilt from what
    its folder keeps where the task supports that (language models: without their corpus)."""
    name = cfg.task.name
    if name in TASKS:
        cls = resolve(TASKS[name])
        return cls.from_run(cfg, run_dir) if run_dir is not None else cls(cfg)
    try:
        factory = resolve(name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(
            f"task '{name}' cannot be imported: {e}; the module must be importable by "
            "every worker (installed, on PYTHONPATH, or in the current folder)"
        ) from None
    try:
        task = factory(cfg)
    except GradsyncError:
        raise
    except Exception as e:
        raise ConfigError(f"task factory '{name}' failed: {type(e).__name__}: {e} ({DEBUG_HINT})") from e
    if not isinstance(task, Task):
        raise ConfigError(f"task factory '{name}' returned {type(task).__name__}, not a gradsync.tasks.Task")
    return task


def load_trained(path: str | Path) -> tuple[Task, nn.Module, Path]:
    """The model saved in a checkpoint (a file, or the newest intact one in a run folder), with its
    task and the checkpoint's path."""
    resolved = ckpt.resolve_resume(str(path), Path(path))
    if resolved is None:
        raise CheckpointError(f"no checkpoint found at '{path}'")
    state = ckpt.load_checkpoint(resolved)
    cfg = build_config(state["config"])
    task = build_task(cfg, resolved.parent.parent)
    torch.manual_seed(cfg.train.seed)
    model = task.build_model()
    try:
        model.load_state_dict(state["strategy"]["model"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint '{resolved}' holds no model matching its config ({e})") from None
    return task, model, resolved
