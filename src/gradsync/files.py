"""Small file utilities every layer uses: all-or-nothing writes (bytes, figures) and the cache folder."""

from __future__ import annotations

import os
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
