"""A profiled step's timeline, read and drawn (``gradsync timeline``), and the cost model's
predicted buckets beside it, on timelines built by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gradsync.core.errors import ConfigError
from gradsync.planning import costmodel as cm
from gradsync.planning import timeline_view as tv
from gradsync.runtime import timeline


def _rank(rank: int, shift: float) -> dict[str, Any]:
    """Step 7 of a rank: forward 10 ms, backward 20 ms; bucket 0 ready at 22 ms and in flight
    22-26 ms; bucket 1 ready at 30 ms, in flight 30-38 ms, waited 30-39 ms; optimizer 39-41 ms."""
    ms = 1e-3

    def ev(name: str, lane: str, a: float, b: float, **detail: Any) -> dict[str, Any]:
        return {"name": name, "lane": lane, "start": shift + a * ms, "end": shift + b * ms, "step": 7, "detail": detail}

    return {
        "rank": rank,
        "world_size": 2,
        "strategy": "bucketed",
        "compress": "none",
        "events": [
            ev("step", "mark", 0, 0),
            ev("forward", "compute", 0, 10),
            ev("backward", "compute", 10, 30),
            ev("bucket 0 ready", "mark", 22, 22),
            ev("bucket 0", "comm", 22, 26, op="all_reduce", bytes=2**20, done=True),
            ev("bucket 1 ready", "mark", 30, 30),
            ev("bucket 1", "comm", 30, 38, op="all_reduce", bytes=2**21, done=True),
            ev("bucket 1", "wait", 30, 39),
            ev("optimizer", "compute", 39, 41),
        ],
    }


def test_each_collective_is_tabulated_from_the_step_start() -> None:
    rows = tv.collectives(_rank(0, 5.0), 7)
    assert [(c.name, c.ready, c.launched, c.done, c.waited) for c in rows] == [
        ("bucket 0", pytest.approx(22), pytest.approx(22), pytest.approx(26), 0.0),
        ("bucket 1", pytest.approx(30), pytest.approx(30), pytest.approx(38), pytest.approx(9)),
    ]
    assert rows[1].mbytes == 2.0 and tv.compute_ms(_rank(0, 0.0), 7, "backward") == pytest.approx(20)
    table = tv.format_table(rows)
    assert "| bucket 1 | all_reduce | 2.000 | 30.00 | 30.00 | 38.00 | 9.00 |" in table
    with pytest.raises(ConfigError, match="step 3 was not profiled; profiled: 7"):
        tv.collectives(_rank(0, 0.0), 3)


def test_the_prediction_is_the_overlap_recursion_on_the_measured_compute() -> None:
    """Buckets ready at forward + fraction x backward, each starting when ready and the link is
    free: by hand for two buckets of a tiny GPT on a 1 GB/s link."""
    w = cm.gpt_workload(2, 2, 32, 16, 16, 2, bucket_mb=0.02, first_bucket_mb=0.005)
    net = cm.Network.uniform("test", cm.Link(alpha_s=1e-4, beta_s_per_byte=1e-9))
    rows = tv.predicted(w, cm.bucket_times(w, 2, cm.device_preset("a100-80gb"), net), 10.0, 20.0)
    free = 0.0
    for row, (nbytes, frac) in zip(rows, cm.buckets(w)):
        ready = 10.0 + frac * 20.0
        start = max(free, ready)
        free = start + 1e3 * net.time("all_reduce", nbytes, 2)
        assert (row.ready, row.launched, row.done) == (pytest.approx(ready), pytest.approx(start), pytest.approx(free))
    assert len(rows) == len(cm.buckets(w)) > 1
    assert rows[-1].waited == pytest.approx(max(0.0, free - 30.0))
    exposed = cm.exposed_after([r.ready for r in rows], [r.done - r.launched for r in rows], 30.0)
    assert rows[-1].waited == pytest.approx(exposed)  # the cost model's own exposed time


def test_a_compressed_run_is_predicted_with_what_its_compressor_sends() -> None:
    """int8 buckets: an all-to-all and an all-gather of a byte a value plus a 4-byte scale a block."""
    w = cm.gpt_workload(2, 2, 32, 16, 16, 2, bucket_mb=0.02, first_bucket_mb=0.005)
    net = cm.Network.uniform("test", cm.Link(alpha_s=1e-4, beta_s_per_byte=1e-9))
    hw = cm.device_preset("a100-80gb")
    durations = cm.bucket_times(w, 2, hw, net, "bucketed", "int8")
    for d, (nbytes, _) in zip(durations, cm.buckets(w), strict=True):
        wire = nbytes / 4 + 4 * nbytes / 4 / 128  # codes + scales
        assert d == pytest.approx(net.time("all_to_all", wire, 2) + net.time("all_gather", wire, 2))
    rows = tv.predicted(w, durations, 10.0, 20.0, "int8 mean")
    assert [r.done - r.launched for r in rows] == pytest.approx([1e3 * d for d in durations])
    assert {r.op for r in rows} == {"int8 mean"}
    assert sum(durations) < sum(cm.bucket_times(w, 2, hw, net))  # fp32: the plain all-reduces


def test_ranks_share_one_axis_and_the_picture_is_drawn(tmp_path: Path) -> None:
    ranks = [_rank(0, 0.0), _rank(1, 0.004)]  # rank 1 starts the step 4 ms later
    assert tv.step_start(ranks, 7) == 0.0
    assert tv.collectives(ranks[1], 7, origin=0.0)[0].launched == pytest.approx(26)
    out = tmp_path / "t.png"
    tv.draw(ranks, 7, out, tv.collectives(ranks[0], 7))
    assert out.stat().st_size > 5000 and out.read_bytes()[:4] == b"\x89PNG"


def test_a_run_that_was_not_profiled_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train it with --train.profile FIRST:LAST"):
        tv.load(tmp_path)


def test_spans_and_marks_record_only_inside_a_window() -> None:
    with timeline.span("forward"):
        pass
    assert timeline.current() is None
    with timeline.recording(0) as rec:
        rec.step = 2
        with timeline.span("forward"):
            pass
        timeline.mark("bucket 0 ready", bytes=4)
    assert timeline.current() is None
    assert [(e.name, e.lane, e.step) for e in rec.events] == [("forward", "compute", 2), ("bucket 0 ready", "mark", 2)]
    assert rec.events[0].end >= rec.events[0].start and rec.events[1].detail == {"bytes": 4}


class _DeviceClock:
    """A stand-in for CUDA events: each stamp is the next device time on a list, in seconds."""

    def __init__(self, times: list[float]) -> None:
        self.times = iter(times)

    def __call__(self) -> Any:
        clock_t = next(self.times)

        class Stamp:
            t = clock_t

            def elapsed_time(self, later: Any) -> float:
                return (later.t - self.t) * 1e3

        return Stamp()


def test_on_a_device_events_take_the_device_times_and_keep_the_host_ones() -> None:
    # stamps: window origin 5.0, forward 5.0-5.3, mark 5.25, backward 5.3-5.9
    with timeline.recording(0, _DeviceClock([5.0, 5.0, 5.3, 5.25, 5.3, 5.9])) as rec:
        with timeline.span("forward"):
            pass
        timeline.mark("bucket 0 ready")
        with timeline.span("backward"):
            pass
    host = [(e.start, e.end) for e in rec.events]
    out = rec.to_dict()["events"]
    assert [(e["name"], round(e["start"], 9), round(e["end"], 9)) for e in out] == [
        ("forward", 0.0, 0.3),
        ("bucket 0 ready", 0.25, 0.25),
        ("backward", 0.3, 0.9),
    ]
    assert [(e["detail"]["host_start"], e["detail"]["host_end"]) for e in out] == host


def test_device_busy_is_the_union_of_device_work_within_the_step_on_the_timelines_clock() -> None:
    tl = _rank(0, 5.0)  # step 7: 5.000-5.041 s, forward from 5.000 s
    t0 = 1_000_000.0  # the trace's clock (us) when forward began

    def x(cat: str, a_ms: float, b_ms: float, name: str = "k") -> dict[str, Any]:
        return {"ph": "X", "cat": cat, "name": name, "ts": t0 + 1e3 * a_ms, "dur": 1e3 * (b_ms - a_ms)}

    trace = {
        "traceEvents": [
            x("user_annotation", 0, 10, "gradsync/forward"),
            x("kernel", 1, 9),
            x("gpu_memcpy", 5, 12),  # overlaps the kernel before: counted once
            x("cpu_op", 12, 30, "aten::item"),  # host work: not device time
            x("kernel", 30, 45),  # runs past the step's end at 41 ms: clipped
        ]
    }
    busy, length = tv.device_busy_ms(trace, tl, 7)
    assert (round(busy, 6), round(length, 6)) == (22.0, 41.0)
    cpu_only = {"traceEvents": [x("user_annotation", 0, 10, "gradsync/forward"), x("cpu_op", 1, 9)]}
    assert tv.device_busy_ms(cpu_only, tl, 7) is None
