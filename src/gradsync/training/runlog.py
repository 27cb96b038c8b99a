"""What a run leaves and shows, written by rank 0: ``metrics.jsonl`` (one record per logged step,
evaluation and memory report), the progress bar and console lines, ``config.toml``,
``sample.txt``, ``summary.json`` and ``loss.png``. On every other rank each method does nothing,
so the trainer calls them unconditionally.

Progress is a bar when stderr is a terminal; when it is a file or a pipe (a batch job's output,
``| tee``), a bar's carriage returns would fill it with redrawn lines, so a plain line is printed
every ``train.print_interval`` steps instead. ``--no-progress`` turns both off."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, cast

from tqdm import tqdm

from gradsync.core.config import Config
from gradsync.parallel.memory import MemoryReport
from gradsync.runtime.launch import write_run_config
from gradsync.training.metrics import MetricsWriter, plot_metrics, read_metrics
from gradsync.training.trackers import Tracker, open_trackers, parse_loggers, tracker_values


class RunLogger:
    def __init__(self, cfg: Config, main: bool, resumed_at: int | None) -> None:
        """``resumed_at``: the step a resumed run continues from (its later records are dropped,
        since those steps run again), None for a fresh run."""
        self.main = main
        self.run_dir = Path(cfg.train.run_dir)
        self.writer: MetricsWriter | None = None
        self.trackers: list[Tracker] = []
        self.bar: Any = None
        if not main:
            return
        # also under torchrun, where no launcher wrote it; atomic: on a local launch the other
        # workers may still be reading this very file
        write_run_config(cfg)
        self.writer = MetricsWriter(
            self.run_dir / "metrics.jsonl", fresh=resumed_at is None, resume_step=resumed_at or 0
        )
        self.trackers = open_trackers(parse_loggers(cfg.train.loggers), self.run_dir, cfg.to_dict(), resumed_at)
        if self.trackers and resumed_at is not None:  # a tracker run is a copy of metrics.jsonl (trackers.py)
            for rec in read_metrics(self.run_dir / "metrics.jsonl"):
                self._track(rec)
        self._progress = (cfg.train.max_steps, resumed_at or 0) if cfg.train.progress else None
        self.plain_every = 0  # steps between plain progress lines; 0 = none (a bar, or --no-progress)
        if cfg.train.progress and not sys.stderr.isatty():
            self.plain_every = cfg.train.print_interval or plain_interval(cfg.train.max_steps)
        self._step = resumed_at or 0
        self._first = (self._step, time.perf_counter())
        self._last: dict[str, Any] | None = None

    def start(self, lines: list[str]) -> None:
        """Print the run's opening lines, then show the progress bar."""
        for line in lines:
            self.say(line)
        if self.main and self._progress is not None and not self.plain_every:
            total, initial = self._progress
            self.bar = tqdm(
                total=total,
                initial=initial,
                desc="train",
                unit="step",
                dynamic_ncols=True,
                mininterval=0.5,
                file=sys.stderr,
            )

    def say(self, msg: str) -> None:
        """A console line (above the progress bar when there is one)."""
        if not self.main:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def record(self, rec: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write(rec)
            self._track(rec)

    def _track(self, rec: dict[str, Any]) -> None:
        if self.trackers:
            step, values = tracker_values(rec)
            for t in self.trackers:
                t.log(values, step)

    def close(self) -> None:
        """Flush and close the trackers (also when the run stops early: an error, a signal)."""
        trackers, self.trackers = self.trackers, []
        for t in trackers:
            t.close()

    def train(self, rec: dict[str, Any]) -> None:
        """A logged training step; the progress bar shows its loss and throughput."""
        self.record(rec)
        self._last = rec
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{rec['loss']:.3f}" if rec["loss"] is not None else "nan",
                tok_s=f"{rec['tokens_per_sec']:,.0f}",
                refresh=False,
            )

    def evaluation(self, step: int, train_loss: float, metrics: dict[str, float]) -> None:
        """An evaluation: ``val_loss`` and the task's other metrics (e.g. ``val_accuracy``)."""
        self.record({"kind": "eval", "step": step, **metrics})
        others = "".join(f", {k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items() if k != "val_loss")
        self.say(f"step {step}: train loss {train_loss:.4f}, val loss {metrics['val_loss']:.4f}{others}")

    def memory(self, step: int, report: MemoryReport) -> None:
        """What this rank holds for parameters, gradients and optimizer state (rank 0's numbers;
        every rank holds the same amount up to padding)."""
        self.record({"kind": "memory", "step": step, **report.to_dict()})
        self.say(f"gradsync: memory per rank after step {step}: {report.describe()}")

    def tick(self) -> None:
        """A step is done: move the bar, or print a plain line when one is due."""
        if not self.main:
            return
        self._step += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.plain_every and self._step % self.plain_every == 0:  # plain_every > 0 only with progress on
            self.say(self._plain_line())

    def _plain_line(self) -> str:
        total = cast(tuple[int, int], self._progress)[0]
        first_step, t0 = self._first
        elapsed = time.perf_counter() - t0
        per_step = elapsed / max(1, self._step - first_step)
        parts = [f"step {self._step}/{total}"]
        rec = self._last
        if rec is not None:
            parts.append(f"loss {rec['loss']:.4f}" if rec["loss"] is not None else "loss nan")
            parts.append(f"{rec['tokens_per_sec']:,.0f} tok/s")
        parts += [
            f"{per_step * 1e3:,.0f} ms/step",
            f"elapsed {_duration(elapsed)}",
            f"eta {_duration(per_step * (total - self._step))}",
        ]
        return "gradsync: " + ", ".join(parts)

    def close_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def sample(self, text: str) -> None:
        if self.main:
            (self.run_dir / "sample.txt").write_text(text, encoding="utf-8")
            self.say("---- sample ----\n" + text + "\n----------------")

    def finish(self, summary: dict[str, Any]) -> None:
        """Close the metrics, plot them, write ``summary.json``."""
        if self.writer is None:
            return
        self.close()
        self.writer.close()
        if (self.run_dir / "metrics.jsonl").stat().st_size:
            plot_metrics(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        self.say(f"gradsync: done. val loss {summary['final_val_loss']:.4f}; outputs in {self.run_dir}")


def plain_interval(max_steps: int) -> int:
    """About 20 plain progress lines a run, every 1, 2, 5, 10, 20, 50, ... steps."""
    target = max(1, max_steps // 20)
    step = 1
    while True:
        for k in (1, 2, 5):
            if step * k >= target:
                return step * k
        step *= 10


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
