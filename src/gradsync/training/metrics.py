"""Run outputs written by rank 0: metrics as JSONL (one object per line) and a PNG plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from gradsync.core.errors import DataError, TrainingError
from gradsync.core.files import save_figure


class MetricsWriter:
    """Appends one JSON object per logged event to ``run_dir/metrics.jsonl``, flushed each line so
    a crashed run keeps everything logged before the crash."""

    def __init__(self, path: Path, fresh: bool, resume_step: int = 0) -> None:
        """``fresh`` starts an empty file; otherwise the records logged after ``resume_step`` (by a
        run that died after its last checkpoint) are dropped, since those steps run again."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        if not fresh and path.exists():
            kept = [r for r in read_metrics(path) if r.get("step", 0) <= resume_step]
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            tmp.replace(path)
        self._f = open(path, "w" if fresh else "a", encoding="utf-8")  # noqa: SIM115 (open for the run)

    def write(self, record: dict[str, Any]) -> None:
        """Append one whole line. A write that fails (disk full) is one line of error; the part
        of the line that reached the disk, if any, is dropped by the next reader."""
        try:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()
        except OSError as e:
            raise TrainingError(
                f"cannot append to {self.path} ({e.strerror or e}; is the disk full?); "
                "the checkpoints written so far are intact, continue with --resume"
            ) from None

    def close(self) -> None:
        self._f.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file. A last line cut off (a run killed, or a disk that filled up,
    mid-write) is dropped with a warning; damage anywhere else is an error naming the line."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                print(f"gradsync: warning: {path}: dropped its last line, cut off mid-write", file=sys.stderr)
                break
            raise DataError(f"metrics file {path} is damaged at line {i + 1} (not JSON)") from None
    return out


def plot_metrics(metrics_path: Path, out_path: Path) -> None:
    """Loss (train and validation) and throughput against step, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
    if evals:
        ax1.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", label="validation")
    if evals and "val_accuracy" in evals[-1]:
        acc = ax1.twinx()
        acc.plot(
            [r["step"] for r in evals],
            [r["val_accuracy"] for r in evals],
            "s--",
            color="tab:green",
            label="validation accuracy",
        )
        acc.set_ylabel("accuracy")
        acc.set_ylim(0, 1)
        acc.legend(loc="center right")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss (nats)")
    ax1.set_title("Loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot([r["step"] for r in train], [r["tokens_per_sec"] for r in train], lw=1)
    ax2.set_xlabel("step")
    ax2.set_ylabel("tokens (or samples) / s, all workers")
    ax2.set_title("Throughput")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out_path)
    plt.close(fig)
