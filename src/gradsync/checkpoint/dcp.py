"""Sharded checkpoints (``train.checkpoint_format = "dcp"``): every rank writes its slices of the
full-model state through ``torch.distributed.checkpoint``, in parallel, instead of rank 0
gathering and writing everything; a later run at any world size reads only what each of its
ranks holds (:mod:`gradsync.checkpoint.slices`).

gradsync's guarantees hold as for single files (:mod:`gradsync.checkpoint.format`): the folder is written
under a temporary name, each rank then hashes its own files, rank 0 writes the checksummed
manifest listing every file's size and SHA-256 and renames the folder into place, so a checkpoint
is either complete or absent; a damaged shard makes resuming fall back to the newest intact
checkpoint; only the newest ``train.keep_checkpoints`` are kept.

With ``train.async_checkpoint`` the tensors are copied and written by a background thread (on a
process group of its own, so its collectives never meet the training's), and the checkpoint is
completed (hashes, manifest, rename) at the next save or at the end of the run: a run that dies
in between has lost only that checkpoint, never an older one.

Which to choose: the single file is simplest and fine while one rank can hold the whole state
(gradsync's presets up to GPT-2 XL on a large host); sharded when it cannot (ZeRO-3 of a model
larger than a rank's memory), when rank 0's write is the bottleneck, or to keep training during
the write (async).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from gradsync.checkpoint import format as ckpt
from gradsync.checkpoint.slices import SliceLayout, StateSlices
from gradsync.core.config import Config
from gradsync.core.errors import CheckpointError, ConfigError
from gradsync.runtime.dist import Comm


class HoldsSlices(Protocol):
    """What a sharded checkpoint reads into: a strategy with a :class:`SliceLayout` part."""

    slices: SliceLayout


SUPPORTED = ("allreduce", "bucketed", "zero1", "zero2", "zero3")


def check_supported(cfg: Config) -> None:
    """One line when a sharded checkpoint is asked of a strategy that cannot write one."""
    p = cfg.parallel
    if cfg.train.checkpoint_format == "dcp" and (p.strategy_spec.name not in SUPPORTED or p.compress != "none"):
        raise ConfigError(
            f"train.checkpoint_format=dcp supports the strategies {', '.join(SUPPORTED)} without "
            f"compression; for {p.strategy}{'' if p.compress == 'none' else ' + ' + p.compress} "
            "use checkpoint_format=file"
        )


class ShardedCheckpoints:
    """Writes sharded checkpoints for one run (collective: every rank calls every method)."""

    def __init__(self, comm: Comm, background: bool = False) -> None:
        self.comm = comm
        self.background = background
        # the background writer's collectives go over a group of their own
        self.group = dist.new_group(backend="gloo") if background else comm.group
        self.pending: tuple[Any, Path, Path, dict[str, Any], int, int] | None = None

    def save(self, path: Path, slices: StateSlices, meta: dict[str, Any], keep: int, step: int) -> int | None:
        """Write a strategy's ``slices`` (a strategy's ``slices.save()``) and ``meta`` (step, data,
        rng, config, world size) as the checkpoint ``path``. Returns the step now complete on
        disk: this one, or with ``background`` the previous one (or None)."""
        done = self.flush()
        state = {f"{s.key}@{s.lo}": s.tensor.contiguous() for s in slices.slices if s.tensor.numel()}
        shapes: dict[str, tuple[tuple[int, ...], str]] = {}
        for part in self.comm.all_gather_object(
            {s.key: (s.shape, str(s.tensor.dtype).removeprefix("torch.")) for s in slices.slices}
        ):
            shapes.update(part)
        manifest = {
            **meta,
            "shapes": shapes,
            "aliases": slices.extras["aliases"],
            "optimizer": {"scalars": slices.extras["scalars"], "param_groups": slices.extras["param_groups"]},
        }
        tmp = path.with_name(f".{path.name}.tmp")
        if self.comm.env.is_main:
            for stale in path.parent.glob(".ckpt_*.dcp.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.comm.all_gather_object(None)  # the folder exists before anyone writes into it
        import torch.distributed.checkpoint as dcp  # here: it costs every process 0.6 s to import

        writer = dcp.FileSystemWriter(str(tmp), single_file_per_rank=True, sync_files=True)
        if self.background:
            state = {k: v.clone() for k, v in state.items()}  # training goes on changing the originals
            future = dcp.async_save(state, storage_writer=writer, process_group=self.group)
            self.pending = (future, tmp, path, manifest, keep, step)
            return done
        dcp.save(state, storage_writer=writer, process_group=self.comm.group)
        self._complete(tmp, path, manifest, keep)
        return step

    def flush(self) -> int | None:
        """Complete a background save still pending; the step it saved, or None."""
        if self.pending is None:
            return None
        future, tmp, path, manifest, keep, step = self.pending
        self.pending = None
        future.result()
        self._complete(tmp, path, manifest, keep)
        return step

    def _complete(self, tmp: Path, path: Path, manifest: dict[str, Any], keep: int) -> None:
        rank = self.comm.env.rank
        mine = {f.name: ckpt.file_digest(f) for f in tmp.iterdir() if f.name.startswith(f"__{rank}_")}
        if self.comm.env.is_main:
            mine[".metadata"] = ckpt.file_digest(tmp / ".metadata")
        files: dict[str, tuple[int, str]] = {}
        for part in self.comm.all_gather_object(mine):
            files.update(part)
        if self.comm.env.is_main:
            try:
                ckpt.save_manifest(tmp, {**manifest, "files": files})
                if path.exists():
                    ckpt.remove_checkpoint(path)
                os.replace(tmp, path)
                _fsync_dir(path.parent)
            except OSError as e:
                raise CheckpointError(
                    f"could not write checkpoint '{path}' ({e.strerror or e}); the previous checkpoints are intact"
                ) from None
            ckpt.prune(path.parent, keep, path)
        self.comm.all_gather_object(None)  # complete for everyone before anyone reads it


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_sharded(path: Path, manifest: dict[str, Any], strategy: HoldsSlices, comm: Comm) -> None:
    """Fill ``strategy`` from the sharded checkpoint ``path`` whose checked ``manifest``
    (:func:`gradsync.checkpoint.format.read_manifest`) is given (collective; any world size wrote it):
    each rank reads the saved slices that overlap what it holds."""
    slices = strategy.slices.load({k: (tuple(shape), dtype) for k, (shape, dtype) in manifest["shapes"].items()})
    import torch.distributed.checkpoint as dcp

    reader = dcp.FileSystemReader(str(path))
    saved = ckpt.saved_slices(reader)
    wanted = {
        name: torch.empty(n, dtype=dtype)
        for s in slices.slices
        for _, n, name, dtype in ckpt.overlapping(saved, s.key, s.lo, s.tensor.numel())
    }
    dcp.load(wanted, storage_reader=reader, process_group=comm.group)
    for s in slices.slices:
        ckpt.fill_slice(s.tensor, s.key, s.lo, saved, wanted, path)
    slices.finish(manifest["optimizer"])
