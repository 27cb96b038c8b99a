"""Atomic, checksummed checkpoints that resume a run exactly.

A checkpoint holds the strategy's state (model and optimizer), the number of finished steps, the
data position, every rank's RNG state, the resolved config and the world size. It is written by
rank 0 to a temporary file in the same folder, flushed to disk, then renamed over the final name,
so a crash while saving never leaves a half-written checkpoint under a real name. The file starts
with a magic line and the SHA-256 of the rest, so a truncated or damaged file is recognised
before unpickling; resuming from a folder then falls back to the newest checkpoint that is intact,
with a warning. Only the newest ``train.keep_checkpoints`` are kept.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch

from gradsync.config import Config, incompatible_fields
from gradsync.errors import CheckpointError
from gradsync.files import atomic_write_bytes

FORMAT = "gradsync-checkpoint/1"  # the dict inside; the file around it is MAGIC + sha256 + payload
MAGIC = b"GRADSYNC-CHECKPOINT v2\n"
_NAME = re.compile(r"^ckpt_(\d{7,})\.pt$")
REQUIRED = ("format", "step", "strategy", "data", "rng", "config", "world_size")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt_{step:07d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints in ``run_dir``, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(path: Path, state: dict[str, Any], keep: int = 0) -> None:
    """Write ``state`` atomically with its checksum; then keep only the newest ``keep``
    checkpoints in the folder (0 = all) and remove temporary files that dead writers left."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    payload = buf.getvalue()
    try:
        atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).digest() + payload)
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint '{path}' ({e.strerror or e}); "
                              "the previous checkpoints are intact") from None
    _prune(path.parent, keep, path)


def _prune(folder: Path, keep: int, newest: Path) -> None:
    for stale in folder.glob(".ckpt_*.pt.tmp-*"):
        if stale.name.rsplit("-", 1)[-1] != str(os.getpid()):
            stale.unlink(missing_ok=True)
    if keep > 0:
        for old in list_checkpoints(folder.parent)[:-keep]:
            if old != newest:
                old.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, required: tuple[str, ...] = REQUIRED) -> dict[str, Any]:
    """Load and sanity-check a checkpoint (it must hold the ``required`` entries: a training run's
    by default), or raise a one-line CheckpointError."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint '{path}' is unreadable ({e.strerror or e})") from None
    if raw.startswith(MAGIC):
        digest, payload = raw[len(MAGIC):len(MAGIC) + 32], raw[len(MAGIC) + 32:]
        if hashlib.sha256(payload).digest() != digest:
            raise CheckpointError(f"checkpoint '{path}' is corrupt (checksum mismatch: truncated or damaged)")
        raw = payload
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint '{path}' is corrupt or unreadable ({first[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint '{path}' is not a gradsync checkpoint (format {FORMAT} expected)")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint '{path}' is incomplete: missing {', '.join(missing)}")
    return state


def resolve_resume(resume: str, run_dir: str | Path) -> Path | None:
    """The checkpoint ``--resume`` names: ``auto`` = the newest intact one in run_dir (None if
    there is none), a folder = the newest intact one in it, a file = that file (strictly)."""
    if not resume:
        return None
    if resume == "auto":
        return newest_intact(list_checkpoints(run_dir), run_dir)
    p = Path(resume)
    if p.is_dir():
        found = list_checkpoints(p) or list_checkpoints(p.parent)
        if not found:
            raise CheckpointError(f"no checkpoints found in '{resume}'")
        return newest_intact(found, resume)
    if not p.exists():
        raise CheckpointError(f"checkpoint '{resume}' does not exist")
    return p


def newest_intact(found: list[Path], where: str | Path) -> Path | None:
    """The newest of ``found`` that loads, warning about each damaged one skipped on the way."""
    damaged: list[CheckpointError] = []
    for path in reversed(found):
        try:
            load_checkpoint(path)
        except CheckpointError as e:
            damaged.append(e)
            continue
        for e in damaged:
            print(f"gradsync: warning: {e}; using an older one", file=sys.stderr, flush=True)
        return path
    if found:
        raise CheckpointError(f"no intact checkpoint in '{where}': all {len(found)} are damaged; "
                              f"the newest: {damaged[0]}")
    return None


def check_compatible(state: dict[str, Any], cfg: Config, path: str | Path) -> None:
    diffs = incompatible_fields(state["config"], cfg)
    if diffs:
        raise CheckpointError(f"checkpoint '{path}' was written with a different config: {'; '.join(diffs)}")


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
