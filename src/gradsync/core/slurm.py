"""Slurm: what ``srun gradsync train ...`` learns from the job step's environment.

Under ``srun`` every node runs one gradsync launcher, which starts that node's workers itself (as
``torchrun`` does), so a job step must have exactly one task per node. The step's environment
gives the node count (``SLURM_STEP_NUM_NODES``), this node's rank (``SLURM_NODEID``) and the
nodes (``SLURM_STEP_NODELIST``, in Slurm's compressed form ``gpu[01-04,07]``); gradsync turns them
into config values that sit below the config file and the flags, so both still win:

* ``parallel.nnodes`` = the step's node count, ``parallel.node_rank`` = ``SLURM_NODEID``;
* with more than one node, ``parallel.rdzv_endpoint`` = the step's first node, port
  ``20000 + job id mod 10000`` (two jobs sharing a node get different ports; ``--rdzv-endpoint``
  picks another), and ``parallel.rdzv_id`` = ``slurm-JOBID``; node 0 hosts the rendezvous;
* ``parallel.nproc`` = ``SLURM_GPUS_ON_NODE`` when the step has GPUs.

Outside a job step (no ``SLURM_STEP_NUM_NODES``: a login node, or the batch script itself
before ``srun``) nothing is read.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

from gradsync.core.config import ParallelConfig
from gradsync.core.errors import ConfigError

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list as names: ``"gpu[01-03,7],login"`` ->
    ``["gpu01", "gpu02", "gpu03", "gpu7", "login"]`` (ranges keep their zero padding; several
    bracket groups in one name, ``r[1-2]n[1-2]``, expand to their product)."""
    names: list[str] = []
    for item in _split_top_level(hostlist.strip()):
        names.extend(_expand_one(item, hostlist))
    if not names:
        raise ConfigError(f"Slurm host list '{hostlist}' names no host")
    return names


def _split_top_level(s: str) -> list[str]:
    """Split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth < 0 or depth > 1:
            raise ConfigError(f"Slurm host list '{s}' has unbalanced brackets")
        if ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    if depth:
        raise ConfigError(f"Slurm host list '{s}' has unbalanced brackets")
    parts.append(s[start:])
    return [p for p in parts if p]


def _expand_one(item: str, whole: str) -> list[str]:
    open_at = item.find("[")
    if open_at < 0:
        return [item]
    close_at = item.index("]", open_at)
    prefix, body, rest = item[:open_at], item[open_at + 1 : close_at], item[close_at + 1 :]
    numbers: list[str] = []
    for piece in body.split(","):
        m = _RANGE.match(piece.strip())
        if m is None:
            raise ConfigError(f"Slurm host list '{whole}': cannot read the range '{piece}'")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise ConfigError(f"Slurm host list '{whole}': the range '{piece}' runs backwards")
        numbers.extend(str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1))
    return [prefix + n + tail for n in numbers for tail in _expand_one(rest, whole)]


def rendezvous_port(job_id: str) -> int:
    """The rendezvous port of a multi-node job: ``20000 + job id mod 10000``."""
    digits = re.sub(r"\D", "", job_id) or "0"  # array tasks look like 1234_5
    return 20000 + int(digits) % 10000


def slurm_settings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Config values (dotted keys) for a command started by ``srun``; empty outside a job step.
    One line of :class:`ConfigError` for a step that runs several tasks on a node."""
    env = os.environ if env is None else env
    if "SLURM_STEP_NUM_NODES" not in env or "SLURM_JOB_ID" not in env:
        return {}
    try:
        nodes = int(env["SLURM_STEP_NUM_NODES"])
        tasks = int(env.get("SLURM_STEP_NUM_TASKS", nodes))
        node_rank = int(env.get("SLURM_NODEID", "0"))
    except ValueError:
        raise ConfigError(
            "the Slurm environment is not what srun sets (SLURM_STEP_NUM_NODES, SLURM_STEP_NUM_TASKS "
            "and SLURM_NODEID must be integers)"
        ) from None
    if tasks != nodes:
        raise ConfigError(
            f"this Slurm job step runs {tasks} tasks on {nodes} node(s); gradsync starts each node's "
            "workers itself, so run one task per node: srun --ntasks-per-node=1 gradsync ..."
        )
    out = {"parallel.nnodes": str(nodes), "parallel.node_rank": str(node_rank)}
    gpus = env.get("SLURM_GPUS_ON_NODE", "")
    if gpus.isdigit() and int(gpus) > 0:
        out["parallel.nproc"] = gpus
    if nodes > 1:
        job = env["SLURM_JOB_ID"]
        first = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", ""))[0]
        out["parallel.rdzv_endpoint"] = f"{first}:{rendezvous_port(job)}"
        out["parallel.rdzv_id"] = f"slurm-{job}"
    return out


def announce(p: ParallelConfig) -> None:
    """Under ``srun``, say on stderr where this node stands in the job (the job's log is where
    one looks when a node does not join)."""
    if "SLURM_STEP_NUM_NODES" in os.environ and "SLURM_JOB_ID" in os.environ:
        print(describe(p), file=sys.stderr, flush=True)


def describe(p: ParallelConfig, env: Mapping[str, str] | None = None) -> str:
    """One line for the job's log: this node's place in the job, as finally configured."""
    env = os.environ if env is None else env
    where = f", rendezvous at {p.rdzv_endpoint}" if p.nnodes > 1 else ""
    return (
        f"gradsync: Slurm job {env.get('SLURM_JOB_ID', '?')}: node {p.node_rank} of {p.nnodes}, "
        f"{p.nproc} worker(s) per node{where}"
    )
