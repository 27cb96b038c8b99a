"""Any model, end to end: your own task through ``--task module:factory`` and ``Trainer``, your own
loop through ``gradsync run``, Hugging Face out through ``gradsync export``, and one-line errors
for bad task input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
LM_FLAGS = (
    "--model tiny --seq-len 32 --micro-batch 4 --global-batch 8 --max-steps 4 --eval-sequences "
    "8 --sample-tokens 0 --no-progress"
).split()


def cli(*args: str, cwd: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, PYTHONUNBUFFERED="1", **env)
    return subprocess.run(
        [sys.executable, "-m", "gradsync.cli", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradsync: error: "), r.stderr[-2000:]
    for n in needles:
        assert n in lines[0], lines[0]


def corpus(root: Path) -> Path:
    path = root / "corpus.txt"
    path.write_text("".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(3000)))
    return path


def test_export_to_transformers_gives_the_same_logits(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, BertForMaskedLM, GPT2LMHeadModel

    from gradsync.tasks import load_trained

    data = corpus(tmp_path)
    for task, cls in (("gpt", GPT2LMHeadModel), ("bert", BertForMaskedLM)):
        r = cli(
            "train", "--task", task, "--nproc", "1", "--data", str(data), "--run-dir", task, *LM_FLAGS, cwd=tmp_path
        )
        assert r.returncode == 0, r.stderr[-2000:]
        e = cli("export", task, f"{task}-hf", "--format", "hf", cwd=tmp_path)
        assert e.returncode == 0, e.stderr[-2000:]
        _, ours, _ = load_trained(tmp_path / task)
        theirs = cls.from_pretrained(tmp_path / f"{task}-hf").eval()
        x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            a, b = ours.eval()(x), theirs(input_ids=x).logits
        assert (a - b).abs().max().item() <= 1e-5 * a.abs().max().item(), task
        tok = AutoTokenizer.from_pretrained(tmp_path / f"{task}-hf")
        assert tok("def f(x):").input_ids == list(b"def f(x):")  # the run's byte tokenizer, as trained
        if task == "bert":
            assert tok.mask_token == "[MASK]" and tok.mask_token_id == 256
    one_line_error(cli("export", "gpt", "gpt-hf", cwd=tmp_path), "already exists")

    # The run folder keeps its tokenizer: sampling works after the corpus is gone.
    data.unlink()
    s = cli("sample", "gpt", "--prompt", "def ", "--tokens", "10", cwd=tmp_path)
    assert s.returncode == 0 and s.stdout.startswith("def "), s.stderr[-2000:]


def test_image_run_exports_as_safetensors_and_not_as_hf(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from gradsync.tasks import load_trained

    r = cli(
        *(
            "train --task image --image.width 8 --nproc 1 --micro-batch 8 --global-batch 8 --max-steps "
            "3 --sample-tokens 4 --no-progress --run-dir img"
        ).split(),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "4 of 359 test examples" in (tmp_path / "img" / "sample.txt").read_text()
    e = cli("export", "img", "img-st", "--format", "safetensors", cwd=tmp_path)
    assert e.returncode == 0, e.stderr[-2000:]
    _, model, _ = load_trained(tmp_path / "img")
    saved = load_file(tmp_path / "img-st" / "model.safetensors")
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    one_line_error(cli("export", "img", "img-hf", "--format", "hf", cwd=tmp_path), "use --format safetensors")
    assert not (tmp_path / "img-hf").exists()


MY_TASK = textwrap.dedent('''
    """A user's own task: regression with an MLP, nothing from gradsync but the Task seam."""
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from gradsync.tasks import Task


    class Points:
        def __init__(self, n, offset):
            g = torch.Generator().manual_seed(offset)
            self.x = torch.randn(n, 8, generator=g)
            self.y = self.x @ torch.linspace(-1, 1, 8) + 0.5

        def __len__(self):
            return len(self.y)

        def batch(self, ids, draws, train):
            idx = torch.as_tensor(np.asarray(ids))
            return self.x[idx], self.y[idx]


    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))

        def forward(self, x, y):
            return F.mse_loss(self.net(x).squeeze(-1), y)


    class Regression(Task):
        name = "regression"
        description = "y = w.x + b"

        def build_model(self):
            return Regressor()

        def train_examples(self):
            return Points(512, 0)

        def eval_examples(self):
            return Points(64, 1)


    def make(cfg):
        return Regression(cfg)
''')


def test_your_own_task_by_factory_and_in_python(tmp_path: Path) -> None:
    (tmp_path / "mytask.py").write_text(MY_TASK)
    r = cli(
        *(
            "train --task mytask:make --nproc 2 --strategy zero2 --micro-batch 8 --global-batch 32 "
            "--max-steps 60 --lr 1e-2 --no-progress --run-dir mine"
        ).split(),
        cwd=tmp_path,
        PYTHONPATH=str(tmp_path),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    evals = [
        json.loads(line) for line in (tmp_path / "mine" / "metrics.jsonl").read_text().splitlines() if '"eval"' in line
    ]
    assert evals[-1]["val_loss"] < 0.1, evals[-1]
    assert "task regression" in r.stdout

    # the same task handed to gradsync.Trainer from Python, a world of one in this process
    sys.path.insert(0, str(tmp_path))
    try:
        import mytask

        from gradsync import build_config
        from gradsync.testing import run_world

        cfg = build_config(
            None,
            {
                "train.run_dir": str(tmp_path / "py"),
                "train.micro_batch": 8,
                "train.global_batch": 8,
                "train.max_steps": 5,
                "train.progress": False,
                "parallel.nproc": 1,
                "train.sample_tokens": 0,
            },
        )
        out = run_world(1, _fit, cfg, mytask.make(cfg))[0]
        assert out == 5
    finally:
        sys.path.remove(str(tmp_path))
    one_line_error(
        cli("train", "--task", "nosuch.module:make", "--nproc", "1", cwd=tmp_path),
        "task 'nosuch.module:make' cannot be imported",
    )


def _fit(rank: int, cfg: object, task: object) -> int:
    import gradsync

    return gradsync.Trainer(cfg, task=task).fit().steps_done


def test_gradsync_run_trains_your_loop_with_zero2_and_resumes(tmp_path: Path) -> None:
    """examples/own_loop.py, the README's DDP-style loop (a built AdamW in two groups, a torch
    scheduler, a DataLoader), stopped mid-epoch at step 20 and resumed, ends bitwise where an
    unbroken run does."""
    from gradsync.api import SAVED
    from gradsync.checkpoint import format as ckpt

    script = str(REPO / "examples" / "own_loop.py")
    runs = {"straight": [("40", "a.pt")], "split": [("20", "b.pt"), ("40", "b.pt")]}
    for steps_and_files in runs.values():
        for steps, file in steps_and_files:
            r = cli(
                "run", "--nproc", "2", script, "--strategy", "zero2", "--steps", steps, "--ckpt", file, cwd=tmp_path
            )
            assert r.returncode == 0, r.stderr[-2000:]
    a = ckpt.load_checkpoint(tmp_path / "a.pt", SAVED)
    b = ckpt.load_checkpoint(tmp_path / "b.pt", SAVED)
    assert a["extra"]["data"]["step"] == b["extra"]["data"]["step"] == 40 and a["world_size"] == 2
    assert a["extra"]["scheduler"] == b["extra"]["scheduler"]  # resumed mid-epoch, scheduler included
    ma, mb = a["strategy"]["model"], b["strategy"]["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    oa, ob = a["strategy"]["optimizer"], b["strategy"]["optimizer"]
    assert len(oa["param_groups"]) == 2 and oa["param_groups"][0]["lr"] == ob["param_groups"][0]["lr"] < 1e-3
    assert all(torch.equal(oa["state"][i]["exp_avg"], ob["state"][i]["exp_avg"]) for i in oa["state"])
    one_line_error(cli("run", "--nproc", "2", "missing.py", cwd=tmp_path), "'missing.py' does not exist")


def test_bad_task_input_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    one_line_error(
        cli("train", "--task", "hf-causal-lm", "--hf.config", "bad.json", "--nproc", "1", cwd=tmp_path),
        "is not valid JSON",
    )
    (tmp_path / "notype.json").write_text('{"n_layer": 2}')
    one_line_error(
        cli("train", "--task", "hf-causal-lm", "--hf.config", "notype.json", "--nproc", "1", cwd=tmp_path), "model_type"
    )
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(b"")
    one_line_error(
        cli("train", "--task", "image", "--image.source", "flat", "--nproc", "1", cwd=tmp_path), "no class subfolders"
    )
    speech = tmp_path / "speech" / "yes"
    speech.mkdir(parents=True)
    with wave.open(str(speech / "a.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(8000, dtype="<i2").tobytes())
    one_line_error(
        cli("train", "--task", "speech", "--speech.source", "speech", "--nproc", "1", cwd=tmp_path),
        "sampled at 8000 Hz",
    )


def test_fine_tune_pretrained_hf_weights_with_their_tokenizer(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    from gradsync.core.config import build_config
    from gradsync.tasks import build_task

    data = corpus(tmp_path)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train(
        [str(data)],
        trainers.BpeTrainer(vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    torch.manual_seed(5)
    pretrained = GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=tok.get_vocab_size(), n_positions=64)
    )
    pretrained.save_pretrained(tmp_path / "pretrained")

    over = {
        "task.name": "hf-causal-lm",
        "hf.pretrained": str(tmp_path / "pretrained"),
        "data.source": str(data),
        "data.tokenizer": str(tmp_path / "tokenizer.json"),
        "data.seq_len": 32,
    }
    model = build_task(build_config(None, over)).build_model()
    assert all(torch.equal(model.state_dict()[f"hf.{k}"], v) for k, v in pretrained.state_dict().items())

    flags = [
        "--task",
        "hf-causal-lm",
        "--hf.pretrained",
        "pretrained",
        "--data",
        str(data),
        "--tokenizer",
        "tokenizer.json",
        "--seq-len",
        "32",
        "--micro-batch",
        "4",
        "--global-batch",
        "8",
        "--max-steps",
        "3",
        "--sample-tokens",
        "5",
        "--no-progress",
        "--nproc",
        "1",
    ]
    r = cli("train", *flags, "--run-dir", "ft", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "ft" / "tokenizer.json").is_file()
    one_line_error(
        cli("train", *flags, "--run-dir", "bad", "--tokenizer", "missing.json", cwd=tmp_path),
        "tokenizer file 'missing.json' does not exist",
    )


def test_gradsync_run_hands_its_timeout_to_parallelize(tmp_path: Path) -> None:
    (tmp_path / "loop.py").write_text(
        textwrap.dedent("""
            import torch
            import gradsync
            dp = gradsync.parallelize(torch.nn.Linear(2, 2), lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
            print("timeout", dp.strategy.comm.timeout_s)
        """)
    )
    r = cli("run", "--nproc", "1", "--timeout", "20", "loop.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "timeout 20.0" in r.stdout


def test_a_task_factory_in_the_current_folder_is_found_and_its_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "my_tasks.py").write_text("def make(cfg):\n    raise RuntimeError('no data for this task')\n")
    exe = Path(sys.executable).with_name("gradsync")  # the console script: no folder on sys.path by itself
    full = dict(os.environ)
    args = [str(exe), "train", "--task", "my_tasks:make", "--nproc", "1"]
    r = subprocess.run(args, cwd=tmp_path, env=full, capture_output=True, text=True, timeout=120)
    one_line_error(r, "task factory 'my_tasks:make' failed: RuntimeError: no data for this task")
    debug = subprocess.run(
        args, cwd=tmp_path, env={**full, "GRADSYNC_DEBUG": "1"}, capture_output=True, text=True, timeout=120
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "no data for this task" in debug.stderr


def test_a_script_that_exits_with_a_code_or_raises_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    r = cli("run", "--nproc", "2", "exits.py", cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "run: exits.py exited with code 3" in r.stderr and "worker rank" in r.stderr, r.stderr[-2000:]
    (tmp_path / "raises.py").write_text("x = 1\nraise ValueError('the data loader found no files')\n")
    r = cli("run", "--nproc", "1", "raises.py", cwd=tmp_path)
    one_line_error(r, "run: raises.py:2 raised ValueError: the data loader found no files")


def test_a_rendezvous_port_another_job_holds_is_one_line_at_once(tmp_path: Path) -> None:
    """A single-node job hosts its rendezvous: if the port is taken (here by a listening socket, as
    another job's store is), it says so at once instead of joining that job's rendezvous and
    waiting for it to end."""
    import socket
    import time

    (tmp_path / "hello.py").write_text("print('hello')\n")
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        port = other.getsockname()[1]
        t0 = time.monotonic()
        r = cli(
            "run", "--nproc", "2", "--rdzv-endpoint", f"127.0.0.1:{port}", "--timeout", "30", "hello.py", cwd=tmp_path
        )
    one_line_error(r, f"the rendezvous port {port} of 127.0.0.1:{port} is already in use on this machine")
    assert time.monotonic() - t0 < 30
