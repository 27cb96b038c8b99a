"""Which ranks share a node, and the process groups of a two-level network: one group per node
(the fast link: NVLink, shared memory, loopback) and one group per local index across the nodes
(the slow link: the network between them).

The layout comes from the launcher: torchrun's elastic agent gives each worker its node's rank in
the rendezvous (``GROUP_RANK``) and its index on the node (``LOCAL_RANK``); without an agent the
host name stands for the node. Every rank tells every other which node it is on (one
``all_gather_object``), so the layout is the same everywhere, whatever order ranks were numbered in.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

from gradsync.core.errors import ConfigError
from gradsync.runtime.dist import Comm


@dataclass(frozen=True)
class NodeLayout:
    """``nodes[i]`` = the global ranks on node i, by local index."""

    nodes: tuple[tuple[int, ...], ...]

    @property
    def per_node(self) -> int:
        return len(self.nodes[0])

    def describe(self) -> str:
        return f"{len(self.nodes)} node(s) x {self.per_node} worker(s)"


def node_key() -> str:
    """What names this process's node: the agent's ``GROUP_RANK``, else the host name."""
    group = os.environ.get("GROUP_RANK")
    return f"node{group}" if group is not None else socket.gethostname()


def node_layout(comm: Comm) -> NodeLayout:
    """The ranks of every node (collective). Nodes are ordered by their lowest rank; every node
    must hold the same number of ranks (a two-level reduction splits each buffer among them)."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    seen = comm.all_gather_object((node_key(), local))
    by_node: dict[str, list[tuple[int, int]]] = {}
    for rank, (key, local_rank) in enumerate(seen):
        by_node.setdefault(key, []).append((local_rank, rank))
    nodes = sorted((tuple(r for _, r in sorted(members)) for members in by_node.values()), key=min)
    sizes = sorted({len(n) for n in nodes})
    if len(sizes) > 1:
        raise ConfigError(
            f"hierarchical synchronisation needs the same number of workers on every node; "
            f"this job has {', '.join(str(len(n)) for n in nodes)}"
        )
    return NodeLayout(tuple(nodes))


@dataclass
class TwoLevel:
    """The groups this rank belongs to: ``intra`` (its node) and ``inter`` (the ranks with its local
    index on every node)."""

    layout: NodeLayout
    intra: Comm
    inter: Comm


def two_level_groups(comm: Comm) -> TwoLevel:
    """Build the node groups and the cross-node groups (collective: every rank creates every group,
    in the same order, as torch.distributed requires)."""
    layout = node_layout(comm)
    timeout = timedelta(seconds=comm.timeout_s)
    me = comm.env.rank
    intra = inter = None
    for node in layout.nodes:
        g = dist.new_group(list(node), timeout=timeout)
        if me in node:
            intra = g
    for i in range(layout.per_node):
        same_slot = [node[i] for node in layout.nodes]
        g = dist.new_group(same_slot, timeout=timeout)
        if me in same_slot:
            inter = g
    assert intra is not None and inter is not None
    return TwoLevel(layout, comm.subgroup(intra), comm.subgroup(inter))
