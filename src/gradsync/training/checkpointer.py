"""When a run saves, what a checkpoint holds, and how a run resumes from one.

A checkpoint holds the strategy's state (full model + torch-format optimizer state, whatever the
strategy), the number of finished steps, the data position, every rank's RNG state, the resolved
config and the world size, so that resuming is exact (bitwise, at the same world size). Files are
written atomically with a checksum and only the newest ``train.keep_checkpoints`` are kept
(:mod:`gradsync.checkpoint.format`); resuming from a folder falls back to the newest intact file.
With ``train.checkpoint_format = "dcp"`` every rank writes its slices instead
(:mod:`gradsync.checkpoint.dcp`); a run resumes from either kind, whatever it writes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gradsync.checkpoint import format as ckpt
from gradsync.checkpoint.dcp import ShardedCheckpoints, check_supported, load_sharded
from gradsync.core.config import Config
from gradsync.core.errors import TrainingError
from gradsync.data import ShardedBatches
from gradsync.parallel import Strategy
from gradsync.runtime.dist import Comm


class Checkpointer:
    def __init__(self, cfg: Config, comm: Comm, strategy: Strategy, batches: ShardedBatches) -> None:
        self.cfg = cfg
        self.comm = comm
        self.strategy = strategy
        self.batches = batches
        self.run_dir = Path(cfg.train.run_dir)
        self.interval = cfg.train.ckpt_interval
        self.last_saved = -1  # the step of the last checkpoint this invocation completed
        self.sharded: ShardedCheckpoints | None = None
        if cfg.train.checkpoint_format == "dcp":
            check_supported(cfg)
            self.sharded = ShardedCheckpoints(comm, background=cfg.train.async_checkpoint)

    def restore(self) -> tuple[int, Path | None]:
        """Resume as ``train.resume`` says: (the step to continue from, the checkpoint), or (0, None)."""
        path = ckpt.resolve_resume(self.cfg.train.resume, self.run_dir)
        if path is None:
            return 0, None
        if ckpt.is_sharded(path):
            state = ckpt.read_manifest(path)
            ckpt.check_compatible(state, self.cfg, path)
            load_sharded(path, state, self.strategy, self.comm)  # the manifest read (and its files checked) once
        else:
            state = ckpt.load_checkpoint(path)
            ckpt.check_compatible(state, self.cfg, path)
            self.strategy.load_state_dict(state["strategy"])
        self.batches.load_state_dict(state["data"])
        ckpt.restore_rng_state(state, self.comm)
        return int(state["step"]), path

    def due(self, done: int, end: int) -> bool:
        """Save after ``done`` steps? Every ``train.ckpt_interval`` steps (0: never) and at the end."""
        return bool(self.interval and done % self.interval == 0) or done == end

    def save(self, step: int) -> Path:
        """Write a checkpoint after ``step`` finished steps (collective: sharded strategies gather;
        rank 0 writes)."""
        rngs = ckpt.gather_rng_states(self.comm)
        meta = {
            "step": step,
            "data": self.batches.state_dict(),
            "rng": rngs,
            "config": self.cfg.to_dict(),
            "world_size": self.comm.world_size,
        }
        path = ckpt.checkpoint_path(self.run_dir, step, sharded=self.sharded is not None)
        if self.sharded is not None:
            slices = self.strategy.slices.save()
            self._refuse_non_finite(step, [s.tensor for s in slices.slices if s.key.startswith("model/")])
            done = self.sharded.save(path, slices, meta, self.cfg.train.keep_checkpoints, step)
            if done is not None:
                self.last_saved = done
            return path
        strategy_state = self.strategy.state_dict()
        self._refuse_non_finite(step, list(strategy_state["model"].values()))
        if self.comm.env.is_main:
            ckpt.save_checkpoint(path, {**meta, "strategy": strategy_state}, keep=self.cfg.train.keep_checkpoints)
        self.last_saved = step
        return path

    def flush(self) -> None:
        """Complete a checkpoint still being written in the background (collective)."""
        if self.sharded is not None:
            done = self.sharded.flush()
            if done is not None:
                self.last_saved = done

    def _refuse_non_finite(self, step: int, tensors: list[torch.Tensor]) -> None:
        """A checkpoint is something to go back to: never write one of poisoned weights (an update
        with a finite but huge learning rate makes them inf without any non-finite gradient)."""
        bad = sum(int(not torch.isfinite(t).all()) for t in tensors)
        if self.comm.sum_scalars([float(bad)])[0] > 0:
            raise TrainingError(
                f"the model's weights are not finite after step {step} (is the learning rate too "
                f"high?); not writing them as a checkpoint: {self.describe_last()}"
            )

    def describe_last(self) -> str:
        """What is safe on disk, for an error that stops the run."""
        if self.last_saved > 0:
            where = ckpt.checkpoint_path(self.run_dir, self.last_saved, self.sharded is not None)
            return f"the last checkpoint, {where}, is intact"
        return "no checkpoint was written in this invocation"
