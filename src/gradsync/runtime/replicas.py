"""One replica of a live job (``parallel.fault_tolerance=live``), on torchft.

torchft (https://github.com/pytorch/torchft) keeps the healthy replicas of a data-parallel job
training while another fails: a Lighthouse forms a quorum of the replicas alive at each step, the
step's gradients are averaged over that quorum only, and a replica that comes back copies the
live state from a peer before it takes part. Here each ``gradsync train`` launch (one node's
workers, with any strategy in :data:`gradsync.core.config.LIVE_STRATEGIES` inside it) is one
replica; every worker of it holds a torchft ``Manager`` that speaks for its rank, and its
cross-replica process group joins the workers of the same rank in every replica. A step::

    quorum = replica.begin()        # waits for a quorum; a returning replica receives the state here
    ... forward and backward on this replica's share of the step's global batch ...
    replica.average_(grads)         # over the quorum's replicas, after the strategy's own sync
    if replica.commit(): update     # every replica of the quorum agrees the step went through

A replica whose collective failed (a peer died inside it) does not commit the step: it skips the
update, and the next quorum takes the same step again, on the same data. torchft decides per
replica, so where a peer's all-reduce completed (it summed every share) that peer commits, and
the next quorum has the replica that did not copy its state.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from gradsync.core.config import ParallelConfig
from gradsync.core.errors import ConfigError, DistributedError
from gradsync.runtime.dist import Comm, per_dtype_flat
from gradsync.runtime.launch import bind_gloo_to

# A run's consecutive uncommitted attempts of one step before it gives up: each failed attempt
# has already waited up to a collective's timeout, and a step that keeps failing is not transient.
MAX_FAILED_COMMITS = 20
QUORUM_POLL_S = 0.5  # how often a quorum smaller than parallel.min_replicas is asked again


@dataclass(frozen=True)
class Quorum:
    """Who takes a step: its number (the steps committed so far), this replica's place among
    the participating replicas, and their count."""

    step: int
    index: int
    size: int


def _torchft() -> Any:
    # torchft's Rust side logs every quorum and commit at INFO on stderr (read once, at import)
    os.environ.setdefault("RUST_LOG", "warn")
    try:
        import torchft
        from torchft.checkpointing.pg_transport import PGTransport
    except ImportError:
        raise ConfigError(
            "parallel.fault_tolerance=live needs the torchft package: pip install 'gradsync[ft]'"
        ) from None
    # torchft narrates every quorum and prints a traceback for each failed collective; gradsync
    # says what happened in one line of its own
    logging.getLogger("torchft").setLevel(logging.CRITICAL)
    # its checkpoint transport wraps a pickled bytes object in a tensor it only reads
    warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
    # and unpickles a tree spec that torch's pytree now calls deprecated
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*deprecated", category=FutureWarning)
    return torchft, PGTransport


def lighthouse_url(address: str) -> str:
    """``host:port`` (or a URL) as the URL torchft's clients dial."""
    return address if "://" in address else f"http://{address}"


class LiveReplica:
    """This worker's part of a live replica: a torchft ``Manager`` with a gloo process group across
    replicas, and the state a returning replica copies (``state``/``load``: this rank's model
    and optimizer state; the data position is the step itself)."""

    def __init__(
        self,
        p: ParallelConfig,
        comm: Comm,
        state: Callable[[], dict[str, Any]],
        load: Callable[[dict[str, Any]], None],
        start_step: int,
    ) -> None:
        torchft, PGTransport = _torchft()
        self.p = p
        self.comm = comm
        timeout = timedelta(seconds=p.timeout_s)
        host = p.local_addr or socket.gethostname()
        if p.local_addr:  # the replicas' gloo group binds where the other replicas reach this node
            bind_gloo_to(p.local_addr)
        # The replica's store, which torchft uses to find its rank 0's manager and the quorum's
        # process groups: rank 0 holds it, the other workers learn its port.
        port = torch.zeros(1, dtype=torch.int64)
        self._store = None
        if comm.rank == 0:
            self._store = dist.TCPStore(host, 0, is_master=True, wait_for_workers=False, timeout=timeout)
            port[0] = self._store.port
        if comm.world_size > 1:
            comm.broadcast(port, src=0)
        self.pg = torchft.ProcessGroupGloo(timeout=timeout)
        try:
            self.manager = torchft.Manager(
                pg=self.pg,
                load_state_dict=load,
                state_dict=state,
                min_replica_size=p.min_replicas,
                use_async_quorum=False,  # a returning replica has the state before its first forward
                timeout=timeout,
                quorum_timeout=timedelta(seconds=p.quorum_timeout_s),
                connect_timeout=timedelta(seconds=min(p.timeout_s, p.quorum_timeout_s)),
                rank=comm.rank,
                world_size=comm.world_size,
                store_addr=host,
                store_port=int(port[0]),
                lighthouse_addr=lighthouse_url(p.lighthouse),
                replica_id=f"replica_{p.replica_id}",
                hostname=host,
                init_sync=False,  # every replica builds the same model from the run's seed
                checkpoint_transport=PGTransport(self.pg, timeout, comm.env.device),
                max_retries=MAX_FAILED_COMMITS,
            )
        except RuntimeError as e:
            raise DistributedError(
                f"cannot reach the torchft Lighthouse at {p.lighthouse} (parallel.lighthouse): {_first_line(e)}; "
                "start it with gradsync lighthouse, or give its host:port"
            ) from None
        self.manager.load_state_dict({"step": start_step, "batches_committed": 0})

    def begin(self) -> Quorum:
        """Wait for the quorum of the next step (a returning replica copies the live state from a
        peer here) and say who takes it. A quorum of fewer than ``parallel.min_replicas`` that
        lasts ``parallel.quorum_timeout_s`` is an error."""
        deadline = time.monotonic() + self.p.quorum_timeout_s
        while True:
            try:
                self.manager.start_quorum()
            except Exception as e:  # torchft raises what its Rust client raised: timeouts, lost connections
                raise DistributedError(
                    f"no quorum formed at the Lighthouse {self.p.lighthouse} within {self.p.quorum_timeout_s:g}s "
                    f"(parallel.quorum_timeout_s): fewer replicas are alive than its --min-replicas, or it is "
                    f"gone ({_first_line(e)})"
                ) from None
            index, size = self.manager.participating_rank(), self.manager.num_participants()
            if index is None:  # a sync quorum with healing: every member of it participates
                raise DistributedError("this replica was left out of the quorum it joined; restart it")
            if size >= self.p.min_replicas:
                return Quorum(self.manager.current_step(), index, size)
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"only {size} replica(s) alive for {self.p.quorum_timeout_s:g}s (parallel.quorum_timeout_s), "
                    f"fewer than parallel.min_replicas={self.p.min_replicas}; restart the missing replicas"
                )
            time.sleep(QUORUM_POLL_S)  # the quorum grows when a replica (re)joins

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` in place over the quorum's replicas (one all-reduce per dtype). A
        failure is not raised here: it makes :meth:`commit` say no and :meth:`failed` yes."""
        per_dtype_flat(tensors, lambda flat: self.manager.allreduce(flat).wait())

    def commit(self) -> bool:
        """Whether every replica of the quorum finished this step's collectives: update only if so."""
        try:
            return bool(self.manager.should_commit())
        except RuntimeError as e:
            step = self.manager.current_step() + 1
            raise DistributedError(f"step {step} failed on every try: {_first_line(e)}") from None

    def failed(self) -> bool:
        """Whether a collective across replicas failed since this step's quorum (its result is
        not to be used: a local method skips that average and keeps its own parameters)."""
        return self.manager.errored() is not None

    def shutdown(self) -> None:
        self.manager.shutdown(wait=False)


def _first_line(e: BaseException) -> str:
    """What went wrong, in a few words: torchft's messages go on with advice and nested causes."""
    text = str(e).strip()
    grpc = re.search(r'message: "([^"]*)"', text)  # a gRPC status: its message is the news
    if grpc:
        return grpc.group(1)
    return text.splitlines()[0].split(";")[0] if text else type(e).__name__


def serve_lighthouse(
    port: int, min_replicas: int, join_timeout_s: float, heartbeat_timeout_s: float, ready: Callable[[str], None]
) -> None:
    """Run a torchft Lighthouse on ``port`` (0 = a free one) until SIGINT or SIGTERM: it forms each
    step's quorum from the replicas that heartbeat to it, once ``min_replicas`` are there and
    ``join_timeout_s`` has passed for more to come; a replica silent for ``heartbeat_timeout_s``
    is dropped. ``ready`` receives its address once it listens."""
    _torchft()
    from torchft.coordination import LighthouseServer

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = LighthouseServer(
            bind=f"[::]:{port}",
            min_replicas=min_replicas,
            join_timeout_ms=int(join_timeout_s * 1000),
            heartbeat_timeout_ms=int(heartbeat_timeout_s * 1000),
        )
    except RuntimeError as e:
        raise ConfigError(f"cannot start the Lighthouse on port {port}: {_first_line(e)}") from None
    try:
        ready(server.address())
        stop.wait()
    finally:
        server.shutdown()
