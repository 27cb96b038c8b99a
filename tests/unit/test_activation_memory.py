"""Activation checkpointing's memory, measured: the peak resident memory of one forward and
backward of a GPT on CPU (in a fresh process, with glibc returning every large block to the
system so that resident memory follows live tensors) falls as the cost model says, within 15%."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gradsync.core.config import CHECKPOINTING
from gradsync.planning import costmodel as cm

L, H, HEADS, T, B, V = 4, 256, 4, 256, 16, 256

MEASURE = f"""
import sys, threading, time, torch
from gradsync.model.gpt import GPT, GPTShape
from gradsync.model.activation_checkpointing import apply_activation_checkpointing
torch.set_num_threads(1)
torch.manual_seed(0)
m = GPT(GPTShape({V}, {T}, {L}, {HEADS}, {H}, 0.0))
apply_activation_checkpointing(m, sys.argv[1])
x, y = torch.randint(0, {V}, ({B}, {T})), torch.randint(0, {V}, ({B}, {T}))
m(x, y).backward()  # gradients exist from here on, as in training
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
base, peak, done = rss(), [0], [False]
def poll():
    while not done[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.0002)
t = threading.Thread(target=poll)
t.start()
m(x, y).backward()
done[0] = True
t.join()
print(peak[0] - base)
"""


def _measured(mode: str) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", MEASURE, mode], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.split()[-1])


@pytest.fixture(scope="module")
def measured() -> dict[str, int]:
    return {mode: _measured(mode) for mode in CHECKPOINTING}


@pytest.mark.parametrize("mode", CHECKPOINTING)
def test_peak_activation_memory_is_what_the_cost_model_says(measured: dict[str, int], mode: str) -> None:
    w = cm.gpt_workload(L, HEADS, H, V, T, B, checkpointing=mode)
    predicted = cm.activation_bytes(w)
    assert abs(measured[mode] - predicted) / predicted < 0.15, (mode, measured[mode] / 2**20, predicted / 2**20)
    assert measured["full"] < measured["selective"] < measured["none"]
