"""The training loop, the same on every worker.

One step: this rank's micro-batches (the data tracks its own position; gradient accumulation is
derived from the global batch), forward and backward under the strategy's ``micro_step`` context,
``strategy.step`` (aggregate, clip, update). Around it, parts that decide when they act: the
:class:`~gradsync.training.evaluation.Evaluator`, the :class:`~gradsync.training.checkpointer.Checkpointer` and
the :class:`~gradsync.training.runlog.RunLogger` (rank 0's metrics, progress and outputs). The trainer
never touches a collective for gradients; it only averages a few scalars for logging.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradsync.checkpoint import format as ckpt
from gradsync.core.config import Config, sources
from gradsync.core.devices import datasheet_for
from gradsync.core.errors import ConfigError, Preempted, TrainingError
from gradsync.data import ShardedBatches
from gradsync.model.activation_checkpointing import apply_activation_checkpointing
from gradsync.optim.factory import optimizer_factory
from gradsync.optim.schedule import lr_at
from gradsync.parallel import StepResult, Strategy, build_strategy
from gradsync.runtime import timeline
from gradsync.runtime.dist import Comm, CommStats, DistEnv, init_distributed
from gradsync.runtime.replicas import LiveReplica
from gradsync.runtime.stopping import StopOnSignal
from gradsync.tasks import Task, build_task
from gradsync.training.checkpointer import Checkpointer
from gradsync.training.evaluation import Evaluator
from gradsync.training.peak import device_name, worker_peak_flops
from gradsync.training.precision import autocast
from gradsync.training.profiling import StepProfiler
from gradsync.training.runlog import RunLogger


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
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Builds the task, model and strategy for one worker, then :meth:`fit` trains.

    The workload is the :class:`~gradsync.tasks.Task` (``task.name`` in the config, or one given
    here); the loop itself only trains; its parts decide when they act: the :class:`Evaluator`,
    the :class:`Checkpointer` and the :class:`RunLogger`."""

    def __init__(self, cfg: Config, env: DistEnv | None = None, task: Task | None = None) -> None:
        self.cfg = cfg
        self.env = env or init_distributed(cfg.parallel.backend, cfg.parallel.timeout_s)
        cfg.check_world(self.env.world_size)
        torch.set_num_threads(cfg.parallel.threads_per_worker(self.env.local_world_size))
        self.run_dir = Path(cfg.train.run_dir)
        self.task = task or build_task(cfg)
        torch.manual_seed(cfg.train.seed)
        self.model = self.task.build_model().to(self.env.device)
        # counted before the strategy hooks the parameters: the count runs a backward pass
        self.flops_per_token = self.task.flops_per_sample(self.model) / self.task.tokens_per_sample
        apply_activation_checkpointing(self.model, cfg.train.activation_checkpointing)  # after: model FLOPs
        self.comm = Comm(self.env, timeout_s=cfg.parallel.timeout_s)
        self.strategy: Strategy = build_strategy(self.model, optimizer_factory(cfg.optim), self.comm, cfg.parallel)
        if cfg.train.compile:
            self.strategy.compile()
        t = cfg.train
        self.batches = ShardedBatches(
            self.task.train_examples(), t.global_batch, t.micro_batch, self.env.rank, self.env.world_size, t.seed
        )
        self.evaluator = Evaluator(cfg, self.task, self.comm)
        self.checkpointer = Checkpointer(cfg, self.comm, self.strategy, self.batches)
        self.start_step, self.resumed_from = self.checkpointer.restore()
        # a live job (parallel.fault_tolerance=live): this launch is one replica of several
        self.replicas: LiveReplica | None = None
        self.quorum_size = 0  # replicas that took the last step (live)
        if cfg.parallel.fault_tolerance == "live":
            self.replicas = LiveReplica(
                cfg.parallel, self.comm, self.strategy.live_state, self.strategy.load_live_state, self.start_step
            )
            self.strategy.live_replicas = self.replicas
        self.tokens_per_step = t.global_batch * self.task.tokens_per_sample
        self.datasheet = datasheet_for(device_name(self.env.device)) if self.env.device.type == "cuda" else None
        about = {
            "world_size": self.env.world_size,
            "strategy": cfg.parallel.strategy,
            "compress": cfg.parallel.compress,
        }
        self.profiler = StepProfiler(t.profile, self.run_dir, self.comm, about)

    def evaluate(self) -> dict[str, float]:
        """The task's validation metrics (``val_loss`` among them); collective."""
        return self.evaluator.evaluate(self.model)

    def sample(self) -> str:
        """Rank 0's output of the task's ``predict`` (text continuing ``train.sample_prompt`` for
        language models; "" elsewhere). Collective: every rank calls it, since sharded strategies
        must gather the model; rank 0 then predicts with a plain copy, so that it issues no
        collective on one rank alone."""
        state = self.strategy.full_model_state()
        if not self.env.is_main:
            return ""
        t = self.cfg.train
        model = self.task.build_model().to(self.env.device)
        model.load_state_dict(state)
        return self.task.predict(model, t.sample_prompt, t.sample_tokens, t.seed)

    # -- the loop --------------------------------------------------------------------------------
    def train_step(self, step: int) -> tuple[float, StepResult]:
        """One optimizer step; returns (this rank's mean micro-batch loss, the strategy's result)."""
        lr = lr_at(step, self.cfg.optim, self.cfg.train.max_steps)
        for g in self.strategy.optimizer.param_groups:
            g["lr"] = lr
        if self.batches.step != step:
            raise RuntimeError(f"train_step({step}) called with the data at step {self.batches.step}")
        with timeline.span("data"):
            micro = next(self.batches)
        weights = self.batches.loss_weights()  # None: equal shares, each micro-batch counts 1/len(micro)
        losses = []  # kept on the device: reading each would wait for it (a sync per micro-step on GPU)
        for i, batch in enumerate(micro):
            batch = tuple(t.to(self.env.device, non_blocking=True) for t in batch)
            with self.strategy.micro_step(last=i == len(micro) - 1):
                with timeline.span("forward"), autocast(self.cfg.train.precision, self.env.device):
                    loss = self.task.loss(self.strategy.module, batch)
                with timeline.span("backward"):
                    (loss / len(micro) if weights is None else loss * weights[i]).backward()
            losses.append(loss.detach())
        result = self.strategy.step(self.cfg.optim.grad_clip)
        return sum(torch.stack(losses).float().tolist()) / len(micro), result

    def live_step(self, step: int, log: RunLogger) -> tuple[int, float, StepResult]:
        """A live job's next step, taken by the quorum of replicas alive at its start: each takes
        its block of the step's global batch (:meth:`ShardedBatches.reshard`), so a missing
        replica's share goes to the others. A replica that could not commit a step (a peer died
        in its collective) takes it again with the next quorum, on the same data, unless the
        others committed it: then that quorum copies their state to it ("caught up").
        Returns (the step taken, this rank's loss, the strategy's result)."""
        assert self.replicas is not None
        while True:
            self.strategy.settle()  # a peer may read this rank's state while the quorum forms
            q = self.replicas.begin()
            if q.step > step and step == self.start_step:
                log.say(f"gradsync: joined the live job at step {q.step}: model and optimizer state copied from a peer")
            elif q.step > step:  # the others committed a step whose collective failed only here
                log.say(f"gradsync: caught up with the live job at step {q.step}: state copied from a peer")
            if q.size != self.quorum_size:
                log.say(f"gradsync: step {q.step + 1}: {q.size} replica(s) take it")
                self.quorum_size = q.size
            self.batches.step = step = q.step
            w = self.env.world_size
            self.batches.reshard(q.index * w + self.env.rank, q.size * w)
            local_loss, result = self.train_step(step)
            if result.committed:
                return step, local_loss, result
            log.say(f"gradsync: step {step + 1} was not committed (a replica failed during it); taking it again")

    def fit(self, peak_flops_per_worker: float = 0.0) -> TrainResult:
        log = RunLogger(self.cfg, self.env.is_main, self.start_step if self.resumed_from else None)
        try:
            return self._fit(log, peak_flops_per_worker)
        finally:
            log.close()  # the trackers keep what was logged, however the run ends
            if self.replicas is not None:
                self.replicas.shutdown()

    def _fit(self, log: RunLogger, peak_flops_per_worker: float) -> TrainResult:
        t = self.cfg.train
        end = t.max_steps if not t.stop_after else min(t.max_steps, self.start_step + t.stop_after)
        log.start(
            self._opening_lines()
            + (
                [
                    f"gradsync: MFU against a peak of {peak_flops_per_worker / 1e9:,.1f} "
                    "GFLOP/s per worker (the measured matmul peak unless --peak-tflops)"
                ]
                if peak_flops_per_worker > 0
                else []
            )
        )
        if self.env.is_main:
            self.task.save_assets(self.run_dir)
        self.comm.take_stats()
        history: list[dict[str, Any]] = []
        loss, metrics, bad_streak = float("nan"), None, 0
        # A step's time runs from the end of the previous step: it includes that step's logging,
        # and so the collectives a strategy leaves in flight after its update (ZeRO's parameter
        # all-gathers), which the next collective waits for. Evaluation and checkpoints restart it.
        t_mark = time.perf_counter()
        with StopOnSignal() as stop:  # a scheduler's signal: finish the step, save, stop (all ranks)
            step, first = self.start_step, True
            while step < end:
                self.profiler.begin(step)
                if self.replicas is None:
                    local_loss, result = self.train_step(step)
                else:
                    step, local_loss, result = self.live_step(step, log)
                self.profiler.end(step)
                now = time.perf_counter()
                dt, t_mark = now - t_mark, now
                stats = self.comm.take_stats()
                done = step + 1
                bad_streak = self._check_finite(log, done, result, bad_streak)
                if first:  # optimizer state exists from the first step on
                    log.memory(done, self.strategy.memory.report())
                    first = False
                # one all-reduce a step: the logged loss (when due) and whether any rank got a stop signal
                if done % t.log_interval == 0 or done == end or bad_streak:
                    loss_sum, votes = self.comm.sum_scalars([local_loss, stop.flag()])
                    loss = loss_sum / self.env.world_size
                    history.append(self._record(done, loss, result, dt, stats, peak_flops_per_worker))
                    if self.replicas is not None:
                        history[-1]["replicas"] = self.quorum_size
                    log.train(history[-1])
                else:
                    votes = self.comm.sum_scalars([stop.flag()])[0]
                paused = False  # evaluation and checkpoints do not count as the next step's time
                if self.evaluator.due(done, end):
                    metrics, paused = self.evaluate(), True
                    log.evaluation(done, loss, metrics)
                if self.checkpointer.due(done, end):
                    self.checkpointer.save(done)
                    paused = True
                if paused:
                    t_mark = time.perf_counter()
                self._stop_if_signalled(stop.named(votes), done, log)
                log.tick()
                step = done
        self.checkpointer.flush()  # a checkpoint still being written in the background
        log.close_progress()
        if metrics is None:  # resumed at the end: nothing trained, still report where the model stands
            metrics = self.evaluate()
        val = metrics["val_loss"]
        text = ""
        if t.sample_tokens > 0:
            text = self.sample()
            if text:
                log.sample(text)
        tps_all = [r["tokens_per_sec"] for r in history]
        trained = TrainResult(
            end, loss, val, statistics.median(tps_all) if tps_all else 0.0, self.run_dir, text, metrics, history
        )
        log.finish(
            {
                "steps": end,
                "final_train_loss": loss,
                "final_val_loss": val,
                **{f"final_{k}": v for k, v in metrics.items() if k != "val_loss"},
                "median_tokens_per_sec": trained.tokens_per_sec_median,
                **self.task.summary(),
                "last_checkpoint_step": self.checkpointer.last_saved,
                "world_size": self.env.world_size,
                "strategy": self.cfg.parallel.strategy,
                "compress": self.cfg.parallel.compress,
                "memory": self.strategy.memory.report().to_dict(),
                "peak_flops_per_worker": peak_flops_per_worker,
                "activation_checkpointing": self.cfg.train.activation_checkpointing,
            }
        )
        return trained

    def _stop_if_signalled(self, name: str | None, done: int, log: RunLogger) -> None:
        """After step ``done``: if any rank got a stop signal (``name``, agreed by every rank at
        the end of the step), every rank saves (unless this step just did) and raises
        :class:`Preempted` together."""
        if name is None:
            return
        self.checkpointer.flush()
        if self.checkpointer.last_saved != done:
            self.checkpointer.save(done)
            self.checkpointer.flush()
        log.close_progress()
        where = ckpt.checkpoint_path(self.run_dir, done, self.checkpointer.sharded is not None)
        raise Preempted(f"stopped by {name} after step {done}", f"checkpoint {where} written; continue with --resume")

    def _opening_lines(self) -> list[str]:
        p = self.cfg.parallel
        label = p.strategy if p.compress == "none" else f"{p.strategy} + {p.compress}"
        lines = [
            f"gradsync: {self.env.world_size} worker(s), strategy {label}, backend {self.env.backend}, "
            f"{sum(p.numel() for p in self.model.parameters()):,} parameters, task {self.task.name}, "
            f"accumulation {self.batches.accum_steps}, data {self.task.description}"
        ]
        chosen = sources(self.cfg)
        if chosen:
            lines.append(
                "gradsync: chosen where nothing was set: "
                + ", ".join(
                    f"{k}={getattr(getattr(self.cfg, k.split('.')[0]), k.split('.')[1])} ({why})"
                    for k, why in chosen.items()
                )
            )
        layout = self.strategy.describe()
        if layout:
            lines.append(f"gradsync: {layout}")
        lines += [f"gradsync: warning: {w}" for w in self.task.warnings()]
        if self.resumed_from:
            lines.append(f"gradsync: resumed from {self.resumed_from} at step {self.start_step}")
        return lines

    def _check_finite(self, log: RunLogger, step: int, result: StepResult, streak: int) -> int:
        """Count consecutive skipped (non-finite) steps; stop the run after ``train.max_bad_steps``
        of them, before any checkpoint could be written from a poisoned state."""
        if not result.skipped:
            return 0
        streak += 1
        limit = self.cfg.train.max_bad_steps
        log.say(
            f"gradsync: warning: step {step} skipped: non-finite loss or gradients ({streak} in a row, at most {limit})"
        )
        if streak > limit:
            raise TrainingError(
                f"{streak} consecutive steps had non-finite loss or gradients (up to step "
                f"{step}); stopping: {self.checkpointer.describe_last()}. Lower --lr or raise "
                "--train.max_bad_steps"
            )
        return streak

    def _record(
        self, step: int, loss: float, result: StepResult, dt: float, stats: CommStats, peak_flops_per_worker: float
    ) -> dict[str, Any]:
        """A logged step: loss, learning rate, gradient norm, throughput, MFU, and communication
        (bytes this step: payload, ring wire bytes, and the compression ratio when a compressor
        ran; None where torch sends them; time blocked, None where it cannot be observed)."""
        tps = self.tokens_per_step / dt
        known = self.strategy.measures_bytes
        return {
            "kind": "train",
            "step": step,
            "loss": _finite_or_none(loss),
            "lr": self.strategy.optimizer.param_groups[0]["lr"],
            "grad_norm": _finite_or_none(result.grad_norm),
            "skipped": result.skipped,
            "tokens_per_sec": tps,
            "step_time_s": dt,
            "comm_blocked_s": stats.blocked_s if self.strategy.measures_blocked_time else None,
            "comm_bytes": stats.bytes if known else None,
            "comm_wire_bytes": stats.wire_bytes if known else None,
            "comm_ratio": stats.raw_bytes / stats.bytes if known and stats.raw_bytes and stats.bytes else None,
            "comm_calls": stats.calls if known else None,
            "mfu": (
                self.flops_per_token * tps / (peak_flops_per_worker * self.env.world_size)
                if peak_flops_per_worker > 0
                else None
            ),
            # on a known GPU, also against its datasheet's dense bf16 peak (gradsync.core.devices)
            **(
                {"mfu_datasheet": self.flops_per_token * tps / (self.datasheet.peak_flops * self.env.world_size)}
                if self.datasheet is not None
                else {}
            ),
        }


def worker_job(cfg: Config, env: DistEnv, argv: Sequence[str]) -> None:
    """What ``python -m gradsync.runtime.worker`` runs by default: train this worker's part of the run.

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
            print(
                f"gradsync: restart {restart}: resuming from the newest checkpoint in {cfg.train.run_dir}", flush=True
            )
    Trainer(cfg, env).fit(worker_peak_flops(cfg, env.device, env.local_world_size))
