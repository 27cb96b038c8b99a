"""Slurm's environment as gradsync reads it: host lists, the job step's nodes, and flags that win."""

from __future__ import annotations

import argparse

import pytest

from gradsync.core import slurm
from gradsync.core.args import add_config_args, config_from_args
from gradsync.core.errors import ConfigError

STEP = {
    "SLURM_JOB_ID": "81234",
    "SLURM_STEP_NUM_NODES": "3",
    "SLURM_STEP_NUM_TASKS": "3",
    "SLURM_NODEID": "2",
    "SLURM_STEP_NODELIST": "gpu[007-009]",
    "SLURM_GPUS_ON_NODE": "8",
}


@pytest.mark.parametrize(
    "spec, names",
    [
        ("node1", ["node1"]),
        ("gpu[01-03,7],login", ["gpu01", "gpu02", "gpu03", "gpu7", "login"]),
        ("a[08-10]", ["a08", "a09", "a10"]),
        ("r[1-2]n[3,5]", ["r1n3", "r1n5", "r2n3", "r2n5"]),
        ("x-[1-2].cluster,y", ["x-1.cluster", "x-2.cluster", "y"]),
    ],
)
def test_host_lists_expand_as_slurm_writes_them(spec: str, names: list[str]) -> None:
    assert slurm.expand_hostlist(spec) == names


@pytest.mark.parametrize("spec", ["", "gpu[01-03", "gpu[3-1]", "gpu[a-b]", "gpu]1["])
def test_a_host_list_slurm_would_not_write_is_one_line(spec: str) -> None:
    with pytest.raises(ConfigError, match="Slurm host list"):
        slurm.expand_hostlist(spec)


def test_a_job_step_gives_nodes_rank_endpoint_and_gpus() -> None:
    assert slurm.slurm_settings(STEP) == {
        "parallel.nnodes": "3",
        "parallel.node_rank": "2",
        "parallel.nproc": "8",
        "parallel.rdzv_endpoint": "gpu007:21234",
        "parallel.rdzv_id": "slurm-81234",
    }


def test_outside_a_job_step_nothing_is_read() -> None:
    assert slurm.slurm_settings({"SLURM_JOB_ID": "5", "SLURM_JOB_NUM_NODES": "4"}) == {}  # the batch script
    assert slurm.slurm_settings({}) == {}


def test_a_one_node_step_without_gpus_keeps_the_local_rendezvous() -> None:
    env = {
        "SLURM_JOB_ID": "7",
        "SLURM_STEP_NUM_NODES": "1",
        "SLURM_STEP_NUM_TASKS": "1",
        "SLURM_NODEID": "0",
        "SLURM_STEP_NODELIST": "laptop",
    }
    assert slurm.slurm_settings(env) == {"parallel.nnodes": "1", "parallel.node_rank": "0"}


def test_several_tasks_per_node_is_one_line() -> None:
    with pytest.raises(ConfigError, match="run one task per node: srun --ntasks-per-node=1"):
        slurm.slurm_settings({**STEP, "SLURM_STEP_NUM_TASKS": "24"})


def _config(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], argv: list[str]):
    for k in list(__import__("os").environ):
        if k.startswith("SLURM_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    p = argparse.ArgumentParser()
    add_config_args(p)
    ns, extra = p.parse_known_args(["--micro-batch", "1", "--global-batch", "48", *argv])
    return config_from_args(ns, extra)


def test_flags_and_the_config_file_win_over_slurm(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    p = _config(monkeypatch, STEP, []).parallel
    assert (p.nnodes, p.node_rank, p.nproc, p.rdzv_endpoint, p.rdzv_id) == (3, 2, 8, "gpu007:21234", "slurm-81234")
    p = _config(monkeypatch, STEP, ["--nproc", "2", "--rdzv-endpoint", "head:29400"]).parallel
    assert (p.nnodes, p.nproc, p.rdzv_endpoint) == (3, 2, "head:29400")
    toml = tmp_path / "c.toml"
    toml.write_text("[parallel]\nnproc = 4\n")
    assert _config(monkeypatch, STEP, ["--config", str(toml)]).parallel.nproc == 4
    assert _config(monkeypatch, {}, []).parallel.node_rank == -1
    line = slurm.describe(_config(monkeypatch, STEP, []).parallel, STEP)
    assert line == "gradsync: Slurm job 81234: node 2 of 3, 8 worker(s) per node, rendezvous at gpu007:21234"
