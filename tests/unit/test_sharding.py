"""ShardedBatches: disjoint per-rank shards whose union is the global batch, identical global
batches for world sizes 1, 2 and 4, exact resume, and epoch-wise coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradsync.core.errors import DataError
from gradsync.data import ShardedBatches, TokenSequences
from gradsync.data.stream import TokenStream

TOKENS = np.arange(10_000, dtype=np.uint16) % 251
T, G, SEED = 16, 16, 7


def _batches(rank: int, world: int, micro: int = 2) -> ShardedBatches:
    return ShardedBatches(TokenSequences(TOKENS, T), G, micro, rank, world, SEED)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_shards_are_disjoint_and_cover_the_global_batch(world: int) -> None:
    for step in (0, 1, 57):
        shards = [set(_batches(r, world).local_chunks(step).tolist()) for r in range(world)]
        union = set().union(*shards)
        assert sum(len(s) for s in shards) == len(union) == G
        assert union == set(_batches(0, 1).global_chunks(step).tolist())


def test_global_batch_is_independent_of_world_size() -> None:
    for step in range(5):
        seqs = {}
        for world in (1, 2, 4):
            rows = []
            for r in range(world):
                rows += [x for x, _ in _batches(r, world, micro=2).micro_batches(step)]
            seqs[world] = torch.cat(rows)
        assert torch.equal(seqs[1], seqs[2]) and torch.equal(seqs[1], seqs[4])


def test_targets_are_inputs_shifted_by_one() -> None:
    x, y = _batches(0, 1, micro=4).micro_batches(3)[0]
    assert x.shape == y.shape == (4, T)
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_micro_batches_split_the_rank_shard_for_accumulation() -> None:
    b = _batches(1, 2, micro=2)
    assert b.accum_steps == 4 and len(b.micro_batches(0)) == 4


def test_batches_differ_between_steps_and_seeds() -> None:
    a = _batches(0, 1).global_chunks(0)
    assert not np.array_equal(a, _batches(0, 1).global_chunks(1))
    other = ShardedBatches(TokenSequences(TOKENS, T), G, 2, 0, 1, SEED + 1).global_chunks(0)
    assert not np.array_equal(a, other)


def test_each_epoch_visits_every_sequence_once() -> None:
    b = _batches(0, 1)
    steps = b.n_chunks // G
    seen = np.concatenate([b.global_chunks(s) for s in range(steps)])
    assert len(np.unique(seen)) == len(seen) == steps * G


def test_resume_continues_the_same_stream() -> None:
    a = _batches(1, 2)
    for _ in range(3):
        next(a)
    b = _batches(1, 2)
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        for (x1, y1), (x2, y2) in zip(next(a), next(b)):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_resume_refuses_other_data() -> None:
    state = _batches(0, 1).state_dict()
    other = ShardedBatches(TokenSequences(TOKENS[:5000], T), G, 2, 0, 1, SEED)
    with pytest.raises(DataError, match="n_chunks"):
        other.load_state_dict(state)


def test_indivisible_batch_and_tiny_corpus_are_errors() -> None:
    with pytest.raises(DataError, match="not divisible"):
        ShardedBatches(TokenSequences(TOKENS, T), 10, 4, 0, 2, SEED)
    with pytest.raises(DataError, match="fewer than one global batch"):
        ShardedBatches(TokenSequences(TOKENS[:100], T), G, 2, 0, 1, SEED)


def test_a_stream_of_several_parts_is_their_concatenation() -> None:
    """Sequences cross part (shard) ends, so where a corpus is cut into shards changes nothing."""
    parts = [
        np.arange(0, 50, dtype=np.uint16),
        np.arange(100, 117, dtype=np.uint16),
        np.arange(200, 240, dtype=np.uint16),
    ]
    stream = TokenStream(parts)
    T = 8
    assert stream.n_sequences(T) == (107 - 1) // T and len(stream) == 107
    rows = stream.sequences(np.arange(stream.n_sequences(T)), T)
    whole = np.concatenate(parts)
    expected = [whole[i * T : i * T + T + 1] for i in range((len(whole) - 1) // T)]
    assert np.array_equal(rows, np.stack(expected).astype(np.int64))


def test_sharding_over_a_multi_part_stream_matches_one_array_per_sequence() -> None:
    parts = [TOKENS[:3000], TOKENS[3000:7001], TOKENS[7001:]]
    b = ShardedBatches(TokenSequences(TokenStream(parts), T), G, 2, 0, 1, SEED)
    for x, y in b.micro_batches(4):
        for row_x, row_y in zip(x, y):
            assert torch.equal(row_x[1:], row_y[:-1])
            assert _contains(TOKENS[: len(TOKENS)], row_x.numpy())


def _contains(part: np.ndarray, row: np.ndarray) -> bool:
    starts = np.flatnonzero(part[: len(part) - len(row) + 1] == row[0])
    return any(np.array_equal(part[s : s + len(row)], row) for s in starts)


def test_a_live_jobs_changing_membership_draws_each_example_once_per_epoch() -> None:
    """A live job (--fault-tolerance live): replicas leave and return between steps, a step can be
    taken again after one died in it; each committed step still trains its whole global batch,
    shared by whoever took it, so an epoch draws every sequence exactly once."""
    per_epoch = len(TokenSequences(TOKENS, T)) // G  # whole steps in an epoch
    # the replicas (2 workers each) that take each attempt of each step; a retried step takes the
    # same data
    members = {s: [3, 2, 2, 3] if s == 5 else [3 if s % 4 else 2] for s in range(per_epoch)}
    drawn: list[int] = []
    for step, attempts in members.items():
        for replicas in attempts:
            world = 2 * replicas
            shards = []
            for r in range(world):
                b = _batches(0, 1, micro=2)
                b.reshard(r, world)
                shards.append(b.local_chunks(step))
            assert sorted(np.concatenate(shards).tolist()) == sorted(_batches(0, 1).global_chunks(step).tolist())
        drawn += np.concatenate(shards).tolist()  # only the committed (last) attempt counts
    assert len(drawn) == len(set(drawn)) == per_epoch * G


@pytest.mark.parametrize("world", [3, 5, 6, 16])
def test_uneven_shares_weigh_their_losses_to_the_global_mean(world: int) -> None:
    """G = 16 over 3, 5, 6 or 16 workers: blocks differ by one example, micro-batches of 2 too;
    each micro-batch's mean loss times its weight, averaged over the workers as the all-reduce
    does, is the mean over the whole global batch (exactly the gradient of one big batch)."""
    per_example = torch.arange(G, dtype=torch.float64) ** 2  # any per-example loss
    total = 0.0
    for r in range(world):
        b = _batches(0, 1, micro=2)
        b.reshard(r, world)
        block = per_example[b._local_slice()]
        micro = [block[i : i + 2] for i in range(0, len(block), 2)]
        weights = b.loss_weights() or [1 / len(micro)] * len(micro)
        assert len(weights) == len(micro) == len(b.micro_batches(0))
        total += sum(w * m.mean().item() for w, m in zip(weights, micro))
    assert total / world == pytest.approx(per_example.mean().item(), rel=1e-12)


def test_more_workers_than_a_global_batch_is_an_error() -> None:
    b = _batches(0, 1)
    with pytest.raises(DataError, match="cannot be shared by 17 workers"):
        b.reshard(0, G + 1)
