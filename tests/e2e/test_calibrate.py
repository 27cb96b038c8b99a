"""``gradsync calibrate`` on a real 2-process gloo world, and the fit it relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradsync.planning import costmodel as cm
from gradsync.planning.calibrate import MEASURED_OPS, fit_alpha_beta, message_sizes, trimmed_mean
from gradsync.planning.calibration_profile import profile_hardware, profile_network


def test_fit_recovers_alpha_and_beta_of_exact_ring_times() -> None:
    alpha, beta, p = 50e-6, 1e-9, 4
    net = cm.Network.uniform("x", cm.Link(alpha, beta))
    for op in cm.OPS:
        pts = [(n, net.time(op, n, p)) for n in message_sizes(64)]
        fit = fit_alpha_beta(pts, op, p)
        assert fit["alpha_s"] == pytest.approx(alpha, rel=1e-6)
        assert fit["beta_s_per_byte"] == pytest.approx(beta, rel=1e-6)
        assert fit["residual"] < 1e-9


def test_message_sizes_span_4k_to_max() -> None:
    assert message_sizes(256) == [4096 * 4**i for i in range(9)]  # 4 KiB ... 256 MiB
    assert message_sizes(256)[-1] == 256 * 2**20


def test_trimmed_mean_drops_a_tenth_at_each_end() -> None:
    # 20 values: 2 dropped at each end, so the two stalls (40 ms) and the two fastest do not count
    values = [0.001, 0.002] + [0.005] * 16 + [0.040, 0.040]
    assert trimmed_mean(values) == pytest.approx(0.005)
    assert trimmed_mean([0.003, 0.001]) == pytest.approx(0.002)  # too few to trim: the plain mean
    assert trimmed_mean(list(range(10)), cut=0.2) == pytest.approx(4.5)


def test_calibrate_two_workers_predicts_a_held_out_size(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    env = dict(os.environ, GRADSYNC_CACHE=str(tmp_path / "cache"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradsync.cli",
            "calibrate",
            "--nproc",
            "2",
            "--threads",
            "1",
            "--model",
            "tiny",
            "--data",
            "synthetic",
            "--seq-len",
            "32",
            "--micro-batch",
            "4",
            "--global-batch",
            "8",
            "--max-mb",
            "64",
            "--out",
            str(out),
            "--run-dir",
            "cal",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "all_reduce" in r.stdout and "profile written to" in r.stdout
    profile = json.loads(out.read_text())
    assert profile["world_size"] == 2 and set(profile["collectives"]) == set(MEASURED_OPS)
    pts = [tuple(x) for x in profile["collectives"]["all_reduce"]["points"]]
    assert [n for n, _ in pts] == message_sizes(64)
    # Fit without the 16 MiB measurement; the line must predict it within 30%. A size where the
    # bandwidth term dominates, with measured sizes on both sides of it, so that it tests beta;
    # below ~1 MiB loopback gloo times are mostly scheduling latency.
    held = next(pt for pt in pts if pt[0] == 16 * 2**20)
    fit = fit_alpha_beta([pt for pt in pts if pt is not held], "all_reduce", 2)
    predicted = cm.Network.uniform("fit", cm.Link(fit["alpha_s"], fit["beta_s_per_byte"])).time(
        "all_reduce", held[0], 2
    )
    assert abs(predicted / held[1] - 1) <= 0.30, (predicted, held, pts)
    # The profile turns into the cost model's inputs.
    hw, net = profile_hardware(profile), profile_network(profile)
    assert 0 < hw.efficiency <= 1 and hw.backward_ratio > 0.5 and hw.optimizer_cost > 0
    # 8-bit encode/decode is measured (a CPU pays far more than a few passes): what int8 is priced at
    assert hw.quantize_cost == profile["quantize_s_per_elem"] > hw.elementwise_cost
    assert net.time("all_reduce", 1e6, 2) > 0
