"""The GPU check's measurements (run by ``benchmarks/gpu_check.sh``; issue 13): a table of

(b) GPT-2 124M (vocabulary 50,304, sequence 1024), bf16, ``--compile``, at the largest micro-batch
    the cost model says fits (halved on an out-of-memory error): tokens/s and MFU (against the
    measured matmul peak and the datasheet's bf16 peak), next to the same model and batch through
    the ``torch-ddp`` reference;
(c) ``gradsync calibrate`` on the device: the fraction of the peak the model reached, next to the
    45% the presets assume, and the cost model's predicted step time (fed that profile) next to
    the step time measured in (b);
(d) with ``--out-dir DIR``: the same run profiled (``--train.profile``) for two steps, drawn by
    ``gradsync timeline`` with the cost model's prediction from (c)'s profile beside it
    (``DIR/timeline-gpu.png``, its table in ``DIR/timeline-gpu.txt``), torch's Chrome trace of
    those steps (``DIR/trace-gpu.json.gz``, CUDA kernels included) and (b)-(c)'s table
    (``DIR/gpu_check.md``).

The data are random tokens in an llm.c shard (throughput does not depend on them). On CPU
(``--cpu``, with ``--model tiny`` and a few steps) the same code runs end to end in the test
suite (``tests/e2e/test_gpu_check.py``).

    .venv/bin/python benchmarks/gpu_check.py [--model gpt2] [--seq-len 1024] [--steps 40] [--no-compile] [--cpu]
        [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from gradsync.core.shapes import GPTShape
from gradsync.data.shard_writer import ShardWriter
from gradsync.planning import costmodel as cm
from gradsync.planning.calibration_profile import profile_hardware

VOCAB = 50304


def gradsync(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gradsync.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def shard(root: Path, tokens: int) -> Path:
    folder = root / "tokens"
    folder.mkdir()
    w = ShardWriter(folder, "train", tokens, VOCAB)
    w.write(np.random.default_rng(0).integers(0, VOCAB, tokens))
    w.close()
    return folder


def largest_micro_batch(shape: GPTShape, seq: int, memory_bytes: float) -> int:
    """The largest power-of-two micro-batch the cost model says fits in 85% of the device."""
    best = 1
    for mb in (1, 2, 4, 8, 16, 32, 64, 128):
        w = cm.gpt_workload(shape.n_layer, shape.n_head, shape.n_embd, VOCAB, seq, mb, precision="bf16")
        if cm.memory("bucketed", w, 1)["total"] <= 0.85 * memory_bytes:
            best = mb
    return best


def _job_flags(data: Path, mb: int, a: argparse.Namespace) -> list[str]:
    """What train and calibrate are both given: one worker, the model, the data, the batch."""
    return [
        "--nproc",
        "1",
        "--model",
        a.model,
        "--data",
        str(data),
        "--data.vocab_size",
        str(VOCAB),
        "--seq-len",
        str(a.seq_len),
        "--micro-batch",
        str(mb),
        "--global-batch",
        str(mb),
    ]


def run_dir(root: Path, strategy: str, mb: int, profile: str = "") -> Path:
    """Where :func:`train` keeps a run."""
    return root / f"run-{strategy}-{mb}{'-profiled' if profile else ''}"


def train(
    root: Path, data: Path, strategy: str, mb: int, a: argparse.Namespace, profile: str = ""
) -> dict[str, float] | None:
    """Median tokens/s, step time and MFU of one run (the first quarter of the steps left out), or
    None if it ran out of memory. ``profile``: the steps to profile (FIRST:LAST), run to LAST."""
    run = run_dir(root, strategy, mb, profile)
    r = gradsync(
        "train",
        *_job_flags(data, mb, a),
        "--max-steps",
        profile.split(":")[1] if profile else str(a.steps),
        *(["--train.profile", profile] if profile else []),
        "--strategy",
        strategy,
        *(
            "--precision bf16 --eval-interval 100000 --eval-sequences 1 --sample-tokens 0 --no-progress "
            "--ckpt-interval 0 --run-dir"
        ).split(),
        str(run),
        *([] if a.no_compile else ["--compile"]),
        *(["--backend", "gloo"] if a.cpu else []),
        cwd=root,
        timeout=a.timeout,
    )
    if r.returncode != 0:
        if "out of memory" in r.stderr:
            return None
        raise SystemExit(f"gpu_check: {strategy} failed:\n{r.stderr[-3000:]}")
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    steady = recs[len(recs) // 4 :]
    med = lambda k: statistics.median(x[k] for x in steady if x.get(k) is not None)  # noqa: E731
    return {
        "tokens_per_sec": med("tokens_per_sec"),
        "step_s": med("step_time_s"),
        "mfu": med("mfu"),
        "mfu_datasheet": med("mfu_datasheet") if any("mfu_datasheet" in x for x in steady) else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="run on CPU (the suite's check of this script)")
    ap.add_argument("--micro-batch", type=int, default=0, help="0: the largest the cost model says fits")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out-dir", help="also profile two steps and write the table, timeline and trace here")
    ap.add_argument("--profile-first", type=int, default=10, help="the first profiled step (after compiling)")
    a = ap.parse_args()
    import torch  # after argument parsing: --help costs nothing

    if not a.cpu and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device is visible (pass --cpu to run the check on the CPU)")
    device = "cpu" if a.cpu else torch.cuda.get_device_name(0)
    memory = 8e9 if a.cpu else torch.cuda.get_device_properties(0).total_memory
    shape = GPTShape.from_preset(a.model, VOCAB, a.seq_len)
    with tempfile.TemporaryDirectory(prefix="gradsync-gpu-check-") as tmp:
        root = Path(tmp)
        data = shard(root, max(200_000, 64 * (a.seq_len + 1) * 4))
        mb = a.micro_batch or largest_micro_batch(shape, a.seq_len, memory)
        ours = None
        while ours is None and mb >= 1:
            try:
                ours = train(root, data, "bucketed", mb, a)
            except SystemExit as e:  # the rest of the check still says something without inductor
                if a.no_compile:
                    raise
                print(f"{e}\ngpu_check: --compile failed; the check goes on without it", flush=True)
                a.no_compile = True
                continue
            mb = mb if ours is not None else mb // 2
        if ours is None:
            raise SystemExit("gpu_check: out of memory even at micro-batch 1")
        ref = train(root, data, "torch-ddp", mb, a)
        profile = root / "profile.json"
        r = gradsync(
            "calibrate",
            *_job_flags(data, mb, a),
            "--precision",
            "bf16",
            "--out",
            str(profile),
            "--max-mb",
            "1",
            *([] if a.no_compile else ["--compile"]),  # its compute timed as (b) runs it
            *(["--backend", "gloo"] if a.cpu else []),
            cwd=root,
            timeout=a.timeout,
        )
        if r.returncode != 0:
            raise SystemExit(f"gpu_check: calibrate failed:\n{r.stderr[-3000:]}")
        hw = profile_hardware(json.loads(profile.read_text()))
        w = cm.gpt_workload(shape.n_layer, shape.n_head, shape.n_embd, VOCAB, a.seq_len, mb, precision="bf16")
        predicted = cm.predict("bucketed", w, 1, hw, cm.network_preset("nvlink4")).step_s
        compiled = "" if a.no_compile else ", --compile"
        ref_tps = ref["tokens_per_sec"] if ref else float("nan")
        table = "\n".join(
            [
                f"## gpu_check on {device}: GPT {a.model} ({shape.num_params() / 1e6:.1f}M parameters), seq "
                f"{a.seq_len}, bf16{compiled}, micro-batch {mb}, 1 device\n",
                "| measure | gradsync bucketed | torch-ddp reference | ratio |",
                "|---|---|---|---|",
                f"| tokens/s (median) | {ours['tokens_per_sec']:,.0f} | {ref_tps:,.0f} "
                f"| {ours['tokens_per_sec'] / ref_tps:.3f} |",
                f"| MFU vs measured matmul peak | {ours['mfu']:.1%} | {ref['mfu'] if ref else float('nan'):.1%} | |",
                f"| MFU vs datasheet bf16 peak | {ours['mfu_datasheet']:.1%} | "
                f"{ref['mfu_datasheet'] if ref else float('nan'):.1%} | |",
                f"| calibrated fraction of peak (presets assume 45%) | {hw.efficiency:.1%} | | |",
                f"| step time: cost model (calibrated) vs measured | {1e3 * predicted:.1f} ms | "
                f"{1e3 * ours['step_s']:.1f} ms measured | {predicted / ours['step_s']:.3f} |",
            ]
        )
        print(table, flush=True)
        if a.out_dir:
            out = Path(a.out_dir).resolve()
            out.mkdir(parents=True, exist_ok=True)
            argv = " ".join(shlex.quote(x) for x in sys.argv[1:])
            (out / "gpu_check.md").write_text(f"{table}\n\ncommand: `python benchmarks/gpu_check.py {argv}`\n")
            profiled_timeline(root, data, mb, a, profile, out)


def profiled_timeline(root: Path, data: Path, mb: int, a: argparse.Namespace, calibration: Path, out: Path) -> None:
    """(d): two steps of the bucketed run profiled, drawn with the prediction beside them."""
    window = f"{a.profile_first}:{a.profile_first + 2}"
    if train(root, data, "bucketed", mb, a, profile=window) is None:
        raise SystemExit("gpu_check: the profiled run ran out of memory")
    run = run_dir(root, "bucketed", mb, window)
    r = gradsync(
        "timeline", str(run), "--profile", str(calibration), "--out", str(out / "timeline-gpu.png"),
        cwd=root, timeout=a.timeout,
    )  # fmt: skip
    if r.returncode != 0:
        raise SystemExit(f"gpu_check: timeline failed:\n{r.stderr[-3000:]}")
    (out / "timeline-gpu.txt").write_text(r.stdout)
    print(r.stdout)
    trace = (run / "profile" / "rank0.trace.json").read_bytes()
    (out / "trace-gpu.json.gz").write_bytes(gzip.compress(trace))


if __name__ == "__main__":
    main()
