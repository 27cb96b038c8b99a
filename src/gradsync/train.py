"""The training loop, the same on every worker.

One step: this rank's micro-batches (gradient accumulation derived from the global batch), forward
and backward under the strategy's ``micro_step`` context, ``strategy.step`` (aggregate, clip,
AdamW), then bookkeeping on rank 0: metrics, progress, periodic validation, checkpoints. The
trainer never touches a collective for gradients; it only averages a few scalars for logging.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from gradsync import checkpoint as ckpt
from gradsync.config import Config
from gradsync.data import ShardedBatches, TokenData, eval_batches, load_tokens
from gradsync.dist import Comm, CommStats, DistEnv, init_distributed
from gradsync.errors import ConfigError, TrainingError
from gradsync.metrics import MetricsWriter, plot_metrics
from gradsync.model import gpt_from_config
from gradsync.optim import lr_at, optimizer_factory
from gradsync.peak import worker_peak_flops
from gradsync.parallel import Strategy, build_strategy
from gradsync.sample import sample_text


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass
class TrainResult:
    steps_done: int
    final_loss: float
    val_loss: float | None
    tokens_per_sec_median: float
    run_dir: Path
    sample: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Builds data, model and strategy for one worker, then :meth:`fit` trains."""

    def __init__(self, cfg: Config, env: DistEnv | None = None, data: TokenData | None = None) -> None:
        self.cfg = cfg
        self.env = env or init_distributed(cfg.parallel.backend, cfg.parallel.timeout_s)
        cfg.check_world(self.env.world_size)
        torch.set_num_threads(cfg.parallel.threads_per_worker(self.env.local_world_size))
        self.run_dir = Path(cfg.train.run_dir)
        self.data = data or load_tokens(cfg.data)
        torch.manual_seed(cfg.train.seed)
        self.model = gpt_from_config(cfg.model, self.data.vocab_size, cfg.data.seq_len).to(self.env.device)
        self.comm = Comm(self.env, timeout_s=cfg.parallel.timeout_s)
        self.strategy: Strategy = build_strategy(self.model, optimizer_factory(cfg.optim), self.comm,
                                                 cfg.parallel)
        t = cfg.train
        self.batches = ShardedBatches(self.data.train, cfg.data.seq_len, t.global_batch, t.micro_batch,
                                      self.env.rank, self.env.world_size, t.seed)
        self.eval_set = eval_batches(self.data.val, cfg.data.seq_len, t.eval_sequences, t.micro_batch,
                                     self.env.rank, self.env.world_size)
        self.start_step = 0
        self.resumed_from: Path | None = None
        path = ckpt.resolve_resume(t.resume, self.run_dir)
        if path is not None:
            self._restore(path)
        self.tokens_per_step = t.global_batch * cfg.data.seq_len
        self.flops_per_token = self.model.flops_per_token(cfg.data.seq_len)

    # -- checkpoints -----------------------------------------------------------------------------
    def _restore(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path)
        ckpt.check_compatible(state, self.cfg, path)
        self.strategy.load_state_dict(state["strategy"])
        self.batches.load_state_dict(state["data"])
        if state["world_size"] == self.env.world_size:
            ckpt.set_rng_state(state["rng"][self.env.rank])
        self.start_step = int(state["step"])
        self.resumed_from = path

    def save(self, step: int) -> Path:
        """Write a checkpoint after ``step`` finished steps (all ranks call; rank 0 writes)."""
        rngs = self.comm.all_gather_object(ckpt.rng_state())
        strategy_state = self.strategy.state_dict()  # collective: sharded strategies gather
        path = ckpt.checkpoint_path(self.run_dir, step)
        if self.env.is_main:
            ckpt.save_checkpoint(path, {
                "step": step, "strategy": strategy_state, "data": self.batches.state_dict(),
                "rng": rngs, "config": self.cfg.to_dict(), "world_size": self.env.world_size,
            }, keep=self.cfg.train.keep_checkpoints)
        return path

    # -- evaluation ------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.cfg.train.precision == "bf16":
            return torch.autocast(self.env.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean validation loss over the fixed validation sequences, averaged across all ranks."""
        self.model.eval()
        total, count = 0.0, 0
        for x, y in self.eval_set:
            x, y = x.to(self.env.device), y.to(self.env.device)
            with self._autocast():
                total += float(self.model(x, y)) * x.size(0)
            count += x.size(0)
        self.model.train()
        s, n = self.comm.sum_scalars([total, float(count)])
        return s / n

    def sample(self) -> str:
        """Rank 0's continuation of ``train.sample_prompt`` ("" elsewhere). Collective: every rank
        calls it, since sharded strategies must gather the model; rank 0 then generates from a
        plain copy, so that generation issues no collective on one rank alone."""
        state = self.strategy.full_model_state()
        if not self.env.is_main:
            return ""
        t = self.cfg.train
        model = gpt_from_config(self.cfg.model, self.data.vocab_size, self.cfg.data.seq_len).to(self.env.device)
        model.load_state_dict(state)
        return sample_text(model, self.data, t.sample_prompt, t.sample_tokens, t.seed)

    # -- the loop --------------------------------------------------------------------------------
    def train_step(self, step: int) -> tuple[float, float]:
        """One optimizer step; returns (this rank's mean micro-batch loss, global grad norm)."""
        lr = lr_at(step, self.cfg.optim, self.cfg.train.max_steps)
        for g in self.strategy.optimizer.param_groups:
            g["lr"] = lr
        micro = self.batches.micro_batches(step)
        self.batches.step = step + 1
        loss_sum = 0.0
        for i, (x, y) in enumerate(micro):
            x, y = x.to(self.env.device), y.to(self.env.device)
            with self.strategy.micro_step(last=i == len(micro) - 1):
                with self._autocast():
                    loss = self.strategy.module(x, y)
                (loss / len(micro)).backward()
            loss_sum += float(loss.detach())
        grad_norm = self.strategy.step(self.cfg.optim.grad_clip)
        return loss_sum / len(micro), grad_norm

    def fit(self, peak_flops_per_worker: float = 0.0) -> TrainResult:
        t = self.cfg.train
        main = self.env.is_main
        writer = MetricsWriter(self.run_dir / "metrics.jsonl", fresh=self.resumed_from is None,
                               resume_step=self.start_step) if main else None
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            # atomic: on a local launch the workers may still be reading this very file
            ckpt.atomic_write_bytes(self.run_dir / "config.toml", self.cfg.to_toml().encode())
            self._print(f"gradsync: {self.env.world_size} worker(s), strategy {self._strategy_label()}, "
                        f"backend {self.env.backend}, {self.model.num_params():,} parameters, "
                        f"accumulation {self.batches.accum_steps}, data {self.data.description}")
            if self.resumed_from:
                self._print(f"gradsync: resumed from {self.resumed_from} at step {self.start_step}")
        bar = self._progress_bar() if main and t.progress else None
        self.comm.take_stats()
        history: list[dict[str, Any]] = []
        loss = float("nan")
        val: float | None = None
        last_ckpt = -1
        bad_streak = 0
        end = t.max_steps if not t.stop_after else min(t.max_steps, self.start_step + t.stop_after)
        # A step's time runs from the end of the previous step: it includes that step's logging,
        # and so the collectives a strategy leaves in flight after its update (ZeRO's parameter
        # all-gathers), which the next collective waits for. Evaluation and checkpoints restart it.
        t_mark = time.perf_counter()
        for step in range(self.start_step, end):
            local_loss, grad_norm = self.train_step(step)
            now = time.perf_counter()
            dt, t_mark = now - t_mark, now
            stats = self.comm.take_stats()
            done = step + 1
            bad_streak = self._check_finite(done, bad_streak, last_ckpt)
            if step == self.start_step:  # optimizer state exists from the first step on
                self._report_memory(writer, done)
            if done % t.log_interval == 0 or done == end or bad_streak:
                loss = self.comm.mean_scalars([local_loss])[0]
                tps = self.tokens_per_step / dt
                rec = {"kind": "train", "step": done, "loss": _finite_or_none(loss),
                       "lr": self.strategy.optimizer.param_groups[0]["lr"],
                       "grad_norm": _finite_or_none(grad_norm), "skipped": self.strategy.last_step_skipped,
                       "tokens_per_sec": tps, "step_time_s": dt,
                       "comm_blocked_s": stats.blocked_s if self.strategy.measures_blocked_time else None,
                       **self._comm_record(stats),
                       "mfu": (self.flops_per_token * tps / (peak_flops_per_worker * self.env.world_size)
                               if peak_flops_per_worker > 0 else None)}
                history.append(rec)
                if writer:
                    writer.write(rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
            if done % t.eval_interval == 0 or done == end:
                val = self.evaluate()
                if writer:
                    writer.write({"kind": "eval", "step": done, "val_loss": val})
                if main:
                    msg = f"step {done}: train loss {loss:.4f}, val loss {val:.4f}"
                    if bar is not None:
                        bar.write(msg)
                    else:
                        self._print(msg)
            if (t.ckpt_interval and done % t.ckpt_interval == 0) or done == end:
                self.save(done)
                last_ckpt = done
            if done % t.eval_interval == 0 or last_ckpt == done:
                t_mark = time.perf_counter()
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        if val is None:  # resumed at the end: nothing trained, still report where the model stands
            val = self.evaluate()
        text = ""
        if t.sample_tokens > 0:
            text = self.sample()
        if main and t.sample_tokens > 0:
            (self.run_dir / "sample.txt").write_text(text, encoding="utf-8")
            self._print("---- sample ----\n" + text + "\n----------------")
        tps_all = [r["tokens_per_sec"] for r in history]
        result = TrainResult(end, loss, val, statistics.median(tps_all) if tps_all else 0.0,
                             self.run_dir, text, history)
        if writer:
            writer.close()
            if (self.run_dir / "metrics.jsonl").stat().st_size:
                plot_metrics(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")
            summary = {"steps": end, "final_train_loss": loss, "final_val_loss": val,
                       "median_tokens_per_sec": result.tokens_per_sec_median,
                       "entropy_rate": self.data.entropy_rate, "last_checkpoint_step": last_ckpt,
                       "world_size": self.env.world_size, "strategy": self.cfg.parallel.strategy,
                       "compress": self.cfg.parallel.compress,
                       "memory": self.strategy.memory_report().to_dict()}
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
            self._print(f"gradsync: done. val loss {val:.4f}; outputs in {self.run_dir}")
        return result

    def _check_finite(self, step: int, streak: int, last_ckpt: int) -> int:
        """Count consecutive skipped (non-finite) steps; stop the run after ``train.max_bad_steps``
        of them, before any checkpoint could be written from a poisoned state."""
        if not self.strategy.last_step_skipped:
            return 0
        streak += 1
        limit = self.cfg.train.max_bad_steps
        if self.env.is_main:
            self._print(f"gradsync: warning: step {step} skipped: non-finite loss or gradients "
                        f"({streak} in a row, at most {limit})")
        if streak > limit:
            kept = (f"the last checkpoint, {ckpt.checkpoint_path(self.run_dir, last_ckpt)}, is intact"
                    if last_ckpt > 0 else "no checkpoint was written in this invocation")
            raise TrainingError(f"{streak} consecutive steps had non-finite loss or gradients (up to step "
                                f"{step}); stopping: {kept}. Lower --lr or raise --train.max_bad_steps")
        return streak

    def _strategy_label(self) -> str:
        p = self.cfg.parallel
        return p.strategy if p.compress == "none" else f"{p.strategy} + {p.compress}"

    def _comm_record(self, stats: CommStats) -> dict[str, Any]:
        """Bytes this step: payload, ring wire bytes, and the compression ratio (uncompressed
        gradient payload / payload sent) when a compressor ran; None where torch sends them."""
        known = self.strategy.measures_bytes
        return {"comm_bytes": stats.bytes if known else None,
                "comm_wire_bytes": stats.wire_bytes if known else None,
                "comm_ratio": stats.raw_bytes / stats.bytes if known and stats.raw_bytes and stats.bytes else None,
                "comm_calls": stats.calls if known else None}

    def _report_memory(self, writer: MetricsWriter | None, step: int) -> None:
        """Log what this rank holds for parameters, gradients and optimizer state (rank 0's
        numbers; every rank holds the same amount up to padding)."""
        report = self.strategy.memory_report()
        if writer:
            writer.write({"kind": "memory", "step": step, **report.to_dict()})
        if self.env.is_main:
            self._print(f"gradsync: memory per rank after step {step}: {report.describe()}")

    def _progress_bar(self) -> Any:
        from tqdm import tqdm

        return tqdm(total=self.cfg.train.max_steps, initial=self.start_step, desc="train",
                    unit="step", dynamic_ncols=True, mininterval=0.5, file=sys.stderr)

    @staticmethod
    def _print(msg: str) -> None:
        print(msg, flush=True)


def worker_job(cfg: Config, env: DistEnv, argv: Sequence[str]) -> None:
    """What ``python -m gradsync.worker`` runs by default: train this worker's part of the run.

    Under ``torchrun`` without ``--run-dir`` the run folder is ``runs/<rdzv id>``; after the agent
    restarted the workers (one died), every worker continues from the newest checkpoint."""
    if argv:
        raise ConfigError(f"train: unexpected argument(s) {' '.join(argv)}")
    if not cfg.train.run_dir:
        cfg = cfg.replace(**{"train.run_dir": f"runs/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}"})
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restart > 0:
        cfg = cfg.replace(**{"train.resume": "auto"})
        if env.is_main:
            print(f"gradsync: restart {restart}: resuming from the newest checkpoint in {cfg.train.run_dir}",
                  flush=True)
    Trainer(cfg, env).fit(worker_peak_flops(cfg, env.device, env.local_world_size))
