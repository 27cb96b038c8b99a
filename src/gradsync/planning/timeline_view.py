"""Read a profiled run's timelines (``RUN/profile/rank*.timeline.json``, written by
:mod:`gradsync.training.profiling`), tabulate each collective of a step, draw ranks × time, and
put the cost model's prediction of the same step beside the measurement.

The prediction is the overlap recursion of :func:`gradsync.planning.costmodel.exposed_after`
made visible: each bucket becomes ready at its fraction of the measured backward pass (the
cost model's ``ready`` fractions), starts when it is ready and the link is free, and takes the
calibrated ``α + β·bytes`` of a ring all-reduce. So the picture checks the communication model
against the measured one, given the measured compute.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradsync.core.errors import ConfigError
from gradsync.planning import costmodel as cm

COLORS = {"forward": "#4C72B0", "backward": "#DD8452", "optimizer": "#55A868", "data": "#8C8C8C"}


@dataclass(frozen=True)
class Collective:
    """One collective of a step on one rank, times in ms from the step's start."""

    name: str
    op: str
    mbytes: float
    ready: float | None  # when its bucket's last gradient arrived (buckets and units only)
    launched: float
    done: float
    waited: float  # blocked on it


def load(run: Path) -> list[dict[str, Any]]:
    """Every rank's timeline of ``run``, in rank order; a one-line error if it was not profiled."""
    files = sorted((run / "profile").glob("rank*.timeline.json"), key=lambda p: int(p.name[4:].split(".")[0]))
    if not files:
        raise ConfigError(
            f"{run} has no profile/rank*.timeline.json: train it with --train.profile FIRST:LAST (e.g. 20:25)"
        )
    out = []
    for f in files:
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{f} is not a readable timeline ({e})") from None
    return out


def steps(tl: dict[str, Any]) -> list[int]:
    return sorted({e["step"] for e in tl["events"]})


def step_events(tl: dict[str, Any], step: int) -> tuple[float, list[dict[str, Any]]]:
    """The events of ``step`` and the time this rank started it (its ``step`` mark). Times count
    from the start of the profiled window, which every rank entered after one barrier: one axis
    for all ranks."""
    evs = [e for e in tl["events"] if e["step"] == step]
    if not evs:
        raise ConfigError(f"step {step} was not profiled; profiled: {', '.join(map(str, steps(tl)))}")
    return min(e["start"] for e in evs), evs


def step_start(timelines: Sequence[dict[str, Any]], step: int) -> float:
    """When the first rank started ``step``: the origin of a picture of all ranks."""
    return min(step_events(tl, step)[0] for tl in timelines)


def collectives(tl: dict[str, Any], step: int, origin: float | None = None) -> list[Collective]:
    """Each collective of ``step`` on this rank, in launch order, with when it was ready, launched,
    done and how long the rank waited for it (ms from ``origin``, default this rank's start)."""
    t0, evs = step_events(tl, step)
    t0 = t0 if origin is None else origin
    ready = {e["name"].removesuffix(" ready"): e["start"] for e in evs if e["lane"] == "mark"}
    waited: dict[str, float] = {}
    for e in evs:
        if e["lane"] == "wait":
            waited[e["name"]] = waited.get(e["name"], 0.0) + e["end"] - e["start"]
    out = []
    for e in sorted((e for e in evs if e["lane"] == "comm"), key=lambda e: e["start"]):
        d = e["detail"]
        blocked = (e["end"] - e["start"]) if d.get("sync") else waited.get(e["name"], 0.0)
        r = ready.get(e["name"])
        out.append(
            Collective(
                e["name"],
                d.get("op", ""),
                d.get("bytes", 0) / 2**20,
                None if r is None else 1e3 * (r - t0),
                1e3 * (e["start"] - t0),
                1e3 * (e["end"] - t0),
                1e3 * blocked,
            )
        )
    return out


def compute_ms(tl: dict[str, Any], step: int, name: str) -> float:
    """Milliseconds of ``step`` spent in spans called ``name`` (forward, backward, ...)."""
    _, evs = step_events(tl, step)
    return 1e3 * sum(e["end"] - e["start"] for e in evs if e["lane"] == "compute" and e["name"] == name)


DEVICE_WORK = ("kernel", "gpu_memcpy", "gpu_memset")  # torch's trace categories of device work


def load_trace(run: Path, rank: int) -> dict[str, Any] | None:
    """torch's Chrome trace of ``rank`` (``RUN/profile/rank{r}.trace.json``), or None."""
    path = run / "profile" / f"rank{rank}.trace.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def device_busy_ms(trace: dict[str, Any], tl: dict[str, Any], step: int) -> tuple[float, float] | None:
    """``(busy, length)``: how many ms of ``step`` the device spent running kernels and copies,
    and how long the step lasted, or None where the trace holds no device work (a CPU run).

    The step lasts from its start to the next profiled step's (or its last event's end). Kernel
    times come from torch's trace; its clock is put on the timeline's by gradsync's first span,
    which both record (a ``record_function`` range there, the span's host start here). A GPU that
    waits on its host shows here as busy well below the length: on GPT-2 124M, a clip coefficient
    copied once per gradient showed as 65.8 ms busy of 81.4."""
    work = sorted(
        (e["ts"], e["ts"] + e.get("dur", 0))
        for e in trace.get("traceEvents", [])
        if e.get("cat") in DEVICE_WORK and e.get("ph") == "X"
    )
    spans = [e for e in tl["events"] if e["lane"] == "compute"]
    if not work or not spans:
        return None
    first = min(spans, key=lambda e: e["detail"].get("host_start", e["start"]))
    ranges = [
        e["ts"]
        for e in trace.get("traceEvents", [])
        if e.get("cat") == "user_annotation" and e.get("name") == f"gradsync/{first['name']}"
    ]
    if not ranges:
        return None
    offset_us = min(ranges) - 1e6 * first["detail"].get("host_start", first["start"])
    start, evs = step_events(tl, step)
    later = [s for s in steps(tl) if s > step]
    end = step_events(tl, later[0])[0] if later else max(e["end"] for e in evs)
    lo, hi = offset_us + 1e6 * start, offset_us + 1e6 * end
    busy, reach = 0.0, lo
    for a, b in work:  # the union of the intervals, clipped to the step
        a, b = max(a, reach), min(b, hi)
        if b > a:
            busy += b - a
            reach = b
    return busy / 1e3, (hi - lo) / 1e3


def format_table(rows: Sequence[Collective]) -> str:
    lines = [
        "| collective | op | MiB | ready ms | launched ms | done ms | waited ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        ready = "" if c.ready is None else f"{c.ready:.2f}"
        lines.append(
            f"| {c.name} | {c.op} | {c.mbytes:.3f} | {ready} | {c.launched:.2f} | {c.done:.2f} | {c.waited:.2f} |"
        )
    return "\n".join(lines)


def predicted(
    w: cm.Workload, durations_s: Sequence[float], forward_ms: float, backward_ms: float, op: str = "all_reduce"
) -> list[Collective]:
    """The cost model's buckets for one step given its measured forward and backward: ready at
    ``forward + fraction × backward``, launched when ready and the link is free, done after its
    modelled time ``durations_s`` (per bucket, :func:`cm.bucket_times`: the run's all-reduce or what
    its compressor sends) — the recursion of :func:`cm.exposed_after`."""
    out = []
    free = 0.0
    for i, ((nbytes, frac), d) in enumerate(zip(cm.buckets(w), durations_s, strict=True)):
        ready = forward_ms + frac * backward_ms
        start = max(free, ready)
        free = start + 1e3 * d
        out.append(Collective(f"bucket {i}", op, nbytes / 2**20, ready, start, free, 0.0))
    end = forward_ms + backward_ms
    if out:  # what runs past the end of backward is exposed
        last = out[-1]
        out[-1] = Collective(
            last.name, last.op, last.mbytes, last.ready, last.launched, last.done, max(0.0, free - end)
        )
    return out


def draw(
    timelines: Sequence[dict[str, Any]], step: int, path: Path, prediction: Sequence[Collective] | None = None
) -> None:
    """A PNG of ``step``: per rank a compute lane (forward, backward, optimizer, data), a comm lane
    (each collective from launch to done) with the time blocked on one shaded red; below, the
    cost model's predicted comm lane, when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lanes: list[tuple[str, list[tuple[float, float, str, str]]]] = []
    t0 = step_start(timelines, step)
    for tl in timelines:
        _, evs = step_events(tl, step)
        comp = [
            (1e3 * (e["start"] - t0), 1e3 * (e["end"] - e["start"]), COLORS.get(e["name"], "#B0B0B0"), "")
            for e in evs
            if e["lane"] == "compute"
        ]
        comm = [(c.launched, c.done - c.launched, "#937860", c.name) for c in collectives(tl, step, t0)]
        waits = [
            (1e3 * (e["start"] - t0), 1e3 * (e["end"] - e["start"]), "#C44E52", "") for e in evs if e["lane"] == "wait"
        ]
        r = tl["rank"]
        lanes += [(f"rank {r} compute", comp), (f"rank {r} comm", comm), (f"rank {r} blocked", waits)]
    if prediction:
        lanes.append(("predicted comm", [(c.launched, c.done - c.launched, "#8172B3", c.name) for c in prediction]))
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(lanes) + 1.2))
    span = max((x + wdt for _, bars in lanes for x, wdt, _, _ in bars), default=1.0)
    for i, (_, bars) in enumerate(lanes):
        y = len(lanes) - 1 - i
        for x, wdt, color, label in bars:
            ax.broken_barh([(x, max(wdt, 0.01))], (y - 0.35, 0.7), facecolors=color, edgecolors="white", linewidth=0.3)
            if label and wdt > 0.06 * span:  # a label only where it fits
                ax.text(
                    x + wdt / 2, y, label.replace("bucket ", "b"), ha="center", va="center", fontsize=7, color="white"
                )
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([name for name, _ in reversed(lanes)])
    on_device = any("host_start" in e["detail"] for tl in timelines for e in tl["events"])
    clock = "; device time, from CUDA events" if on_device else ""
    ax.set_xlabel(f"ms from the start of the step (on the first rank to start it{clock})")
    about = timelines[0]
    label = about.get("strategy", "")
    if about.get("compress", "none") != "none":
        label += f" + {about['compress']}"
    world = int(about.get("world_size", len(timelines)))
    ax.set_title(f"step {step}, {label}, {world} rank{'s' if world != 1 else ''}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in [*COLORS.values(), "#937860", "#C44E52"]]
    ax.legend(
        handles,
        [*COLORS, "collective in flight", "blocked on it"],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.18),
        fontsize=7,
        ncol=6,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
