"""Atomic, checksummed checkpoints that resume a run exactly.

A checkpoint holds the strategy's state (model and optimizer), the number of finished steps, the
data position, every rank's RNG state, the resolved config and the world size. It is written by
rank 0 to a temporary file in the same folder, flushed to disk, then renamed over the final name,
so a crash while saving never leaves a half-written checkpoint under a real name. The file starts
with a magic line and the SHA-256 of the rest, so a truncated or damaged file is recognised
before unpickling; resuming from a folder then falls back to the newest checkpoint that is intact,
with a warning. Only the newest ``train.keep_checkpoints`` are kept.

A *sharded* checkpoint (``train.checkpoint_format = "dcp"``) is a folder ``ckpt_NNNNNNN.dcp``
written by every rank through ``torch.distributed.checkpoint`` (:mod:`gradsync.checkpoint.dcp`):
the tensors as 1-D slices named ``KEY@OFFSET`` of the full-model state (``model/NAME``,
``optim/INDEX/STATE``), and ``gradsync.pt``, a checksummed file of the rest (step, data position,
RNG states, config, optimizer scalars) that also holds the size and SHA-256 of every file of the
folder. The folder is assembled under a temporary name and renamed when complete; a missing,
truncated or damaged file makes the whole checkpoint damaged, and resuming falls back as above.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from gradsync.core.config import Config, incompatible_fields
from gradsync.core.errors import CheckpointError
from gradsync.core.files import atomic_write_bytes
from gradsync.runtime.dist import Comm

FORMAT = "gradsync-checkpoint/1"  # the dict inside; the file around it is MAGIC + sha256 + payload
SHARDED_FORMAT = "gradsync-dcp/1"  # the dict in a sharded checkpoint's MANIFEST
MAGIC = b"GRADSYNC-CHECKPOINT v2\n"
MANIFEST = "gradsync.pt"
_NAME = re.compile(r"^ckpt_(\d{7,})\.(pt|dcp)$")
REQUIRED = ("format", "step", "strategy", "data", "rng", "config", "world_size")


def checkpoint_path(run_dir: str | Path, step: int, sharded: bool = False) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt_{step:07d}.{'dcp' if sharded else 'pt'}"


def is_sharded(path: str | Path) -> bool:
    """Whether ``path`` names a sharded (DCP folder) checkpoint rather than a single file."""
    return Path(path).suffix == ".dcp"


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        # streamed to the file, not built in memory first: a model's state is not held twice
        with open(tmp, "w+b") as f:
            f.write(MAGIC + bytes(32))
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            f.seek(len(MAGIC) + 32)
            h = hashlib.sha256()
            while block := f.read(1 << 24):
                h.update(block)
            f.seek(len(MAGIC))
            f.write(h.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch reports a failed write as RuntimeError
        if isinstance(e, RuntimeError) and "write" not in str(e) and "pos" not in str(e):
            raise
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0][:120]
        raise CheckpointError(
            f"could not write checkpoint '{path}' ({why}); the previous checkpoints are intact"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    prune(path.parent, keep, path)


def prune(folder: Path, keep: int, newest: Path) -> None:
    """Keep the newest ``keep`` checkpoints of ``folder`` (0 = all) besides ``newest``; remove the
    temporary files of dead writers."""
    for stale in folder.glob(".ckpt_*.pt.tmp-*"):
        if stale.name.rsplit("-", 1)[-1] != str(os.getpid()):
            stale.unlink(missing_ok=True)
    if keep > 0:
        for old in list_checkpoints(folder.parent)[:-keep]:
            if old != newest:
                remove_checkpoint(old)


def remove_checkpoint(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, required: tuple[str, ...] = REQUIRED) -> dict[str, Any]:
    """Load and sanity-check a checkpoint (it must hold the ``required`` entries: a training run's
    by default), or raise a one-line CheckpointError. A sharded checkpoint's files are checked
    against its manifest; its tensors are read (whole, in this process) only when ``strategy``
    is required: the full-model state, as a single-file checkpoint holds it."""
    if is_sharded(path):
        state = read_manifest(Path(path))
        if "strategy" in required:
            state["strategy"] = read_full_state(Path(path), state)
        return state
    return _load_file(path, FORMAT, required)


def _load_file(path: str | Path, fmt: str, required: tuple[str, ...]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint '{path}' is unreadable ({e.strerror or e})") from None
    if raw.startswith(MAGIC):
        digest, payload = raw[len(MAGIC) : len(MAGIC) + 32], raw[len(MAGIC) + 32 :]
        if hashlib.sha256(payload).digest() != digest:
            raise CheckpointError(f"checkpoint '{path}' is corrupt (checksum mismatch: truncated or damaged)")
        raw = payload
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint '{path}' is corrupt or unreadable ({first[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise CheckpointError(f"checkpoint '{path}' is not a gradsync checkpoint (format {fmt} expected)")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint '{path}' is incomplete: missing {', '.join(missing)}")
    return state


def save_manifest(folder: Path, state: dict[str, Any]) -> None:
    """Write a sharded checkpoint's manifest (atomic, checksummed, like a checkpoint file)."""
    buf = io.BytesIO()
    torch.save({"format": SHARDED_FORMAT, **state}, buf)
    payload = buf.getvalue()
    atomic_write_bytes(folder / MANIFEST, MAGIC + hashlib.sha256(payload).digest() + payload)


def file_digest(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in 16 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return path.stat().st_size, h.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any]:
    """A sharded checkpoint's manifest, after checking every file it lists (size and SHA-256)."""
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint '{folder}' does not exist")
    state = _load_file(folder / MANIFEST, SHARDED_FORMAT, tuple(k for k in REQUIRED if k != "strategy") + ("files",))
    for name, (size, digest) in state["files"].items():
        f = folder / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint '{folder}' is incomplete: its file {name} is missing")
        if f.stat().st_size != size or file_digest(f)[1] != digest:
            raise CheckpointError(
                f"checkpoint '{folder}' is corrupt: its file {name} is truncated or damaged (checksum mismatch)"
            )
    return state


SavedSlices = dict[str, list[tuple[int, int, str, torch.dtype]]]  # key -> (offset, length, DCP name, dtype)


def saved_slices(reader: Any) -> SavedSlices:
    """The slices a sharded checkpoint holds (its DCP keys are ``KEY@OFFSET``), by key."""
    saved: SavedSlices = {}
    for name, md in reader.read_metadata().state_dict_metadata.items():
        key, _, lo = name.rpartition("@")
        if hasattr(md, "size"):
            saved.setdefault(key, []).append((int(lo), md.size.numel(), name, md.properties.dtype))
    return saved


def overlapping(saved: SavedSlices, key: str, lo: int, n: int) -> list[tuple[int, int, str, torch.dtype]]:
    """The saved slices of ``key`` that overlap its elements ``[lo, lo + n)``."""
    return [sl for sl in saved.get(key, []) if sl[0] < lo + n and sl[0] + sl[1] > lo]


def fill_slice(
    target: torch.Tensor, key: str, lo: int, saved: SavedSlices, loaded: dict[str, torch.Tensor], where: Path
) -> None:
    """Copy into ``target`` (elements ``[lo, lo + len)`` of ``key``, flattened) what the ``loaded``
    slices hold of it; one line of :class:`CheckpointError` when they do not cover it all."""
    n, covered = target.numel(), 0
    for lo2, n2, name, _ in overlapping(saved, key, lo, n):
        a, b = max(lo, lo2), min(lo + n, lo2 + n2)
        with torch.no_grad():
            target[a - lo : b - lo].copy_(loaded[name][a - lo2 : b - lo2])
        covered += b - a
    if covered != n:
        raise CheckpointError(
            f"checkpoint '{where}' does not hold {key}[{lo}:{lo + n}] (incomplete, or this model's "
            "state differs from the one saved)"
        )


def read_full_state(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The full-model state of a sharded checkpoint, read whole in this process (``no_dist``):
    ``{"model": state_dict, "optimizer": torch's optimizer.state_dict()}``, as a file holds it."""
    import torch.distributed.checkpoint as dcp

    reader = dcp.FileSystemReader(str(folder))
    saved = saved_slices(reader)
    pieces = {name: torch.empty(n, dtype=dtype) for slices in saved.values() for _, n, name, dtype in slices}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(pieces, storage_reader=reader, no_dist=True)
    full: dict[str, torch.Tensor] = {}
    for key, (shape, dtype) in manifest["shapes"].items():
        t = torch.empty(int(torch.Size(shape).numel()), dtype=getattr(torch, dtype))
        fill_slice(t, key, 0, saved, pieces, folder)
        full[key] = t.view(shape)
    model = {k[len("model/") :]: v for k, v in full.items() if k.startswith("model/")}
    model.update({alias: model[name] for alias, name in manifest["aliases"].items()})
    state: dict[int, dict[str, Any]] = {int(i): dict(st) for i, st in manifest["optimizer"]["scalars"].items()}
    for k, v in full.items():
        if k.startswith("optim/"):
            _, i, name = k.split("/", 2)
            state.setdefault(int(i), {})[name] = v
    return {"model": model, "optimizer": {"state": state, "param_groups": manifest["optimizer"]["param_groups"]}}


def resolve_resume(resume: str, run_dir: str | Path) -> Path | None:
    """The checkpoint ``--resume`` names: ``auto`` = the newest intact one in run_dir (None if
    there is none), a folder = the newest intact one in it, a file = that file (strictly)."""
    if not resume:
        return None
    if resume == "auto":
        return newest_intact(list_checkpoints(run_dir), run_dir)
    p = Path(resume)
    if is_sharded(p) and p.is_dir():
        return p
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
            read_manifest(path) if is_sharded(path) else load_checkpoint(path)
        except CheckpointError as e:
            damaged.append(e)
            continue
        for skipped in damaged:
            print(f"gradsync: warning: {skipped}; using an older one", file=sys.stderr, flush=True)
        return path
    if found:
        raise CheckpointError(
            f"no intact checkpoint in '{where}': all {len(found)} are damaged; the newest: {damaged[0]}"
        )
    return None


def check_compatible(state: dict[str, Any], cfg: Config, path: str | Path) -> None:
    diffs = incompatible_fields(state["config"], cfg)
    if diffs:
        raise CheckpointError(f"checkpoint '{path}' was written with a different config: {'; '.join(diffs)}")


def gather_rng_states(comm: Comm) -> list[dict[str, torch.Tensor]]:
    """Every rank's RNG state, by rank (collective): what a checkpoint's ``rng`` holds."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return comm.all_gather_object(state)


def restore_rng_state(saved: dict[str, Any], comm: Comm) -> None:
    """Set this rank's RNG state from a checkpoint's ``rng`` when it was written by as many ranks
    (another world size draws other per-rank streams anyway: the data sampler does not use them)."""
    if saved["world_size"] != comm.world_size:
        return
    state = saved["rng"][comm.env.rank]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
