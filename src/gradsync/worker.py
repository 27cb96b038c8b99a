"""The per-worker entry point: ``python -m gradsync.worker [train flags]``.

``gradsync train`` starts it through torch's elastic agent; across nodes, run it under
``torchrun`` yourself (see the README). It reads its rank and world from the environment the
agent sets, trains, and exits 0, or prints one ``gradsync: error: [rank R] ...`` line and exits 2.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence


from gradsync.cli import _Parser, add_config_args, config_from_args
from gradsync.errors import GradsyncError


def run(argv: Sequence[str]) -> int:
    from gradsync.dist import init_distributed, shutdown
    from gradsync.peak import worker_peak_flops
    from gradsync.train import Trainer

    p = _Parser(prog="gradsync.worker")
    add_config_args(p)
    ns, extra = p.parse_known_args(argv)
    cfg = config_from_args(ns, extra)
    if not cfg.train.run_dir:
        cfg = cfg.replace(**{"train.run_dir": f"runs/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}"})
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restart > 0:  # the agent restarted every worker after one died: continue from the newest checkpoint
        cfg = cfg.replace(**{"train.resume": "auto"})
        if os.environ.get("RANK", "0") == "0":
            print(f"gradsync: restart {restart}: resuming from the newest checkpoint in {cfg.train.run_dir}",
                  flush=True)
    env = init_distributed(cfg.parallel)
    trainer = Trainer(cfg, env)
    trainer.fit(worker_peak_flops(cfg, env.device, env.local_world_size))
    shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    rank = os.environ.get("RANK", "0")
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except GradsyncError as e:
        print(f"gradsync: error: [rank {rank}] {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Exit without interpreter teardown: tearing down a live gloo group whose peers are still
        # inside a collective can hang or abort; the agent stops the other workers.
        os._exit(2)


if __name__ == "__main__":
    sys.exit(main())
