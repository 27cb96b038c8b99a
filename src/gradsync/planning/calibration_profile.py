"""The calibration profile: what ``gradsync calibrate`` measured, as the cost model reads it.

A JSON file (``profile.json`` in the gradsync cache unless named): per collective the measured
points and the fitted latency alpha and inverse bandwidth beta; the model's forward and backward
time and FLOPs; optimizer and element-wise costs; the matmul peak. ``gradsync plan --device
PROFILE.json`` and ``gradsync train --strategy auto`` turn it into a :class:`Hardware` and a
:class:`Network`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gradsync.core.errors import ConfigError
from gradsync.core.files import cache_dir
from gradsync.planning.costmodel import CostModelError, Hardware, Link, Network

DEFAULT_PROFILE = "profile.json"  # in the gradsync cache folder


def default_profile_path() -> Path:
    return cache_dir() / DEFAULT_PROFILE


def profile_hardware(profile: dict[str, Any]) -> Hardware:
    """The :class:`Hardware` a calibration profile describes (its measured times, not presets)."""
    c = profile["compute"]
    achieved = c["flops_per_token"] * c["tokens"] / (c["forward_s"] + c["backward_s"])
    peak = max(profile["peak_flops"], achieved)
    return Hardware(
        f"{profile['device']} (calibrated, {profile['threads']} thread(s))",
        peak,
        profile["memory_bytes"],
        8.0 / profile["elementwise_s_per_elem"],
        achieved / peak,
        c["backward_s"] / c["forward_s"],
        profile["optimizer_s_per_param"],
        profile["elementwise_s_per_elem"],
        c.get("overlap_penalty", 0.0),
        profile.get("quantize_s_per_elem"),  # absent from profiles older than int8
        streams=profile.get("backend") == "nccl",
    )


def profile_network(profile: dict[str, Any]) -> Network:
    coll = profile.get("collectives") or {}
    if not coll:
        raise CostModelError(
            f"the profile was measured with {profile['world_size']} worker(s) and has no "
            "collectives; calibrate with --nproc 2 or more"
        )
    return Network(
        f"calibrated ({profile['world_size']} workers)",
        {op: Link(v["alpha_s"], v["beta_s_per_byte"]) for op, v in coll.items()},
    )


def load_profile(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"calibration profile '{path}' does not exist; run `gradsync calibrate` first")
    try:
        profile = json.loads(p.read_text())
        profile_hardware(profile)
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as e:
        raise ConfigError(f"'{path}' is not a gradsync calibration profile ({type(e).__name__}: {e})") from None
    return profile


def describe(profile: dict[str, Any]) -> str:
    c = profile["compute"]
    lines = [
        f"calibrated {profile['world_size']} worker(s) on {profile['device']}, {profile['backend']}, "
        f"{profile['threads']} thread(s) each",
        f"  compute: forward {1e3 * c['forward_s']:.2f} ms + backward {1e3 * c['backward_s']:.2f} ms for "
        f"{c['tokens']} tokens = {c['flops_per_token'] * c['tokens'] / (c['forward_s'] + c['backward_s']) / 1e9:.2f}"
        f" GFLOP/s achieved (matmul peak {profile['peak_flops'] / 1e9:.1f} GFLOP/s)",
        f"  optimizer: {1e9 * profile['optimizer_s_per_param']:.2f} ns/parameter; element-wise pass "
        f"{1e9 * profile['elementwise_s_per_elem']:.3f} ns/element; communication behind compute costs "
        f"{c.get('overlap_penalty', 0.0):.2f} s per s",
    ]
    for op, v in profile["collectives"].items():
        lines.append(
            f"  {op:14s} alpha {1e6 * v['alpha_s']:8.1f} us   beta {v['beta_s_per_byte'] * 1e9:.4f} ns/B "
            f"({8 / v['beta_s_per_byte'] / 1e9:.2f} Gbit/s)   fit residual {v['residual']:.1%} over "
            f"{len(v['points'])} sizes"
        )
    return "\n".join(lines)
