"""Links and networks: the alpha-beta model of ring collectives (Thakur et al. 2005; Patarasuk &
Yuan 2009) with the factors of :mod:`gradsync.core.ring`: with p ranks and an n-byte buffer,
all-reduce costs 2(p-1)/p * n * beta + 2(p-1) * alpha; reduce-scatter and all-gather (n = the full
buffer) cost (p-1)/p * n * beta + (p-1) * alpha. Every collective has its own link, because
backends differ (gloo's reduce-scatter costs an all-reduce); a network may have two levels."""

from __future__ import annotations

from dataclasses import dataclass

from gradsync.core.errors import ConfigError
from gradsync.core.ring import OPS, ring_factors


class CostModelError(ConfigError):
    """Input the model cannot price (a bad link, an unknown device): one line for the user."""


@dataclass(frozen=True)
class Link:
    """Latency ``alpha_s`` per ring step and inverse bandwidth ``beta_s_per_byte``."""

    alpha_s: float
    beta_s_per_byte: float

    def __post_init__(self) -> None:
        if not (self.alpha_s >= 0 and self.beta_s_per_byte >= 0):
            raise CostModelError(
                f"a link needs latency >= 0 and bandwidth > 0, got alpha={self.alpha_s}, beta={self.beta_s_per_byte}"
            )

    @classmethod
    def from_bandwidth(cls, gbit_per_s: float, latency_us: float) -> Link:
        if not gbit_per_s > 0:
            raise CostModelError(f"bandwidth must be > 0 Gbit/s, got {gbit_per_s}")
        if not latency_us >= 0:
            raise CostModelError(f"latency must be >= 0 us, got {latency_us}")
        return cls(latency_us * 1e-6, 8.0 / (gbit_per_s * 1e9))


@dataclass(frozen=True)
class Network:
    """The link each collective sees: one for all (presets) or one per collective (calibrated).

    A two-level network (nodes of ``per_node`` devices joined by ``intra``) keeps these links for
    the network between nodes: a flat ring over all devices is as slow as its slowest hop, which
    crosses that network, and :meth:`two_level` prices reducing inside the node first."""

    name: str
    links: dict[str, Link]
    intra: Network | None = None
    per_node: int = 1

    @classmethod
    def uniform(cls, name: str, link: Link) -> Network:
        return cls(name, {op: link for op in OPS})

    def time(self, op: str, nbytes: float, p: int) -> float:
        """Seconds for one ``op`` on an ``nbytes`` buffer among ``p`` ranks (ring algorithm)."""
        if op not in OPS:
            raise CostModelError(f"unknown collective '{op}'; known: {', '.join(OPS)}")
        fb, fa = ring_factors(op, p)
        if p <= 1:
            return 0.0
        link = (
            self.links.get(op)
            or self.links.get("all_gather" if op == "all_to_all" else "all_reduce")
            or self.links["all_reduce"]
        )
        return fb * nbytes * link.beta_s_per_byte + fa * link.alpha_s

    def two_level(self, nbytes: float, p: int) -> float:
        """An all-reduce of ``nbytes`` among ``p`` devices in two levels
        (:mod:`gradsync.parallel.grad_paths.hierarchical`): reduce-scatter inside each node, all-reduce across
        the N nodes, all-gather inside the node. The node's p/N workers each send their shard's
        share across at once, so the node's link carries the whole 2(N−1)/N · n. One level when
        there is one node or one device per node."""
        nodes = p // self.per_node if self.per_node > 0 else p
        if self.intra is None or self.per_node <= 1 or nodes <= 1:
            return self.time("all_reduce", nbytes, p)
        return (
            self.intra.time("reduce_scatter", nbytes, self.per_node)
            + self.time("all_reduce", nbytes, nodes)
            + self.intra.time("all_gather", nbytes, self.per_node)
        )


# Published line rates; latencies are typical small-message figures (assumptions, see the docs).
NETWORKS: dict[str, tuple[float, float, str]] = {  # name: (Gbit/s per direction, latency us, what)
    "nvlink": (2400.0, 3.0, "NVLink 3 (A100): 300 GB/s per direction"),
    "nvlink4": (3600.0, 3.0, "NVLink 4 (H100/H200): 450 GB/s per direction"),
    "ib-ndr": (400.0, 5.0, "InfiniBand NDR, 400 Gbit/s per GPU"),
    "ib-hdr": (200.0, 5.0, "InfiniBand HDR, 200 Gbit/s per GPU"),
    "100gbe": (100.0, 20.0, "100 Gbit Ethernet"),
    "25gbe": (25.0, 30.0, "25 Gbit Ethernet"),
    "10gbe": (10.0, 40.0, "10 Gbit Ethernet"),
    "1gbe": (1.0, 60.0, "1 Gbit Ethernet"),
}


def network_preset(name: str) -> Network:
    if name not in NETWORKS:
        raise CostModelError(
            f"unknown network '{name}'; choose one of {', '.join(NETWORKS)} or give --bandwidth-gbps and --latency-us"
        )
    gbps, lat, what = NETWORKS[name]
    return Network.uniform(what, Link.from_bandwidth(gbps, lat))
