"""Compare two run folders record by record: the check for a change that must not change training
(a refactor, a move, a rename). Every metrics record's training quantities (loss, grad_norm, lr,
val_loss, comm_bytes, ...) must be equal, and ``sample.txt`` identical; timings are ignored.

    python tools/compare_runs.py runs/before runs/after

Exits 0 when the runs agree, 1 with the first differences otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIELDS = ("loss", "grad_norm", "lr", "val_loss", "skipped", "comm_bytes", "comm_wire_bytes", "comm_calls")


def records(run: Path) -> list[dict[str, object]]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def differences(a: Path, b: Path) -> list[str]:
    """What differs between runs ``a`` and ``b``: one line each (empty when they agree)."""
    ra, rb = records(a), records(b)
    out = []
    if len(ra) != len(rb):
        out.append(f"metrics.jsonl: {len(ra)} records against {len(rb)}")
    for x, y in zip(ra, rb):
        for key in FIELDS:
            if x.get(key) != y.get(key):
                out.append(f"{x.get('kind')} step {x.get('step')}: {key} {x.get(key)!r} != {y.get(key)!r}")
    sa, sb = (r / "sample.txt" for r in (a, b))
    if sa.is_file() != sb.is_file() or (sa.is_file() and sa.read_bytes() != sb.read_bytes()):
        out.append("sample.txt differs")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ns = ap.parse_args()
    diff = differences(ns.before, ns.after)
    n = len(records(ns.before))
    if diff:
        print("\n".join(diff[:20]) + (f"\n... {len(diff) - 20} more" if len(diff) > 20 else ""))
        return 1
    print(f"equal: {n} records ({', '.join(FIELDS)}) and sample.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
