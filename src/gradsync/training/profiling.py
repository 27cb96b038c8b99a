"""Profile chosen steps of a run (``train.profile FIRST:LAST``): ``torch.profiler`` (CPU, and CUDA
where present) and gradsync's own timeline (:mod:`gradsync.runtime.timeline`) on every rank.

Each rank writes, into ``RUN/profile/``:

- ``rank{r}.trace.json``: torch's Chrome trace of those steps (open it in Perfetto or
  ``chrome://tracing``), gradsync's spans included as ``gradsync/...`` ranges;
- ``rank{r}.timeline.json``: gradsync's events (compute spans, every collective from launch to
  done, the time blocked on each, when each bucket became ready), which ``gradsync timeline RUN``
  draws and tabulates.

Off by default; off, nothing is created and every hook in the code is one test of a global.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gradsync.core.config import profile_window
from gradsync.core.files import atomic_write_bytes
from gradsync.runtime import timeline
from gradsync.runtime.dist import Comm


class StepProfiler:
    """Opens the window before step FIRST and closes it after step LAST - 1 (trainer steps)."""

    def __init__(self, spec: str, run_dir: Path, comm: Comm, about: dict[str, Any]) -> None:
        window = profile_window(spec) if spec else None
        self.first, self.last = window if window else (-1, -1)
        self.dir = run_dir / "profile"
        self.comm = comm
        self.about = about  # what the timeline's reader needs: world size, strategy, ...
        self._torch: torch.profiler.profile | None = None
        self._rec: timeline.Recorder | None = None
        self._window: Any = None

    @property
    def enabled(self) -> bool:
        return self.first >= 0

    def begin(self, step: int) -> None:
        if step == self.first:
            self.comm.barrier()  # every rank's window starts together: one clock on one machine
            activities = [torch.profiler.ProfilerActivity.CPU]
            cuda = self.comm.env.device.type == "cuda"
            if cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._torch = torch.profiler.profile(activities=activities)
            self._torch.__enter__()
            if cuda:
                torch.cuda.synchronize()  # the window's first CUDA event is then its time 0
            self._window = timeline.recording(self.comm.env.rank, timeline.cuda_stamp if cuda else None)
            self._rec = self._window.__enter__()
        if self._rec is not None:
            self._rec.step = step
            timeline.mark("step")

    def end(self, step: int) -> None:
        if self._rec is None or step != self.last - 1:
            return
        if self.comm.env.device.type == "cuda":
            torch.cuda.synchronize()
        self._window.__exit__(None, None, None)
        assert self._torch is not None
        self._torch.__exit__(None, None, None)
        rank = self.comm.env.rank
        self.dir.mkdir(parents=True, exist_ok=True)
        self._torch.export_chrome_trace(str(self.dir / f"rank{rank}.trace.json"))
        out = {**self._rec.to_dict(), **self.about, "steps": [self.first, self.last]}
        atomic_write_bytes(self.dir / f"rank{rank}.timeline.json", json.dumps(out).encode())
        self._rec, self._torch = None, None
