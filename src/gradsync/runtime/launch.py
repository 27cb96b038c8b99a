"""Start the workers through torch's elastic agent, the machinery behind ``torchrun``.

:func:`launch_workers` runs ``python -m gradsync.runtime.worker --job JOB`` on ``nproc`` workers per node
with ``torch.distributed.launcher.api.elastic_launch``: c10d rendezvous, one agent per node,
restarts, and one-line errors for a dead worker, a node that never joins, or a lost rendezvous.
Commands check their input before they call it (:mod:`gradsync.planning.preflight`).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import uuid
from pathlib import Path

from torch.distributed.elastic.multiprocessing import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torch.distributed.elastic.rendezvous import RendezvousError, RendezvousTimeoutError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from gradsync.core.config import Config, ParallelConfig
from gradsync.core.errors import EXIT_PREEMPTED, ConfigError, DistributedError, Preempted
from gradsync.core.files import atomic_write_bytes
from gradsync.runtime import worker
from gradsync.runtime.watchdog import StoreWatchdog
from gradsync.runtime.worker import TRAIN_JOB


def launch_workers(cfg: Config, config_path: Path, job: str = TRAIN_JOB, args: tuple[str, ...] = ()) -> None:
    """Run ``python -m gradsync.runtime.worker --job JOB --config config_path -- ARGS`` on every worker
    and wait (the trainer by default; ``gradsync calibrate`` runs its measurements the same way)."""
    p = cfg.parallel
    os.environ.setdefault("OMP_NUM_THREADS", str(p.threads_per_worker(p.nproc)))
    os.environ["GRADSYNC_LAUNCHER_PID"] = str(os.getpid())  # workers die with this process (worker.py)
    # the agent narrates shutdowns ("Sending process ... closing signal") as warnings and a failed
    # worker as an error ("failed (exitcode: 2) local_rank: 0 ..."); gradsync says what happened in
    # one line of its own (below), naming the rank that failed first
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed.elastic")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # each sets its own level: set them all
    standalone = p.nnodes == 1 and not p.rdzv_endpoint
    # A node that never comes, or a store that is gone, is an error after the timeout, not a hang.
    whole_s = math.ceil(p.timeout_s)  # the rendezvous takes whole seconds
    rdzv_configs: dict[str, object] = {"join_timeout": whole_s, "read_timeout": whole_s}
    if not standalone:
        rdzv_configs.update(_multinode_setup(p))
        if p.nnodes == 1 or rdzv_configs.get("is_host") is True:
            check_port_free(p.rdzv_endpoint)
    lc = LaunchConfig(
        min_nodes=p.nnodes,
        max_nodes=p.nnodes,
        nproc_per_node=p.nproc,
        run_id=str(uuid.uuid4()) if standalone else p.rdzv_id,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0" if standalone else p.rdzv_endpoint,
        rdzv_configs=rdzv_configs,
        local_addr=p.local_addr or None,
        max_restarts=p.max_restarts,
        monitor_interval=0.1,
        start_method="spawn",
    )
    restarts = f" (after {p.max_restarts} restart(s))" if p.max_restarts else ""
    watchdog = None
    if not standalone:
        watchdog = StoreWatchdog(p.timeout_s, p.rdzv_endpoint)
        watchdog.start()
    # the agent passes these signals on to the workers, which save and stop (gradsync.runtime.stopping)
    os.environ.setdefault("TORCHELASTIC_SIGNALS_TO_HANDLE", "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1")
    try:
        elastic_launch(lc, sys.executable)(
            "-u", "-m", "gradsync.runtime.worker", "--job", job, "--config", str(config_path), "--", *args
        )
    except SignalException as e:  # the agent gave the workers the signal and up to 30 s to save
        raise Preempted(f"stopped by {signal.Signals(e.sigval).name}") from None
    except ChildFailedError as e:
        if all(f.exitcode == EXIT_PREEMPTED for f in e.failures.values()):  # the workers got it directly
            raise Preempted("stopped by a signal") from None
        rank, failure = _culprit(e)
        code = failure.exitcode
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}; its error is printed above"
        raise DistributedError(f"worker rank {rank} {how}; the other workers were stopped{restarts}") from None
    except RendezvousTimeoutError:
        raise DistributedError(
            f"not all {p.nnodes} nodes joined the rendezvous at {p.rdzv_endpoint or 'localhost'} within "
            f"{p.timeout_s:g}s (parallel.timeout_s); start the missing node(s), with --resume "
            "if the run has checkpoints"
        ) from None
    except RendezvousError as e:
        why = str(e.__cause__ or e).splitlines()[0] if str(e.__cause__ or e) else type(e).__name__
        raise DistributedError(
            f"lost the rendezvous at {p.rdzv_endpoint} (the node hosting it may have died or be unreachable): {why}"
        ) from None
    finally:
        if watchdog is not None:
            watchdog.stop()


def _culprit(e: ChildFailedError) -> tuple[int, ProcessFailure]:
    """The failed worker to name. When one worker dies, its peers fail too (exit 2 after a
    collective to the dead rank errs, or SIGTERM from the agent), often within the same second,
    and torch's "first" failure is then whichever it lists first. Blame, in order: a worker killed
    by a signal other than the agent's SIGTERM, one that exited with a code other than gradsync's
    own error exit (2), and only then the earliest."""
    fs = e.failures
    for cause in (
        lambda f: f.exitcode < 0 and f.exitcode != -signal.SIGTERM,
        lambda f: f.exitcode not in (2, -signal.SIGTERM),
    ):
        found = sorted(r for r, f in fs.items() if cause(f))
        if found:
            rank = min(found, key=lambda r: fs[r].timestamp)
            return rank, fs[rank]
    return e.get_first_failure()


def _multinode_setup(p: ParallelConfig) -> dict[str, object]:
    """Settings for a job that meets at ``p.rdzv_endpoint``: the extra rendezvous configs, and the
    environment its workers need.

    * Every round of the rendezvous (each restart, each node that comes back) gets a fresh store
      for the workers (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE``): with the agent's shared store,
      torch publishes the master address once, and a node that joins a later round waits forever
      for it.
    * With ``parallel.local_addr``, this node hosts the rendezvous exactly when the endpoint is
      its address, advertises that address to the other nodes, and gloo binds to the interface
      that holds it (several nodes may share one hostname: containers, namespaces).
    * Else, with ``parallel.node_rank`` (Slurm's ``SLURM_NODEID``), node 0 hosts it; else torch
      decides by comparing the endpoint's host with this machine's names.
    """
    os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    if not p.local_addr:
        return {} if p.node_rank < 0 else {"is_host": p.node_rank == 0}
    host = p.rdzv_endpoint.rsplit(":", 1)[0]
    bind_gloo_to(p.local_addr)
    return {"is_host": host == p.local_addr}


def bind_gloo_to(local_addr: str) -> None:
    """Make gloo groups created from now on bind to the interface that holds ``local_addr`` (the
    address the other nodes reach this one at), unless ``GLOO_SOCKET_IFNAME`` says otherwise."""
    iface = interface_with_address(local_addr)
    if iface is None:
        raise ConfigError(
            f"parallel.local_addr '{local_addr}' is not an address of any network interface "
            "of this machine; give this node's own IP address"
        )
    os.environ.setdefault("GLOO_SOCKET_IFNAME", iface)


def check_port_free(endpoint: str) -> None:
    """This node must host the rendezvous at ``endpoint``: fail at once if its port is taken.
    Otherwise torch's agent would quietly become a client of whatever listens there — another
    gradsync job's store, whose rendezvous it then waits on until that job ends."""
    import socket

    host, port = endpoint.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed run's TIME_WAIT is no conflict
        try:
            s.bind(("", int(port)))
        except OSError as e:
            raise ConfigError(
                f"the rendezvous port {port} of {endpoint} is already in use on this machine "
                f"(another gradsync job or program holds it: {e.strerror}); give --rdzv-endpoint "
                f"{host}:PORT with a free port, or leave it out for a single-node job"
            ) from None


def interface_with_address(addr: str) -> str | None:
    """The name of the network interface that holds IPv4 address ``addr`` (a host name is
    resolved first), or None. Linux only (SIOCGIFADDR); elsewhere always None."""
    import fcntl
    import socket
    import struct

    try:
        ip = socket.gethostbyname(addr)
    except OSError:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))  # SIOCGIFADDR
            except OSError:
                continue  # no IPv4 address on this interface
            if socket.inet_ntoa(packed[20:24]) == ip:
                return name
    return None


def run_job(cfg: Config, config_path: Path, job: str = TRAIN_JOB, args: tuple[str, ...] = ()) -> None:
    """Run ``job`` on the run's workers: in this process when the world is one worker (no agent to
    start), else through :func:`launch_workers`."""
    if cfg.parallel.world_size == 1:
        worker.run(["--job", job, "--config", str(config_path), "--", *args])
    else:
        launch_workers(cfg, config_path, job, args)


def write_run_config(cfg: Config) -> Path:
    """Write the resolved config into its run folder; the workers read their config from it."""
    config_path = Path(cfg.train.run_dir) / "config.toml"
    atomic_write_bytes(config_path, cfg.to_toml().encode())  # also creates the folder
    return config_path
