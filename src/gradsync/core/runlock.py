"""One run per run folder: a lock file naming the host and PID that hold it.

Two runs writing into one folder mix their files (one's summary, the other's checkpoints) and
prune each other's checkpoints; a ``--resume`` started while the run is still going would train
beside it. ``gradsync train`` takes the folder's lock before any worker starts and gives it back
when it ends. A lock left by a process that is gone (killed with SIGKILL, a machine that
rebooted) is taken over when it was held on this host; a lock from another host cannot be checked
from here, and the message says how to clear it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from gradsync.core.errors import ConfigError

LOCK_FILE = ".gradsync.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or raise a one-line ConfigError naming the run that holds it."""
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise ConfigError(f"run folder '{self.path.parent}' is a file; choose another --run-dir")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the run folder '{self.path.parent}': {e.strerror or e}") from None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == me["host"] and not _alive(int(str(holder.get("pid", 0)))):
                    self.path.unlink(missing_ok=True)  # a dead process's lock: take it over
                    continue
                raise ConfigError(
                    f"run folder '{self.path.parent}' is in use by another gradsync run (host "
                    f"{holder.get('host', '?')}, PID {holder.get('pid', '?')}, since {holder.get('since', '?')}); "
                    f"wait for it or stop it, or choose another --run-dir (if that process is gone, delete "
                    f"{self.path})"
                ) from None
            except OSError as e:
                raise ConfigError(f"cannot write in the run folder '{self.path.parent}': {e.strerror or e}") from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return
        raise ConfigError(f"could not take the lock {self.path}; another run is starting in the same folder")

    def _holder(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}  # being written this instant, or damaged: treated as held by an unknown run

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
