"""The harness every multi-process test stands on (:func:`gradsync.testing.run_world`): when one
rank crashes without a word, the failure names it and how it died, not only the peer that saw the
connection close."""

from __future__ import annotations

import pytest

from gradsync.testing import run_world


def _crash_or_complain(rank: int) -> None:
    import os
    import signal
    import time

    if rank == 0:
        os.kill(os.getpid(), signal.SIGKILL)  # as a segfault or the OOM killer would: no report
    time.sleep(0.5)
    raise ValueError("the peer is gone")


def test_a_rank_that_dies_without_a_report_is_named_with_its_signal() -> None:
    with pytest.raises(RuntimeError) as failed:
        run_world(2, _crash_or_complain, timeout=60)
    message = str(failed.value)
    assert "rank 1 failed" in message and "the peer is gone" in message
    assert "rank 0 died without a report (signal 9)" in message
