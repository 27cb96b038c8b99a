"""Config: defaults validate, overrides coerce types, bad values fail with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradsync.cli import build_parser
from gradsync.core.args import config_from_args, parse_dotted
from gradsync.core.config import Config, build_config, incompatible_fields, load_toml
from gradsync.core.errors import ConfigError


def test_defaults_are_valid_and_round_trip_through_toml(tmp_path: Path) -> None:
    cfg = Config()
    assert cfg.grad_accum_steps(2) == cfg.train.global_batch // (2 * cfg.train.micro_batch)
    p = tmp_path / "c.toml"
    p.write_text(cfg.to_toml())
    assert build_config(load_toml(p)) == cfg


def test_any_string_value_round_trips_through_toml(tmp_path: Path) -> None:
    """config.toml is what the workers read: a prompt with newlines, quotes, backslashes, control
    characters or non-ASCII must come back exactly."""
    cfg = build_config(None, {"train.sample_prompt": 'def f():\n\t"x" \\ é \x01 \x7f'})
    p = tmp_path / "c.toml"
    p.write_text(cfg.to_toml(), encoding="utf-8")
    assert build_config(load_toml(p)) == cfg


def test_overrides_are_coerced_to_field_types() -> None:
    cfg = build_config(
        None, {"train.max_steps": "7", "optim.lr": "1e-3", "train.progress": "false", "model.n_layer": "3"}
    )
    assert cfg.train.max_steps == 7 and cfg.optim.lr == 1e-3 and cfg.train.progress is False
    assert cfg.model.n_layer == 3


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("parallel.strategy", "magic", "parallel.strategy 'magic' is unknown"),
        ("train.precision", "fp8", "train.precision"),
        ("train.max_steps", "0", "train.max_steps must be >= 1"),
        ("train.max_steps", "ten", "train.max_steps must be of type int"),
        ("model.preset", "gpt5", "model.preset 'gpt5' is unknown"),
        ("optim.lr", "-1", "optim.lr must be > 0"),
        ("model.n_embd", "30", "divisible by model.n_head"),
        ("nope.key", "1", "unknown config key 'nope.key'"),
        ("optim.lr", "inf", "optim.lr must be a finite number"),
        ("optim.lr", "nan", "optim.lr must be a finite number"),
        ("parallel.timeout_s", "inf", "parallel.timeout_s must be a finite number"),
        ("parallel.timeout_s", "0.5", "parallel.timeout_s must be at least 1 second"),
        ("train.seed", "-1", r"train.seed must be in \[0, 2\*\*63\)"),
        ("train.seed", str(2**64), r"train.seed must be in \[0, 2\*\*63\)"),
    ],
)
def test_bad_values_name_the_key(key: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_config(None, {key: value})


def test_global_batch_must_divide_by_world_times_micro_batch() -> None:
    with pytest.raises(
        ConfigError,
        match=r"global_batch \(30\) must be divisible by world size × "
        r"train.micro_batch \(2 × 8 = 16\)",
    ):
        build_config(None, {"train.global_batch": 30, "train.micro_batch": 8})


def test_cli_flags_aliases_and_dotted_keys() -> None:
    ns, extra = build_parser("train").parse_known_args(
        ["--nproc", "4", "--max-steps", "9", "--train.seed=3", "--sample-tokens", "5", "--resume"]
    )
    cfg = config_from_args(ns, extra)
    assert (cfg.parallel.nproc, cfg.train.max_steps, cfg.train.seed) == (4, 9, 3)
    assert cfg.train.sample_tokens == 5 and cfg.train.resume == "auto"
    with pytest.raises(ConfigError, match="unrecognized argument '--bogus'"):
        parse_dotted(["--bogus", "1"])


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[train\nmax_steps = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")


def test_incompatible_fields_lists_what_differs() -> None:
    a = Config()
    b = build_config(None, {"model.n_layer": "8", "train.max_steps": "5"})
    assert incompatible_fields(a.to_dict(), b) == ["model.n_layer: None -> 8"]


def test_a_task_chooses_its_defaults_where_nothing_was_set() -> None:
    from gradsync.core.catalog import TASK_DEFAULTS
    from gradsync.core.config import sources

    bert = build_config(None, {"task.name": "bert"})
    assert (bert.optim.lr, bert.data.seq_len, bert.train.global_batch, bert.train.micro_batch) == (1e-3, 32, 128, 64)
    assert sources(bert) == {k: "task bert" for k in TASK_DEFAULTS["bert"]}
    mine = build_config(None, {"task.name": "bert", "optim.lr": 5e-4, "train.global_batch": 32})
    assert mine.optim.lr == 5e-4 and mine.data.seq_len == 32
    assert mine.train.micro_batch == build_config().train.micro_batch  # the batch pair is the user's, whole
    assert build_config({"task": {"name": "image"}, "train": {"max_steps": 40}}).train.max_steps == 40
    gpt = build_config()
    assert sources(gpt) == {} and gpt.optim.warmup_steps == 50  # the GPT's are the config's own defaults
    resolved = build_config(bert.to_dict())  # a saved config.toml read back is taken as it is
    assert resolved == bert


def test_warm_up_is_never_longer_than_a_quarter_of_a_short_run() -> None:
    from gradsync.core.config import sources

    short = build_config(None, {"train.max_steps": 30})
    assert short.optim.warmup_steps == 7 and sources(short) == {"optim.warmup_steps": "train.max_steps / 4"}
    assert build_config(None, {"train.max_steps": 1000}).optim.warmup_steps == 50
    assert build_config(None, {"train.max_steps": 30, "optim.warmup_steps": 20}).optim.warmup_steps == 20
    assert build_config(None, {"task.name": "speech"}).optim.warmup_steps == 50  # 200 steps: a quarter is 50


LIVE = {"parallel.fault_tolerance": "live", "parallel.lighthouse": "host:29510", "parallel.replica_id": "0"}


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"parallel.fault_tolerance": "elastic"}, "parallel.fault_tolerance 'elastic' is unknown"),
        ({**LIVE, "parallel.lighthouse": ""}, "needs parallel.lighthouse=HOST:PORT"),
        ({**LIVE, "parallel.replica_id": "-1"}, "needs parallel.replica_id"),
        ({**LIVE, "parallel.strategy": "zero3"}, "'zero3' with live recovery is not implemented"),
        ({**LIVE, "parallel.strategy": "diloco:8"}, "runs diloco across replicas of one worker each"),
        (
            {**LIVE, "parallel.strategy": "diloco:8,overlap=1", "parallel.nproc": "1"},
            "streaming DiLoCo .* is not implemented",
        ),
        ({**LIVE, "parallel.strategy": "zero2:hybrid=true"}, "hybrid sharding is across nodes"),
        ({**LIVE, "parallel.find_unused": "true"}, "find_unused with parallel.fault_tolerance=live"),
        (
            {**LIVE, "parallel.nnodes": "2", "parallel.rdzv_endpoint": "h:1"},
            "a replica is one node's workers",
        ),
        ({**LIVE, "parallel.min_replicas": "0"}, "parallel.min_replicas must be >= 1"),
    ],
)
def test_live_fault_tolerance_refuses_what_it_cannot_do(change: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build_config(None, change)
    if change.get("parallel.fault_tolerance") == "live":
        build_config(None, LIVE)  # and the job as it should be is accepted
