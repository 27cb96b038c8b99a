"""Small file utilities every layer uses: all-or-nothing writes (bytes, figures) and the cache folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_cache_warned = False


def write_cache(path: Path, data: bytes) -> bool:
    """Write a cache file atomically; the cache only saves time, so a folder that cannot be written
    (read-only ``$HOME``, a full disk) is one warning per process and the run goes on. Returns
    whether it was written."""
    global _cache_warned
    try:
        atomic_write_bytes(path, data)
        return True
    except OSError as e:
        if not _cache_warned:
            _cache_warned = True
            print(
                f"gradsync: warning: cannot write to the cache folder {path.parent} ({e.strerror or e}); going "
                "on without caching (set GRADSYNC_CACHE to a writable folder)",
                file=sys.stderr,
                flush=True,
            )
        return False


def cache_dir() -> Path:
    """gradsync's cache folder (BPE vocabularies, matmul peaks, calibration profiles):
    ``$GRADSYNC_CACHE``, else ``~/.cache/gradsync``."""
    return Path(os.environ.get("GRADSYNC_CACHE", Path.home() / ".cache" / "gradsync"))


def save_figure(fig: Any, out_path: Path, dpi: int = 100) -> None:
    """Write a matplotlib figure as PNG atomically (temp file + rename)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    fig.savefig(tmp, dpi=dpi, format="png")
    tmp.replace(out_path)
