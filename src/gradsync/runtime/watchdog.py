"""A backstop for the one hang torch's elastic agent can still fall into.

The agent talks to the rendezvous store with blocking TCP calls. When the link to the node that
hosts the store goes silent (cable pulled, node frozen: no reset, so no error), such a call waits
for TCP to give up, which takes many minutes, whatever ``read_timeout`` says. gradsync's workers
already fail within ``parallel.timeout_s`` (see :class:`gradsync.runtime.dist.Comm`); this thread makes the
agent do the same: it watches the launcher's threads, and when one call into the store has
lasted longer than the limit, it stops this node's workers and exits with one line.

The same holds before the first call: creating the store's client connects and then waits for
the server's answer, and a program on that port that accepts connections but never answers (a
wrong ``--rdzv-endpoint``, a half-dead process) holds it there with no limit at all.

Healthy store calls (set, get, compare-and-set on the rendezvous state) answer in milliseconds;
the rendezvous itself waits by polling, so a long wait for other nodes is many short calls, not
one long one, and is bounded separately by the join timeout.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

# functions of torch's c10d rendezvous backend that wait on the store, and what a long wait in each means
STORE_CALLS = {
    "_call_store": "has not answered for {limit}s (parallel.timeout_s): the link to the node hosting it is "
    "down or that node is frozen",  # C10dRendezvousBackend._call_store: every store call
    "_create_tcp_store": "could not be reached within {limit}s (parallel.timeout_s): a program there accepts "
    "connections but does not answer; check --rdzv-endpoint names the rendezvous "
    "host and a port nothing else uses",  # connecting to (or hosting) the store
}


def store_call_frame(frame: FrameType | None) -> FrameType | None:
    """The innermost frame of ``frame``'s stack that waits on the rendezvous store, if any."""
    while frame is not None:
        if frame.f_code.co_name in STORE_CALLS and "rendezvous" in frame.f_code.co_filename:
            return frame
        frame = frame.f_back
    return None


class StoreWatchdog(threading.Thread):
    """Exit the process (status 2, one line) if any thread (the agent's main loop, or its
    rendezvous keep-alive timer, which holds a lock the main loop then waits on) spends more than
    ``limit_s`` in a single rendezvous store call, or in creating the store's client. ``what``
    names the store in the message."""

    def __init__(self, limit_s: float, what: str, poll_s: float = 0.5) -> None:
        super().__init__(name="gradsync-store-watchdog", daemon=True)
        self.limit_s, self.what, self.poll_s = limit_s, what, poll_s
        self._stop = threading.Event()

    def run(self) -> None:
        # thread id -> (the store-call frame it is in, since when); holding the frame keeps its
        # identity from being reused by a later call
        current: dict[int, tuple[FrameType, float]] = {}
        while not self._stop.wait(self.poll_s):
            now = time.monotonic()
            for tid, top in sys._current_frames().items():
                if tid == self.ident:
                    continue
                frame = store_call_frame(top)
                seen = current.get(tid)
                if frame is None:
                    current.pop(tid, None)
                elif seen is None or seen[0] is not frame:
                    current[tid] = (frame, now)
                elif now - seen[1] > self.limit_s:
                    self._fail(frame.f_code.co_name)

    def _fail(self, call: str) -> None:
        _kill_children()
        why = STORE_CALLS[call].format(limit=f"{self.limit_s:g}")
        print(
            f"gradsync: error: the rendezvous store at {self.what} {why}; this node's workers were stopped",
            file=sys.stderr,
            flush=True,
        )
        os._exit(2)

    def stop(self) -> None:
        self._stop.set()


def _kill_children() -> None:
    """SIGKILL this process's children (the agent starts workers in sessions of their own, so they
    would outlive it)."""
    me = str(os.getpid())
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if (d / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                os.kill(int(d.name), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            continue
