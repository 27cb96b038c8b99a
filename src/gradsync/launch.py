"""``gradsync train``: check the inputs once, then start the workers through torch's elastic agent.

Everything that can be wrong with the input (config, data path, batch divisibility, checkpoint) is
checked here, in one process, before any worker starts, so bad input costs a second and prints one
line. Workers are started by ``torch.distributed.launcher.api.elastic_launch``, the machinery
behind ``torchrun``: c10d rendezvous, one agent per node, ``nproc`` workers per agent.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from gradsync import checkpoint as ckpt
from gradsync.config import Config, ParallelConfig
from gradsync.errors import ConfigError, DistributedError
from gradsync.watchdog import StoreWatchdog

if TYPE_CHECKING:
    from gradsync.data import TokenData


def prepare(cfg: Config) -> Config:
    """Validate the run on one process and resolve what every worker must agree on: the run
    folder, the checkpoint to resume, and the peak FLOP/s used for MFU."""
    import torch

    from gradsync.data import ShardedBatches, load_tokens
    from gradsync.peak import worker_peak_flops

    t = cfg.train
    updates: dict[str, object] = {}
    run_dir = t.run_dir or (_latest_run("runs") if t.resume == "auto" else "") or \
        f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    updates["train.run_dir"] = run_dir
    existing = ckpt.list_checkpoints(run_dir)
    if existing and not t.resume:
        raise ConfigError(f"run folder '{run_dir}' already holds checkpoints; pass --resume to continue "
                          "it or choose another --run-dir")
    data = None
    if cfg.parallel.nnodes == 1:
        data = load_tokens(cfg.data)
        ShardedBatches(data.train, cfg.data.seq_len, t.global_batch, t.micro_batch, 0,
                       cfg.parallel.world_size, t.seed)
    path = ckpt.resolve_resume(t.resume, run_dir)
    if cfg.parallel.strategy == "auto":
        cfg = cfg.replace(**{"parallel.strategy": _resolve_auto(cfg, path, data)})
    if path is None and t.resume == "auto":
        print(f"gradsync: no checkpoint in '{run_dir}' to resume; starting a new run", file=sys.stderr)
    if path is not None:
        ckpt.check_compatible(ckpt.load_checkpoint(path), cfg, path)
        updates["train.resume"] = str(path)
    if t.peak_tflops == 0 and not _cuda():  # measure once here, not on every worker at once
        updates["train.peak_tflops"] = worker_peak_flops(cfg, torch.device("cpu"), cfg.parallel.nproc) / 1e12
    return cfg.replace(**updates)


def _resolve_auto(cfg: Config, resume: Path | None, data: TokenData | None) -> str:
    """``--strategy auto``: the strategy a resumed run was using, else the cost model's choice."""
    from gradsync.data import load_tokens
    from gradsync.plan import auto_strategy

    if resume is not None:
        chosen = ckpt.load_checkpoint(resume)["config"]["parallel"]["strategy"]
        print(f"gradsync: --strategy auto: continuing with {chosen}, the strategy of {resume}", file=sys.stderr)
        return chosen
    vocab = (data or load_tokens(cfg.data)).vocab_size
    chosen, why = auto_strategy(cfg, vocab)
    print(f"gradsync: --strategy auto chose {why}", flush=True)
    return chosen


def _latest_run(root: str) -> str:
    """The most recently modified run folder under ``root`` that holds a checkpoint ("" if none)."""
    runs = [p for p in Path(root).glob("*") if ckpt.list_checkpoints(p)] if Path(root).is_dir() else []
    return str(max(runs, key=lambda p: p.stat().st_mtime)) if runs else ""


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def launch_workers(cfg: Config, config_path: Path, module: str = "gradsync.worker",
                   args: tuple[str, ...] = ()) -> None:
    """Run ``python -m MODULE --config config_path ARGS`` on every worker and wait (the trainer by
    default; ``gradsync calibrate`` runs its measurements the same way)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError, RendezvousTimeoutError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    p = cfg.parallel
    os.environ.setdefault("OMP_NUM_THREADS", str(p.threads_per_worker(p.nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.WARNING)
    standalone = p.nnodes == 1 and not p.rdzv_endpoint
    # A node that never comes, or a store that is gone, is an error after the timeout, not a hang.
    rdzv_configs: dict[str, object] = {"join_timeout": p.timeout_s, "read_timeout": p.timeout_s}
    if not standalone:
        rdzv_configs.update(_multinode_setup(p))
    lc = LaunchConfig(
        min_nodes=p.nnodes, max_nodes=p.nnodes, nproc_per_node=p.nproc,
        run_id=str(uuid.uuid4()) if standalone else p.rdzv_id,
        rdzv_backend="c10d", rdzv_endpoint="localhost:0" if standalone else p.rdzv_endpoint,
        rdzv_configs=rdzv_configs, local_addr=p.local_addr or None,
        max_restarts=p.max_restarts, monitor_interval=0.1, start_method="spawn",
    )
    restarts = f" (after {p.max_restarts} restart(s))" if p.max_restarts else ""
    watchdog = None
    if not standalone:
        watchdog = StoreWatchdog(p.timeout_s, p.rdzv_endpoint)
        watchdog.start()
    try:
        elastic_launch(lc, sys.executable)("-u", "-m", module, "--config", str(config_path), *args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
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
            "if the run has checkpoints") from None
    except RendezvousError as e:
        why = str(e.__cause__ or e).splitlines()[0] if str(e.__cause__ or e) else type(e).__name__
        raise DistributedError(f"lost the rendezvous at {p.rdzv_endpoint} (the node hosting it may have died or "
                               f"be unreachable): {why}") from None
    finally:
        if watchdog is not None:
            watchdog.stop()


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
    """
    os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    if not p.local_addr:
        return {}
    host = p.rdzv_endpoint.rsplit(":", 1)[0]
    iface = interface_with_address(p.local_addr)
    if iface is None:
        raise ConfigError(f"parallel.local_addr '{p.local_addr}' is not an address of any network interface "
                          "of this machine; give this node's own IP address")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", iface)
    return {"is_host": host == p.local_addr}


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


def write_run_config(cfg: Config) -> Path:
    """Write the resolved config into its run folder; the workers read their config from it."""
    config_path = Path(cfg.train.run_dir) / "config.toml"
    ckpt.atomic_write_bytes(config_path, cfg.to_toml().encode())  # also creates the folder
    return config_path


def train_command(cfg: Config) -> int:
    cfg = prepare(cfg)
    config_path = write_run_config(cfg)
    if cfg.parallel.world_size == 1:
        from gradsync.worker import run

        return run(["--config", str(config_path)])
    launch_workers(cfg, config_path)
    return 0
