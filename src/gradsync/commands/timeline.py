"""``gradsync timeline RUN``: where a profiled run's time went (``--train.profile FIRST:LAST``).

Prints, for one profiled step, each collective of rank 0 (ready, launched, done, waited, in ms
from the step's start) and every rank's forward, backward and time blocked on communication;
draws ranks × time (compute, each collective in flight, blocked time shaded) into a PNG. With a
calibration profile (``gradsync calibrate``), the cost model's predicted buckets for the same
step, given its measured compute, are tabulated and drawn beside the measurement.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from gradsync.core.config import build_config, load_toml
from gradsync.core.errors import ConfigError
from gradsync.planning import costmodel as cm
from gradsync.planning import timeline_view as tv
from gradsync.planning.calibration_profile import default_profile_path, load_profile, profile_hardware, profile_network
from gradsync.planning.plan import workload_of

PREDICTED = ("bucketed", "zero1")  # strategies whose buckets the prediction models


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder trained with --train.profile")
    p.add_argument("--step", type=int, default=-1, help="the profiled step to show (default: the last)")
    p.add_argument("--out", help="the PNG to write (default: RUN/profile/timeline-stepN.png)")
    p.add_argument(
        "--profile", help="calibration profile for the prediction (default: the one `gradsync calibrate` wrote)"
    )


def run(ns: argparse.Namespace, extra: Sequence[str]) -> int:
    if extra:
        raise ConfigError(f"timeline: unrecognized argument(s) {' '.join(extra)}")
    run_dir = Path(ns.run)
    timelines = tv.load(run_dir)
    step = ns.step if ns.step >= 0 else tv.steps(timelines[0])[-1]
    print(f"step {step}, rank 0: each collective, ms from the start of the step")
    print(tv.format_table(tv.collectives(timelines[0], step)))
    print()
    for tl in timelines:
        blocked = sum(c.waited for c in tv.collectives(tl, step))
        fwd, bwd = tv.compute_ms(tl, step, "forward"), tv.compute_ms(tl, step, "backward")
        opt = tv.compute_ms(tl, step, "optimizer")
        trace = tv.load_trace(run_dir, int(tl["rank"]))
        busy = tv.device_busy_ms(trace, tl, step) if trace is not None else None
        device = f"; device busy {busy[0]:.1f} of {busy[1]:.1f} ms ({busy[0] / busy[1]:.0%})" if busy else ""
        print(
            f"rank {tl['rank']}: forward {fwd:.1f} ms, backward {bwd:.1f} ms, optimizer {opt:.1f} ms, "
            f"blocked on communication {blocked:.1f} ms{device}"
        )
    prediction = _prediction(run_dir, timelines[0], step, ns.profile)
    out = Path(ns.out) if ns.out else run_dir / "profile" / f"timeline-step{step}.png"
    tv.draw(timelines, step, out, prediction)
    print(f"timeline: {out}")
    return 0


def _prediction(run_dir: Path, tl: dict, step: int, profile: str | None) -> list[tv.Collective] | None:
    """The cost model's buckets for ``step`` of rank 0, or None (with the reason printed)."""
    strategy = str(tl.get("strategy", "")).split(":")[0]
    compress = str(tl.get("compress", "none"))
    if strategy not in PREDICTED or (compress != "none" and strategy != "bucketed"):
        print(f"prediction: drawn for {', '.join(PREDICTED)} (compressed: bucketed only); this run is {strategy}")
        return None
    path = Path(profile) if profile else default_profile_path()
    if not path.exists():
        print(f"prediction: no calibration profile at {path}; `gradsync calibrate` writes one")
        return None
    cfg = build_config(load_toml(run_dir / "config.toml"))
    if cfg.task.name != "gpt":
        print(f"prediction: the cost model's workload is a GPT; this run is {cfg.task.name}")
        return None
    vocab = _vocab(run_dir)
    prof = load_profile(path)
    w, world = workload_of(cfg, vocab), int(tl.get("world_size", 1))
    # one rank's collectives cost nothing to the cost model, whatever the link: a profile measured
    # on one device (no collectives) still predicts its buckets
    net = profile_network(prof) if world > 1 else cm.network_preset("nvlink4")
    fwd, bwd = tv.compute_ms(tl, step, "forward"), tv.compute_ms(tl, step, "backward")
    durations = cm.bucket_times(w, world, profile_hardware(prof), net, str(tl["strategy"]), compress)
    rows = tv.predicted(w, durations, fwd, bwd, "all_reduce" if compress == "none" else f"{compress} mean")
    print(f"\npredicted by the cost model ({path.name}), given the measured forward and backward:")
    print(tv.format_table(rows))
    return rows


def _vocab(run_dir: Path) -> int:
    import json

    try:
        return int(json.loads((run_dir / "task.json").read_text())["vocab_size"])
    except (OSError, KeyError, ValueError) as e:
        raise ConfigError(f"{run_dir}/task.json has no vocab_size ({e})") from None
