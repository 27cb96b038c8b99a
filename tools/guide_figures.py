"""The guide's conceptual figures, drawn from gradsync's own functions rather than by hand.

    python tools/guide_figures.py --out-dir docs/figures

Each figure computes what it shows with the code the guide describes, so a change in that code
redraws it (the guide's rule "no hand-typed numbers" extends to pictures):

- ``collectives.png``: all-reduce, reduce-scatter, all-gather and broadcast on 4 ranks, before
  and after, each result computed with numpy and its bytes per rank from ``core.ring``;
- ``ring-allreduce.png``: the ring all-reduce round by round on 4 ranks (3 reduce-scatter rounds,
  then 3 all-gather rounds), simulated chunk by chunk; the bytes each rank sent are checked
  against ``core.ring.wire_bytes``;
- ``overlap.png``: bucketed backward on a timeline, the two cases of chapter 4 — each bucket's
  all-reduce placed by ``costmodel.link_schedule``, the exposed tail by ``costmodel.exposed_after``;
- ``zero3-prefetch.png``: ZeRO-3's forward, each block's all-gather and compute on a timeline
  without prefetch and with one block of prefetch, from ``costmodel.gather_schedule``;
- ``zero-memory.png``: bytes per rank for a 7B GPT on 8 ranks under each ZeRO stage, from
  ``costmodel.memory``, against an 80 GB device;
- ``diloco-schedule.png``: streaming DiLoCo's fragments, when each is sent and when it lands,
  from ``parallel.diloco.sends_at``;
- ``batch-split.png``: one global batch of 16 examples split over 1, 2 and 4 workers with
  micro-batches of 4, each cell an example id as ``data.batches.ShardedBatches`` hands it out;
- ``critical-batch.png``: steps and examples to a loss against the batch, from McCandlish et
  al.'s model (2018), S = S_min (1 + B_noise / B) and E = E_min (1 + B / B_noise);
- ``concept-chain.png``: chapter 2's chain from "faster" to the four remedies, each remedy with
  the gradsync strategies that apply it, sorted by the catalog and the cost model (which ones
  shard the optimizer state, which step on their own between averages, which overlap backward);
- ``layers.png``: gradsync's layers as its source has them — every folder of ``src/gradsync``
  against the folders it imports, read from the import statements, lowest layer first.

The docs tests run this script and check the committed pictures are the ones it lists.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable
from functools import cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import gradsync  # noqa: E402
from gradsync.core import catalog, ring  # noqa: E402
from gradsync.core.files import save_figure  # noqa: E402
from gradsync.data.batches import ShardedBatches  # noqa: E402
from gradsync.parallel.diloco import sends_at  # noqa: E402
from gradsync.planning import costmodel as cm  # noqa: E402

RANKS = 4
COLOURS = plt.get_cmap("tab10").colors


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def _cells(
    ax: plt.Axes, grid: list[list[set[int]]], title: str, received: frozenset[tuple[int, int]] = frozenset()
) -> None:
    """Ranks as rows, chunks as columns; a cell shows which ranks' data it holds (one colour
    stripe each), empty when it holds nothing; the cells in ``received`` (rank, chunk) get a
    heavy frame."""
    for r, row in enumerate(grid):
        for c, held in enumerate(row):
            x, y = c, RANKS - 1 - r
            ax.add_patch(plt.Rectangle((x, y), 1, 1, fill=False, lw=0.8, color="0.5"))
            for k, src in enumerate(sorted(held)):
                w = 1 / len(held)
                ax.add_patch(plt.Rectangle((x + k * w, y + 0.08), w, 0.84, color=COLOURS[src], lw=0))
            if (r, c) in received:
                ax.add_patch(plt.Rectangle((x + 0.03, y + 0.03), 0.94, 0.94, fill=False, lw=2.2, color="k"))
    ax.set_xlim(0, len(grid[0]))
    ax.set_ylim(0, RANKS)
    ax.set_yticks([RANKS - 0.5 - r for r in range(RANKS)], [f"rank {r}" for r in range(RANKS)], fontsize=7)
    ax.set_xticks([c + 0.5 for c in range(len(grid[0]))], [f"c{c}" for c in range(len(grid[0]))], fontsize=7)
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    for s in ax.spines.values():
        s.set_visible(False)


def collectives(out: Path) -> Path:
    """Before and after of the four collectives of chapter 2, computed on data, not drawn."""
    data = np.arange(RANKS * RANKS, dtype=float).reshape(RANKS, RANKS) + 1  # rank r holds row r
    every = set(range(RANKS))
    own = [[{r} for _ in range(RANKS)] for r in range(RANKS)]
    total = data.sum(0)
    results = {
        "all-reduce": ([[every] * RANKS for _ in range(RANKS)], np.tile(total, (RANKS, 1))),
        "reduce-scatter": ([[every if c == r else set() for c in range(RANKS)] for r in range(RANKS)], np.diag(total)),
        "all-gather": ([[{c} for c in range(RANKS)] for _ in range(RANKS)], np.tile(np.diag(data), (RANKS, 1))),
        "broadcast": ([[{0}] * RANKS for _ in range(RANKS)], np.tile(data[0], (RANKS, 1))),
    }
    starts = {
        "all-reduce": own,
        "reduce-scatter": own,
        "all-gather": [[{r} if c == r else set() for c in range(RANKS)] for r in range(RANKS)],
        "broadcast": [[{0}] * RANKS if r == 0 else [set()] * RANKS for r in range(RANKS)],
    }
    # the sums the pictures claim, checked on the numbers
    assert np.allclose(results["all-reduce"][1][2], data.sum(0))
    assert np.allclose(results["reduce-scatter"][1].sum(1), total)
    fig, axes = plt.subplots(4, 2, figsize=(7.5, 11))
    for i, (name, (after, _)) in enumerate(results.items()):
        op = name.replace("-", "_")
        factor, hops = ring.ring_factors(op, RANKS)
        _cells(axes[i][0], starts[name], f"{name}: before")
        _cells(axes[i][1], after, f"after (each rank sends {factor:g} n over {hops:g} ring hops)")
    fig.suptitle("Collectives on 4 ranks: a colour is one rank's data; stripes are a sum", fontsize=10)
    return _save(fig, out / "collectives.png")


def ring_allreduce(out: Path) -> Path:
    """The ring all-reduce simulated round by round: in round s of reduce-scatter rank r sends
    chunk (r - s) mod N to rank r + 1, which adds it to its own; all-gather passes finished
    chunks on the same way."""
    held = [[{r} for _ in range(RANKS)] for r in range(RANKS)]  # which ranks' shares each chunk sums
    frames = [("start: each rank its own gradient", [[set(c) for c in row] for row in held], frozenset())]
    sent = [0] * RANKS
    for phase in ("reduce-scatter", "all-gather"):
        for s in range(RANKS - 1):
            moves = []
            for r in range(RANKS):
                chunk = (r - s + (1 if phase == "all-gather" else 0)) % RANKS
                moves.append((r, (r + 1) % RANKS, chunk, set(held[r][chunk])))
            for src, dst, chunk, part in moves:
                held[dst][chunk] = held[dst][chunk] | part if phase == "reduce-scatter" else part
                sent[src] += 1
            got = frozenset((dst, chunk) for _, dst, chunk, _ in moves)
            frames.append((f"{phase}, round {s + 1}", [[set(c) for c in row] for row in held], got))
    assert all(cell == set(range(RANKS)) for row in held for cell in row), "every rank ends with the whole sum"
    n_chunk = 1.0 / RANKS  # bytes in units of the whole vector
    assert all(abs(k * n_chunk - ring.wire_bytes("all_reduce", 1, RANKS)) < 1e-12 for k in sent)
    fig, axes = plt.subplots(2, RANKS, figsize=(11, 5.8))
    panels = [axes[0][0], *axes[0][1:], *axes[1][1:]]
    for ax, (title, grid, got) in zip(panels, frames, strict=True):
        _cells(ax, grid, title, got)
    axes[1][0].axis("off")
    axes[1][0].text(
        0.0,
        0.5,
        "Each round, rank r sends one chunk\nto rank r+1 (framed: just received).\n"
        "Reduce-scatter adds it in; after N-1\nrounds each rank owns one full sum.\n"
        "All-gather passes the sums on.",
        fontsize=8,
        va="center",
    )
    fig.suptitle(
        f"Ring all-reduce on 4 ranks: 2(N-1) rounds, each rank sends 2(N-1)/N = "
        f"{ring.wire_bytes('all_reduce', 1, RANKS):g} of the vector",
        fontsize=10,
    )
    return _save(fig, out / "ring-allreduce.png")


def overlap(out: Path) -> Path:
    """Chapter 4's two cases: four buckets ready every 40 ms of a 160 ms backward, each taking
    30 ms on the wire, then 90 ms (a link 3x slower)."""
    ready = [40e-3, 80e-3, 120e-3, 160e-3]
    end = ready[-1]
    fig, axes = plt.subplots(2, 1, figsize=(8, 3.8), sharex=True)
    for ax, d in zip(axes, (30e-3, 90e-3), strict=True):
        spans = cm.link_schedule(ready, [d] * len(ready))
        exposed = cm.exposed_after(ready, [d] * len(ready), end)
        ax.barh(1, end * 1e3, left=0, height=0.6, color="0.75")
        ax.text(end * 500, 1, "backward", ha="center", va="center", fontsize=8)
        for i, ((a, b), r) in enumerate(zip(spans, ready, strict=True)):
            ax.barh(0, (b - a) * 1e3, left=a * 1e3, height=0.6, color=COLOURS[i], edgecolor="white")
            ax.text((a + b) * 500, 0, f"bucket {i}", ha="center", va="center", fontsize=7, color="white")
            ax.plot([r * 1e3] * 2, [0.35, 0.65], color="k", lw=0.8)
        if exposed > 0:
            ax.axvspan(end * 1e3, (end + exposed) * 1e3, color="red", alpha=0.12)
        ax.set_yticks([0, 1], ["link", "compute"])
        ax.set_title(f"{d * 1e3:.0f} ms per bucket: exposed {exposed * 1e3:.0f} ms after backward", fontsize=9)
    axes[-1].set_xlabel("ms since backward began (ticks: bucket ready)")
    return _save(fig, out / "overlap.png")


def zero3_prefetch(out: Path, blocks: int = 6, gather_ms: float = 30.0, compute_ms: float = 40.0) -> Path:
    """ZeRO-3's forward, block by block: without prefetch each gather waits for the block before it
    to finish; with ``prefetch=1`` the next block's gather runs behind this block's compute. A
    block's full weights are held from its gather's start to its compute's end (then released)."""
    fig, axes = plt.subplots(2, 1, figsize=(8, 3.8), sharex=True)
    for ax, k in zip(axes, (0, 1), strict=True):
        gathers, computes = cm.gather_schedule([gather_ms] * blocks, [compute_ms] * blocks, prefetch=k)
        for i, ((ga, gb), (ca, cb)) in enumerate(zip(gathers, computes, strict=True)):
            ax.barh(0, gb - ga, left=ga, height=0.6, color=COLOURS[i], edgecolor="white")
            ax.text((ga + gb) / 2, 0, f"AG {i}", ha="center", va="center", fontsize=7, color="white")
            ax.barh(1, cb - ca, left=ca, height=0.6, color=COLOURS[i], alpha=0.6, edgecolor="white")
            ax.text((ca + cb) / 2, 1, f"block {i}", ha="center", va="center", fontsize=7)
        waited = computes[-1][1] - blocks * compute_ms
        held = max(sum(g[0] <= t < c[1] for g, c in zip(gathers, computes, strict=True)) for t, _ in gathers)
        ax.set_yticks([0, 1], ["link", "compute"])
        ax.set_title(
            f"prefetch={k}: compute waits {waited:.0f} ms for gathers; "
            f"at most {held} block{'s' if held > 1 else ''} of full weights held at once",
            fontsize=9,
        )
    axes[-1].set_xlabel(
        f"ms into the forward ({blocks} blocks; each {compute_ms:.0f} ms of compute, a {gather_ms:.0f} ms all-gather)"
    )
    return _save(fig, out / "zero3-prefetch.png")


def zero_memory(out: Path) -> Path:
    """Bytes per rank of a 7B GPT (32 layers of width 4096) on 8 ranks, fp32 AdamW state."""
    w = cm.gpt_workload(n_layer=32, n_head=32, n_embd=4096, vocab=32000, seq_len=4096, micro_batch=1)
    names = ["bucketed", "zero1", "zero2", "zero3"]
    parts = [("params", "weights"), ("grads", "gradients"), ("optimizer", "AdamW moments")]
    mem = {s: cm.memory(s, w, 8) for s in names}
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    bottom = np.zeros(len(names))
    for i, (key, label) in enumerate(parts):
        vals = np.array([mem[s][key] / 1e9 for s in names])
        ax.bar(names, vals, bottom=bottom, label=label, color=COLOURS[i])
        bottom += vals
    for x, v in enumerate(bottom):
        ax.text(x, v + 2, f"{v:.0f} GB", ha="center", fontsize=8)
    ax.axhline(80, color="red", ls="--", lw=1)
    ax.text(len(names) - 0.5, 82, "one 80 GB device", color="red", ha="right", fontsize=8)
    ax.set_ylabel("GB per rank (model state)")
    ax.set_title(f"{w.n_params / 1e9:.1f}B-parameter GPT, fp32 AdamW, 8 ranks (costmodel.memory)", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, out / "zero-memory.png")


def diloco_schedule(out: Path, period: int = 8, fragments: int = 4, overlap_steps: int = 2) -> Path:
    """Which fragment is sent after which inner step, and where it lands ``overlap_steps`` later."""
    steps = 3 * period
    fig, ax = plt.subplots(figsize=(8, 2.6))
    for f in range(fragments):
        for step in range(1, steps + 1):
            if sends_at(f, step, period, fragments):
                ax.barh(f, overlap_steps, left=step, height=0.5, color=COLOURS[f])
                ax.plot(step, f, "k|", ms=10)
                ax.plot(step + overlap_steps, f, "kv", ms=4)
    ax.set_yticks(range(fragments), [f"fragment {f}" for f in range(fragments)])
    ax.set_xticks(range(0, steps + overlap_steps + 1, 2))
    ax.set_xlim(0, steps + overlap_steps + 0.5)
    ax.invert_yaxis()
    ax.set_xlabel("inner step (|: fragment sent, bar: in flight while training goes on, v: averaged in)")
    ax.set_title(
        f"Streaming DiLoCo, H = {period}, {fragments} fragments, overlap {overlap_steps}: "
        f"1/{fragments} of the model every {period // fragments} steps",
        fontsize=9,
    )
    return _save(fig, out / "diloco-schedule.png")


class _Ids:
    """Examples that are only their ids: enough for ``ShardedBatches`` to say who gets which."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, ids: np.ndarray, draws: np.ndarray, train: bool) -> tuple[np.ndarray]:
        return (ids,)


def batch_split(out: Path, global_batch: int = 16, micro_batch: int = 4, step: int = 0) -> Path:
    """One step's global batch as each world size splits it: the same example ids in the same
    order, cut into per-rank blocks, each block into micro-batches (accumulated, then synced)."""
    worlds = (1, 2, 4)
    fig, axes = plt.subplots(len(worlds), 1, figsize=(8, 1.05 * len(worlds) + 0.6), sharex=True)
    reference = None
    for ax, world in zip(axes, worlds, strict=True):
        col, taken = 0, []
        for rank in range(world):
            shard = ShardedBatches(_Ids(64), global_batch, micro_batch, rank, world, seed=0)
            micro = [b[0] for b in shard.micro_batches(step)]
            start = col
            for m, ids in enumerate(micro):
                for i in ids:
                    ax.add_patch(plt.Rectangle((col, 0), 1, 1, color=COLOURS[rank], alpha=0.35 + 0.3 * (m % 2)))
                    ax.text(col + 0.5, 0.5, str(int(i)), ha="center", va="center", fontsize=8)
                    col += 1
                ax.plot([col, col], [0, 1], color="0.3", lw=0.6)
                taken.append(ids)
            ax.plot([col, col], [0, 1.4], color="k", lw=2)
            n = len(micro)
            label = f"rank {rank}: {n} micro-batch{'es' if n > 1 else ''}"
            ax.text((start + col) / 2, 1.12, label, ha="center", fontsize=7)
        ids = np.concatenate(taken)
        reference = ids if reference is None else reference
        if not np.array_equal(ids, reference):
            raise AssertionError(f"world size {world} trains other examples than world size 1")
        ax.set_xlim(0, global_batch)
        ax.set_ylim(0, 1.45)
        ax.set_yticks([])
        ax.set_xticks([])
        ax.set_ylabel(f"{world} worker{'s' if world > 1 else ''}", rotation=0, ha="right", va="center")
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    axes[-1].set_xlabel(
        "colour: the rank that trains it; shade: its micro-batch (gradients accumulate, then one sync)", fontsize=8
    )
    axes[0].set_title(
        f"One step's global batch of {global_batch} example ids, micro-batches of {micro_batch}: "
        "the same examples at every world size",
        fontsize=9,
    )
    return _save(fig, out / "batch-split.png")


def critical_batch(out: Path) -> Path:
    """McCandlish et al. (2018): to reach a given loss, S = S_min (1 + B_noise/B) steps and
    E = E_min (1 + B/B_noise) examples; at B = B_noise both are twice their floor."""
    b = np.logspace(-2, 2, 200)  # batch in units of B_noise
    steps, examples = 1 + 1 / b, 1 + b
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.loglog(b, steps, label="steps / S_min", color=COLOURS[0])
    ax.loglog(b, examples, label="examples (compute) / E_min", color=COLOURS[1])
    ax.axvline(1, color="0.4", ls="--", lw=1)
    ax.text(1.1, 40, "B = B_noise:\n2x the fewest steps,\n2x the least compute", fontsize=8)
    ax.set_xlabel("global batch / B_noise")
    ax.set_ylabel("relative to its floor")
    ax.set_title("Past the critical batch, more workers buy few steps and cost compute", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, out / "critical-batch.png")


def remedies() -> dict[str, list[str]]:
    """gradsync's own strategies and compressors by the remedy they apply, decided by what they
    do rather than by their names: sharding holds less optimizer state per rank than replication
    (cost model, 8 ranks); syncing less is the catalog's ``synchronous=False``; overlap is the rest
    of the synchronous ones whose communication the cost model hides behind backward on a fast
    link; compression is the catalog's compressors."""
    w = cm.gpt_workload(n_layer=12, n_head=12, n_embd=768, vocab=50304, seq_len=1024, micro_batch=8)
    hw, net = cm.device_preset("a100-80gb"), cm.network_preset("ib-ndr")
    replicated = cm.memory("bucketed", w, 8)["optimizer"]
    compression = [c for c in catalog.COMPRESSORS if c != "none"]
    out: dict[str, list[str]] = {"overlap": [], "sharding": [], "compression": compression, "syncing less": []}
    for name, entry in catalog.STRATEGIES.items():
        if name.startswith("torch-"):
            continue  # torch's references, not gradsync's remedies
        if not entry.synchronous:
            out["syncing less"].append(name)
        elif cm.memory(name, w, 8)["optimizer"] < replicated:
            out["sharding"].append(name)
        else:
            pred = cm.predict(name, w, 8, hw, net)
            if pred.exposed_comm_s < pred.comm_s:
                out["overlap"].append(name)
    return out


def concept_chain(out: Path) -> Path:
    """Chapter 2's chain: why the batch is split, why averaging is exact, what the averaging
    costs, and the four remedies with the strategies gradsync has for each."""
    fig, ax = plt.subplots(figsize=(9, 3.9))
    ax.set_axis_off()
    ax.set_xlim(0, 10)
    ax.set_ylim(0.9, 5.6)
    box = {"boxstyle": "round,pad=0.35", "fc": "0.93", "ec": "0.4"}
    steps = [
        "train faster:\nmore workers",
        "split the batch:\neach worker a share",
        "average the gradients:\nexact (a sum splits)",
        "a collective each step:\ncost ~ bytes / link speed",
    ]
    chain = [
        ax.text(x, 4.9, s, ha="center", va="center", fontsize=8.5, bbox=box)
        for x, s in zip(np.linspace(1.0, 8.6, len(steps)), steps, strict=True)
    ]
    arrow = {"arrowstyle": "->", "color": "0.3", "shrinkA": 3, "shrinkB": 6}
    for a, b in zip(chain, chain[1:]):
        ax.annotate("", xy=(0, 0.5), xycoords=b, xytext=(1, 0.5), textcoords=a, arrowprops=arrow)
    found = remedies()
    what = {
        "overlap": "send while backward runs",
        "sharding": "each rank keeps a slice",
        "compression": "send fewer bits",
        "syncing less": "average every H steps",
    }
    for i, (x, (remedy, names)) in enumerate(zip(np.linspace(1.2, 8.8, len(found)), found.items(), strict=True)):
        r = ax.text(
            x,
            3.0,
            f"{remedy}\n({what[remedy]})",
            ha="center",
            va="center",
            fontsize=8.5,
            bbox={**box, "fc": "white", "ec": COLOURS[i]},
        )
        ax.annotate(
            "",
            xy=(0.5, 1),
            xycoords=r,
            xytext=(0.5, 0),
            textcoords=chain[-1],
            arrowprops={**arrow, "color": COLOURS[i]},
        )
        flag = "--compress" if remedy == "compression" else "--strategy"
        ax.text(
            x, 2.45, "\n".join(f"{flag} {n}" for n in names), ha="center", va="top", fontsize=7.5, family="monospace"
        )
    ax.set_title(
        "How the concepts connect: from more workers to the four remedies, each with gradsync's strategies", fontsize=9
    )
    return _save(fig, out / "concept-chain.png")


def package_imports() -> dict[str, set[str]]:
    """Each folder (or top-level module) of the package -> the others its modules import."""
    src = Path(gradsync.__file__).parent
    deps: dict[str, set[str]] = {}
    for path in src.rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        unit = parts[0]
        if unit in ("__init__", "__main__"):
            continue
        found = deps.setdefault(unit, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name.startswith("gradsync.") and name.split(".")[1] != unit:
                    found.add(name.split(".")[1])
    return deps


def layers(out: Path) -> Path:
    """Who imports whom, folders ordered by how far above the bottom they stand: a layered
    design shows as marks only below the diagonal."""
    deps = package_imports()

    @cache
    def height(unit: str) -> int:
        return 1 + max((height(d) for d in deps.get(unit, ())), default=-1)

    order = sorted(deps, key=lambda u: (height(u), u))
    fig, ax = plt.subplots(figsize=(6.8, 6.2))
    for i, u in enumerate(order):
        for j, d in enumerate(order):
            if d in deps[u]:
                ax.add_patch(plt.Rectangle((j, i), 1, 1, color=COLOURS[0] if j < i else "red"))
    ax.set_xlim(0, len(order))
    ax.set_ylim(len(order), 0)
    ticks = [k + 0.5 for k in range(len(order))]
    ax.set_xticks(ticks, order, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, [f"{u} (layer {height(u)})" for u in order], fontsize=8)
    ax.grid(False)
    for k in range(len(order) + 1):
        ax.axhline(k, color="0.9", lw=0.5)
        ax.axvline(k, color="0.9", lw=0.5)
    ax.set_title("src/gradsync: each row's folder imports the columns marked (read from the source)", fontsize=9)
    return _save(fig, out / "layers.png")


FIGURES: dict[str, Callable[[Path], Path]] = {
    "collectives.png": collectives,
    "ring-allreduce.png": ring_allreduce,
    "overlap.png": overlap,
    "zero3-prefetch.png": zero3_prefetch,
    "zero-memory.png": zero_memory,
    "diloco-schedule.png": diloco_schedule,
    "batch-split.png": batch_split,
    "critical-batch.png": critical_batch,
    "concept-chain.png": concept_chain,
    "layers.png": layers,
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path("docs/figures"))
    ns = ap.parse_args(argv)
    ns.out_dir.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES.items():
        path = draw(ns.out_dir)
        assert path.name == name
        print(path)


if __name__ == "__main__":
    main()
