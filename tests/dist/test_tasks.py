"""Every built-in task, and Hugging Face GPT-2 and BERT from tiny configs, in real gloo worlds:
2 workers reach the parameters of 1 worker at the same global batch under ``bucketed``,
``zero2`` and ``zero3``; 20 steps equal 10 + resume + 10 bitwise; and each task learns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from gradsync.testing import max_rel_diff, run_world, train_and_collect, train_each

STRATEGIES = ("bucketed", "zero2", "zero3")


def hf_configs(root: Path) -> dict[str, str]:
    """config.json files for a tiny GPT-2 and BERT (no dropout: equivalence is exact math)."""
    gpt2 = {
        "model_type": "gpt2",
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "vocab_size": 16,
        "n_positions": 16,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    }
    bert = {
        "model_type": "bert",
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "vocab_size": 17,
        "max_position_embeddings": 16,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    out = {}
    for name, d in (("gpt2", gpt2), ("bert", bert)):
        path = root / f"{name}.json"
        path.write_text(json.dumps(d))
        out[name] = str(path)
    return out


def task_overrides(root: Path) -> dict[str, dict[str, Any]]:
    hf = hf_configs(root)
    return {
        "gpt": {"task.name": "gpt"},
        "bert": {"task.name": "bert"},
        "image": {"task.name": "image", "image.width": 8},
        "speech": {"task.name": "speech", "speech.width": 8},
        "hf-causal-lm": {"task.name": "hf-causal-lm", "hf.config": hf["gpt2"]},
        "hf-masked-lm": {"task.name": "hf-masked-lm", "hf.config": hf["bert"]},
    }


TASKS = ("gpt", "bert", "image", "speech", "hf-causal-lm", "hf-masked-lm")


def _params(rank: int, configs: list[dict[str, Any]]) -> list[Any]:
    return [train_and_collect(rank, c)["params"] for c in configs]


@pytest.fixture(scope="module")
def equivalence(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from conftest import TINY, merge

    root = tmp_path_factory.mktemp("tasks")
    over = task_overrides(root)
    common = {"train.max_steps": 10, "train.global_batch": 8}
    singles = [
        merge(TINY, {**over[t], **common, "train.micro_batch": 4, "train.run_dir": str(root / f"{t}-1")}) for t in TASKS
    ]
    pairs = [(t, s) for t in TASKS for s in STRATEGIES]
    doubles = [
        merge(
            TINY,
            {
                **over[t],
                **common,
                "parallel.nproc": 2,
                "parallel.strategy": s,
                "train.micro_batch": 4,
                "train.run_dir": str(root / f"{t}-{s}"),
            },
        )
        for t, s in pairs
    ]
    ref = dict(zip(TASKS, run_world(1, _params, singles, timeout=600)[0]))
    got = dict(zip(pairs, run_world(2, _params, doubles, timeout=600)[0]))
    return {"ref": ref, "got": got}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("task", TASKS)
def test_two_workers_match_one(equivalence: dict[str, Any], task: str, strategy: str) -> None:
    diff = max_rel_diff(equivalence["ref"][task], equivalence["got"][(task, strategy)])
    assert diff <= 1e-5, f"{task} under {strategy}: {diff:.3g} of the parameter scale"


@pytest.mark.parametrize("task", TASKS)
def test_training_moved_the_parameters(equivalence: dict[str, Any], task: str, tmp_path: Path) -> None:
    """Guard against a vacuous pass: ten steps move every task's parameters well beyond tolerance."""
    from conftest import TINY, merge

    from gradsync.core.config import build_config
    from gradsync.tasks import build_task

    cfg = build_config(merge(TINY, task_overrides(tmp_path)[task]))
    torch.manual_seed(cfg.train.seed)
    init = build_task(cfg).build_model().state_dict()
    assert max_rel_diff(equivalence["ref"][task], init) > 1e-3


def _straight_then_split(rank: int, configs: list[tuple[Any, Any, Any]]) -> list[Any]:
    return [tuple(train_and_collect(rank, c) for c in triple) for triple in configs]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from conftest import TINY, merge

    root = tmp_path_factory.mktemp("task-resume")
    over = task_overrides(root)
    configs = []
    for t in TASKS:
        common = {
            **over[t],
            "parallel.nproc": 2,
            "parallel.strategy": "zero2",
            "train.micro_batch": 2,
            "train.global_batch": 8,
            "train.max_steps": 20,
        }
        straight = merge(TINY, {**common, "train.run_dir": str(root / f"{t}-straight")})
        first = merge(TINY, {**common, "train.run_dir": str(root / f"{t}-split"), "train.stop_after": 10})
        configs.append((straight, first, merge(first, {"train.stop_after": 0, "train.resume": "auto"})))
    return dict(zip(TASKS, run_world(2, _straight_then_split, configs, timeout=600)[0]))


@pytest.mark.parametrize("task", TASKS)
def test_resume_is_bitwise_identical(resumed: dict[str, Any], task: str) -> None:
    full, half, rest = resumed[task]
    assert [r["step"] for r in rest["history"]] == list(range(11, 21))
    a, b = full["params"], rest["params"]
    assert all(torch.equal(a[k], b[k]) for k in a), f"{task}: resumed parameters differ from the straight run"
    assert [r["loss"] for r in full["history"][10:]] == [r["loss"] for r in rest["history"]]


# -- learning, on held-out data (short versions of the README's runs) ---------------------------

LEARN = {
    "image": ({"task.name": "image", "train.max_steps": 150}, 0.95),
    "speech": ({"task.name": "speech", "train.max_steps": 80}, 0.90),  # test voices never heard in training
}


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from conftest import TINY, merge

    root = tmp_path_factory.mktemp("learn")
    configs = [
        merge(
            TINY,
            {
                **over,
                "parallel.nproc": 2,
                "train.micro_batch": 32,
                "train.global_batch": 64,
                "optim.warmup_steps": 10,
                "train.eval_sequences": 1000,
                "train.run_dir": str(root / name),
            },
        )
        for name, (over, _) in LEARN.items()
    ]
    bert = merge(
        TINY,
        {
            "task.name": "bert",
            "parallel.nproc": 2,
            "model.preset": "mini",
            "data.seq_len": 32,
            "data.synthetic_vocab": 8,
            "optim.lr": 1e-2,
            "train.micro_batch": 16,
            "train.global_batch": 32,
            "train.max_steps": 150,
            "train.eval_sequences": 256,
            "train.run_dir": str(root / "bert"),
        },
    )
    out = run_world(2, train_each, configs + [bert], timeout=600)[0]
    return dict(zip([*LEARN, "bert"], out))


@pytest.mark.parametrize("task", list(LEARN))
def test_classifier_learns(learned: dict[str, Any], task: str) -> None:
    acc = learned[task]["metrics"]["val_accuracy"]
    assert acc >= LEARN[task][1], f"{task}: held-out accuracy {acc:.3f}"


def test_bert_beats_the_unigram_baseline(learned: dict[str, Any]) -> None:
    from gradsync.core.config import build_config
    from gradsync.tasks.bert import BertTask

    out = learned["bert"]
    baseline = BertTask(
        build_config({"task": {"name": "bert"}, "data": {"source": "synthetic", "seq_len": 32, "synthetic_vocab": 8}})
    ).unigram_baseline()
    acc = out["metrics"]["val_accuracy"]
    assert acc > baseline + 0.1, f"masked-token accuracy {acc:.3f} vs unigram baseline {baseline:.3f}"
