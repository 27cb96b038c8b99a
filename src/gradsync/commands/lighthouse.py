"""``gradsync lighthouse``: the torchft Lighthouse of a live job (``--fault-tolerance live``).

Every replica (one ``gradsync train --fault-tolerance live --replica-id N --lighthouse HOST:PORT``
per node) heartbeats to it, and it forms each step's quorum from the replicas alive at that
moment. Run one per job, on a machine that outlives the replicas (it holds no training state:
restarting it costs one quorum, not the run).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gradsync.core.errors import ConfigError
from gradsync.runtime.replicas import serve_lighthouse


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=29510, help="the port to listen on (0 = a free one, printed)")
    p.add_argument("--min-replicas", type=int, default=1, help="no quorum forms with fewer replicas")
    p.add_argument(
        "--join-timeout", type=float, default=1.0, help="seconds a new quorum waits for more replicas to join"
    )
    p.add_argument(
        "--heartbeat-timeout", type=float, default=5.0, help="a replica silent this long (seconds) is dropped"
    )


def run(ns: argparse.Namespace, extra: Sequence[str]) -> int:
    if extra:
        raise ConfigError(f"lighthouse: unrecognized argument(s) {' '.join(extra)}")
    if not 0 <= ns.port < 65536 or ns.min_replicas < 1 or ns.join_timeout < 0 or ns.heartbeat_timeout <= 0:
        raise ConfigError(
            "lighthouse: --port must be in [0, 65535], --min-replicas >= 1, --join-timeout >= 0 "
            "and --heartbeat-timeout > 0"
        )

    def ready(address: str) -> None:
        print(
            f"gradsync: lighthouse at {address} (quorums of at least {ns.min_replicas} replica(s)); "
            "stop it with Ctrl-C",
            flush=True,
        )

    serve_lighthouse(ns.port, ns.min_replicas, ns.join_timeout, ns.heartbeat_timeout, ready)
    return 0
