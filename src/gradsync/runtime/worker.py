"""The per-worker entry point: ``python -m gradsync.runtime.worker [--job MODULE:FUNCTION] [run flags] [-- JOB ARGS]``.

``gradsync train`` and ``gradsync calibrate`` start it through torch's elastic agent
(:func:`gradsync.runtime.launch.launch_workers`); across nodes, run it under ``torchrun`` yourself (see
the README). It reads its rank and world from the environment the agent sets, builds the run's
config, joins the process group, runs the job ``function(cfg, env, job_args)`` (the trainer by
default), and exits 0, or prints one ``gradsync: error: [rank R] ...`` line and exits 2.

The job is named, not imported here: the runtime layer knows nothing of what runs on it.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys
import time
from collections.abc import Sequence

from gradsync.core.args import ArgParser, add_config_args, config_from_args
from gradsync.core.catalog import resolve
from gradsync.core.console import survive_closed_output
from gradsync.core.errors import EXIT_PREEMPTED, GradsyncError, PeerFailed, Preempted, one_line_error
from gradsync.runtime.dist import init_distributed, shutdown

TRAIN_JOB = "gradsync.training.trainer:worker_job"
PEER_GRACE_S = 1.0  # a rank whose peer failed waits this long before it exits


def run(argv: Sequence[str]) -> int:
    argv = list(argv)
    job_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = ArgParser(prog="gradsync.runtime.worker")
    add_config_args(p)
    p.add_argument("--job", default=TRAIN_JOB, help="module:function(cfg, env, job_args) to run")
    ns, extra = p.parse_known_args(argv)
    cfg = config_from_args(ns, extra)
    env = init_distributed(cfg.parallel.backend, cfg.parallel.timeout_s)
    resolve(ns.job)(cfg, env, job_args)
    gc.collect()  # what the job left (pending work handles in reference cycles) goes while the group lives
    shutdown()
    return 0


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_launcher() -> None:
    """Ask the kernel to SIGKILL this worker when the process that started it dies, however it
    dies: a launcher killed with SIGKILL (a scheduler's hard kill, the OOM killer) cannot stop its
    workers, and orphans would go on training and pruning checkpoints under a resubmitted run.
    Linux only (elsewhere the agent's own shutdown is all there is)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(os.environ.get("GRADSYNC_LAUNCHER_PID", os.getppid())):
        os._exit(1)  # the launcher died before the request was in place: we are already an orphan


def main(argv: Sequence[str] | None = None) -> int:
    rank = os.environ.get("RANK", "0")
    die_with_launcher()
    survive_closed_output()  # `gradsync train | head` must not kill the run
    try:
        code = run(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()
        sys.stderr.flush()
        # The group is shut down and every file closed: skip the interpreter's teardown, where
        # torch's C++ state (gloo, the store) can abort a finished worker with "terminate called
        # without an active exception" (seen about once in 7 calibrations, and once in CI).
        os._exit(code)
    except Preempted as e:  # every rank saved and stops together; the launcher says so
        if rank == "0":
            print(f"gradsync: {e}", flush=True)
        sys.stderr.flush()
        os._exit(EXIT_PREEMPTED)
    except (GradsyncError, OSError, MemoryError, RuntimeError) as e:
        message = one_line_error(e)
        if message is None:
            raise
        print(f"gradsync: error: [rank {rank}] {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        if isinstance(e, PeerFailed):  # let the rank that failed first exit first: the launcher names it
            time.sleep(PEER_GRACE_S)
        # Exit without interpreter teardown: tearing down a live gloo group whose peers are still
        # inside a collective can hang or abort; the agent stops the other workers.
        os._exit(2)


if __name__ == "__main__":
    sys.exit(main())
