"""The worker job of ``gradsync run``: run a user's training script as ``__main__`` on this worker.

The process group is already joined (by :mod:`gradsync.runtime.worker`, with gradsync's timeouts), so
:func:`gradsync.parallelize` or plain ``torch.distributed`` calls in the script use it; the
environment is torchrun's (RANK, WORLD_SIZE, LOCAL_RANK, TORCHELASTIC_RESTART_COUNT, ...).
The worker leaves with ``os._exit`` once the group is shut down (see :func:`gradsync.runtime.worker.main`),
so the script's ``atexit`` handlers do not run: finish its work before it returns.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from gradsync.core.config import Config
from gradsync.core.errors import DEBUG_HINT, ConfigError, GradsyncError, ScriptError
from gradsync.runtime.dist import DistEnv

SCRIPT_JOB = "gradsync.runtime.script:worker_job"


def worker_job(cfg: Config, env: DistEnv, argv: Sequence[str]) -> None:
    if not argv:
        raise ConfigError("run: no script given")
    script, *args = argv
    path = Path(script)
    if not path.is_file():
        raise ConfigError(f"run: script '{script}' does not exist")
    # the launcher's settings, for gradsync.parallelize to default to (the group is joined already)
    os.environ["GRADSYNC_TIMEOUT_S"] = str(cfg.parallel.timeout_s)
    os.environ["GRADSYNC_BACKEND"] = cfg.parallel.backend
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(path.resolve().parent))  # as `python script.py` would
    try:
        namespace = runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:  # sys.exit(0) / sys.exit() is a normal end; a code or a message is not
        if e.code in (None, 0):
            return
        raise ScriptError(f"run: {script} exited with {'code ' if isinstance(e.code, int) else ''}{e.code}") from None
    except (GradsyncError, KeyboardInterrupt):
        raise
    except Exception as e:
        where = _script_line(e, path)
        raise ScriptError(f"run: {script}{where} raised {type(e).__name__}: {e} ({DEBUG_HINT})") from e
    namespace.clear()  # the script's objects (its model, open files) go now, not at interpreter exit


def _script_line(e: BaseException, path: Path) -> str:
    """``:LINE`` of the script's deepest frame in the traceback, or ""."""
    line = ""
    tb = e.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line
