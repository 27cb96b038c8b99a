"""The cost model on cases computed by hand."""

from __future__ import annotations

import dataclasses
import math

import pytest

from gradsync.model.gpt import GPT, PRESETS, GPTShape
from gradsync.planning import costmodel as cm

NET = cm.Network.uniform("test", cm.Link(alpha_s=1e-5, beta_s_per_byte=1e-9))  # 10 us, 1 GB/s


def test_ring_all_reduce_formula_by_hand() -> None:
    # p = 4, n = 1e6 bytes: 2*3/4 * 1e6 * 1e-9 + 2*3 * 1e-5 = 1.5e-3 + 6e-5
    assert NET.time("all_reduce", 1e6, 4) == pytest.approx(1.5e-3 + 6e-5, rel=1e-12)
    # reduce-scatter and all-gather: half the bandwidth term, half the steps
    assert NET.time("reduce_scatter", 1e6, 4) == pytest.approx(0.75e-3 + 3e-5, rel=1e-12)
    assert NET.time("all_gather", 1e6, 4) == pytest.approx(0.75e-3 + 3e-5, rel=1e-12)
    assert NET.time("all_reduce", 1e6, 1) == 0.0  # nobody to talk to
    # all-reduce = reduce-scatter + all-gather, for any p
    for p in (2, 3, 8, 1024):
        assert NET.time("all_reduce", 5e7, p) == pytest.approx(
            NET.time("reduce_scatter", 5e7, p) + NET.time("all_gather", 5e7, p)
        )


def test_link_from_bandwidth() -> None:
    link = cm.Link.from_bandwidth(100.0, 20.0)  # 100 Gbit/s = 12.5 GB/s
    assert link.beta_s_per_byte == pytest.approx(1 / 12.5e9)
    assert link.alpha_s == pytest.approx(20e-6)


def test_overlap_limits() -> None:
    # A collective launched with more backward left than it lasts is hidden completely.
    assert cm.exposed_after([0.2], [0.5], compute_end=1.0) == 0.0
    assert cm.exposed_after([0.1, 0.3, 0.5], [0.1, 0.1, 0.1], compute_end=1.0) == 0.0
    # One bucket, ready only at the end of backward: fully exposed.
    assert cm.exposed_after([1.0], [0.3], compute_end=1.0) == pytest.approx(0.3)
    # The link is serial: three 0.4 s collectives ready at 0.1 finish at 1.3.
    assert cm.exposed_after([0.1, 0.1, 0.1], [0.4, 0.4, 0.4], compute_end=1.0) == pytest.approx(0.3)
    # Each collective starts when its bucket is ready and the link is free.
    spans = cm.link_schedule([0.1, 0.1, 0.9], [0.4, 0.4, 0.1])
    assert [t for span in spans for t in span] == pytest.approx([0.1, 0.5, 0.5, 0.9, 0.9, 1.0])
    # Gathers before compute: the first always waits; later ones hide behind earlier compute.
    assert cm.exposed_before([0.2, 0.1, 0.1], [0.5, 0.5, 0.5]) == pytest.approx(0.2)
    assert cm.exposed_before([0.2, 0.9, 0.1], [0.5, 0.5, 0.5]) == pytest.approx(0.2 + 0.4)
    # ZeRO-3's forward: without prefetch every gather waits for the previous unit's compute; with
    # one unit of prefetch only the first gather shows, and at most two units are held at once.
    gathers, computes = cm.gather_schedule([0.2] * 3, [0.5] * 3, prefetch=0)
    assert [t for span in gathers for t in span] == pytest.approx([0, 0.2, 0.7, 0.9, 1.4, 1.6])
    assert computes[-1][1] == pytest.approx(1.5 + 3 * 0.2)
    gathers, computes = cm.gather_schedule([0.2] * 3, [0.5] * 3, prefetch=1)
    assert [t for span in gathers for t in span] == pytest.approx([0, 0.2, 0.2, 0.4, 0.7, 0.9])
    assert computes[-1][1] == pytest.approx(1.5 + 0.2) == 1.5 + cm.exposed_before([0.2] * 3, [0.5] * 3)


def test_gpt_workload_matches_the_real_model() -> None:
    for preset in ("tiny", "small", "base"):
        d = PRESETS[preset]
        model = GPT(GPTShape.from_preset(preset, vocab_size=256, block_size=64))
        w = cm.gpt_workload(d["n_layer"], d["n_head"], d["n_embd"], 256, 64, micro_batch=4)
        assert w.n_params == model.num_params()
        assert w.flops_per_token == model.flops_per_token(64)
        assert [t.shape for t in w.tensors] == [tuple(p.shape) for p in model.parameters()]


def test_priced_buckets_are_the_buckets_strategies_plan() -> None:
    import torch.nn as nn

    from gradsync.parallel.layout import param_buckets

    d = PRESETS["small"]
    model = GPT(GPTShape.from_preset("small", vocab_size=256, block_size=64))
    w = cm.gpt_workload(d["n_layer"], d["n_head"], d["n_embd"], 256, 64, 4, bucket_mb=0.5, first_bucket_mb=0.1)
    params: list[nn.Parameter] = list(model.parameters())[::-1]
    groups = param_buckets(params, int(0.1 * 2**20), int(0.5 * 2**20))
    assert [b for b, _ in cm.buckets(w)] == [sum(4 * p.numel() for p in g) for g in groups]
    ready = [r for _, r in cm.buckets(w)]
    assert ready == sorted(ready) and ready[-1] == 1.0  # the tied embedding is final last


def _gpt2(accum: int = 1) -> cm.Workload:
    d = PRESETS["gpt2"]
    return cm.gpt_workload(d["n_layer"], d["n_head"], d["n_embd"], 50257, 1024, micro_batch=8, accum=accum)


def test_step_time_adds_up_and_strategies_rank_sensibly() -> None:
    w, hw = _gpt2(), cm.device_preset("a100-80gb")
    net = cm.network_preset("100gbe")
    preds = {
        s: cm.predict(s, w, 8, hw, net) for s in ("allreduce", "bucketed", "zero1", "zero2", "zero3", "localsgd:8")
    }
    for p in preds.values():
        assert p.step_s == pytest.approx(p.compute_s + p.exposed_comm_s + p.optimizer_s + p.compression_s)
        assert 0 <= p.exposed_comm_s <= p.comm_s + 1e-12
        assert p.tokens_per_s == pytest.approx(8 * 8 * 1024 / p.step_s)
    # compute: 6N+attention FLOPs per token at 45% of 312 TFLOP/s
    assert preds["bucketed"].compute_s == pytest.approx(w.flops_per_token * 8 * 1024 / (0.59 * 312e12))
    assert preds["bucketed"].step_s < preds["allreduce"].step_s  # overlap helps
    # local SGD: the parameters every 8th step, and the logged loss every step
    assert preds["localsgd:8"].comm_s == pytest.approx(NETWORK_AR(net, 4 * w.n_params, 8) / 8 + NETWORK_AR(net, 8, 8))
    # ZeRO memory: 16 bytes/param replicated vs 4 + 12/p for ZeRO-1's optimizer shards
    m_b, m_1 = cm.memory("bucketed", w, 8), cm.memory("zero1", w, 8)
    assert m_b["optimizer"] == 8 * w.n_params and m_1["optimizer"] == pytest.approx(w.n_params)
    # ZeRO-3 holds 1/p of everything plus the root unit (embeddings, final norm) and one block
    root, block = 4 * (50257 * 768 + 1024 * 768 + 2 * 768), 4 * (12 * 768 * 768 + 13 * 768)
    assert cm.memory("zero3", w, 8)["params"] == pytest.approx(4 * w.n_params / 8 + root + block)
    assert cm.memory("zero3:reshard=false", w, 8)["params"] == pytest.approx(4 * w.n_params / 8 + sum(cm.units(w)))
    # DiLoCo's quantised sends keep residuals: 4Ψ on the sender, Ψ/p more on the chunk's owner
    plain, int8 = cm.memory("diloco:8", w, 8), cm.memory("diloco:8,quant=int8", w, 8)
    assert int8["extra"] - plain["extra"] == pytest.approx(4 * w.n_params * (1 + 1 / 8))
    # without resharding, backward gathers nothing: one gather per block fewer a micro-step
    kept = cm.predict("zero3:reshard=false", w, 8, hw, net)
    assert kept.comm_s < preds["zero3"].comm_s and kept.exposed_comm_s <= preds["zero3"].exposed_comm_s


def NETWORK_AR(net: cm.Network, nbytes: float, p: int) -> float:
    return (
        2 * (p - 1) / p * nbytes * net.links["all_reduce"].beta_s_per_byte
        + 2 * (p - 1) * net.links["all_reduce"].alpha_s
    )


def test_one_device_scales_perfectly_and_more_devices_do_not_help_per_device() -> None:
    w, hw, net = _gpt2(), cm.device_preset("h100"), cm.network_preset("10gbe")
    eff = cm.scaling_efficiency("bucketed", w, [1, 2, 8, 64], hw, net)
    assert eff[0] == 1.0 and all(0 < e <= 1 for e in eff) and eff == sorted(eff, reverse=True)
    assert cm.predict("bucketed", w, 1, hw, net).exposed_comm_s == 0.0


def test_compression_sends_fewer_bytes() -> None:
    w, hw, net = _gpt2(), cm.device_preset("a100-40gb"), cm.network_preset("10gbe")
    base = cm.predict("bucketed", w, 8, hw, net)
    half = cm.predict("bucketed", w, 8, hw, net, "fp16")
    assert half.comm_s == pytest.approx(base.comm_s / 2, rel=0.05)
    assert half.compression_s > 0
    assert cm.predict("bucketed", w, 8, hw, net, "powersgd:rank=4").comm_s < half.comm_s / 10


def test_frozen_tensors_are_held_but_neither_sent_nor_updated() -> None:
    """Fine-tuning the top of a model: the frozen embeddings and lower half are in no bucket and
    no ZeRO-3 unit, and cost no gradient, optimizer state or optimizer time; every rank holds them."""
    w, hw, net = _gpt2(), cm.device_preset("a100-40gb"), cm.network_preset("10gbe")
    lower = ["wpe.", *(f"blocks.{i}." for i in range(6))]
    f = cm.frozen(w, lower)
    assert f.n_params == w.n_params and 0 < f.n_trainable < w.n_params
    assert sum(b for b, _ in cm.buckets(f)) == 4 * f.n_trainable
    assert sum(cm.units(f)) == 4 * f.n_trainable
    for strategy in ("bucketed", "zero3"):
        full, part = cm.memory(strategy, w, 8), cm.memory(strategy, f, 8)
        assert part["optimizer"] == pytest.approx(full["optimizer"] * f.n_trainable / w.n_params)
    assert cm.memory("bucketed", f, 8)["params"] == cm.memory("bucketed", w, 8)["params"]
    assert cm.memory("zero3", f, 8)["params"] > cm.memory("zero3", w, 8)["params"]  # frozen ones are not sharded
    assert cm.predict("bucketed", f, 8, hw, net).comm_s < cm.predict("bucketed", w, 8, hw, net).comm_s
    with pytest.raises(cm.CostModelError, match="no tensor of the model starts with adapter"):
        cm.frozen(w, ["adapter"])


def test_bad_input_is_one_clear_error() -> None:
    with pytest.raises(cm.CostModelError, match="bandwidth must be > 0"):
        cm.Link.from_bandwidth(-1, 10)
    with pytest.raises(cm.CostModelError, match="unknown device 'tpu'"):
        cm.device_preset("tpu")
    with pytest.raises(cm.CostModelError, match="unknown network"):
        cm.network_preset("carrier-pigeon")
    with pytest.raises(cm.CostModelError, match="must be >= 1"):
        cm.predict("bucketed", _gpt2(), 0, cm.device_preset("h100"), NET)
    assert math.isfinite(cm.predict("diloco:4", _gpt2(), 2, cm.device_preset("h100"), NET).step_s)


def test_overlap_penalty_charges_hidden_communication() -> None:
    import dataclasses

    w, net = _gpt2(), cm.network_preset("10gbe")
    hw = cm.device_preset("h100")
    free = cm.predict("bucketed", w, 8, hw, net)
    costly = cm.predict("bucketed", w, 8, dataclasses.replace(hw, overlap_penalty=1.0), net)
    hidden = free.comm_s - free.exposed_comm_s
    assert hidden > 0
    assert costly.exposed_comm_s == pytest.approx(free.exposed_comm_s + hidden)
    # nothing is hidden in the textbook strategy, so nothing changes
    assert cm.predict("allreduce", w, 8, dataclasses.replace(hw, overlap_penalty=1.0), net).step_s == pytest.approx(
        cm.predict("allreduce", w, 8, hw, net).step_s
    )


def test_gpus_are_known_by_the_names_torch_gives_them() -> None:
    from gradsync.core.devices import datasheet_for

    assert datasheet_for("NVIDIA H200").peak_flops == cm.device_preset("h200").peak_flops  # type: ignore[union-attr]
    assert datasheet_for("NVIDIA A100-SXM4-40GB").name == "A100 40GB"  # type: ignore[union-attr]
    assert datasheet_for("NVIDIA A100 80GB PCIe").name == "A100 80GB"  # type: ignore[union-attr]
    assert datasheet_for("Tesla V100-SXM2-16GB") is None


def test_streaming_diloco_prices_fragments_quantisation_and_overlap() -> None:
    w, hw, net = _gpt2(), cm.device_preset("h100"), cm.network_preset("1gbe")
    plain = cm.predict("diloco:32", w, 2, hw, net)
    frag = cm.predict("diloco:32,fragments=4", w, 2, hw, net)
    # the same bytes per H steps, in four pieces (three more latencies)
    assert frag.comm_s == pytest.approx(plain.comm_s, rel=1e-3) and frag.exposed_comm_s == pytest.approx(
        plain.exposed_comm_s, rel=1e-3
    )
    int8 = cm.predict("diloco:32,fragments=4,quant=int8", w, 2, hw, net)
    assert int8.comm_s == pytest.approx(plain.comm_s * (1 + 4 / 128) / 4, rel=0.01)
    assert cm.predict("diloco:32,fragments=4,quant=int4", w, 2, hw, net).comm_s == pytest.approx(
        int8.comm_s * (0.5 + 4 / 128) / (1 + 4 / 128), rel=0.01
    )
    # with overlap, a fragment's communication hides behind the next step's compute; what
    # outlasts it is exposed, and the hidden part pays the overlap penalty
    one_step = plain.compute_s + plain.optimizer_s
    per_fragment = int8.comm_s * 32 / 4
    lapped = cm.predict("diloco:32,fragments=4,overlap=1,quant=int8", w, 2, hw, net)
    outlasting = max(0.0, per_fragment - one_step) * 4 / 32
    assert 0 < outlasting < int8.exposed_comm_s
    expected = outlasting + hw.overlap_penalty * (lapped.comm_s - outlasting)
    assert lapped.exposed_comm_s == pytest.approx(expected, rel=0.05)


def test_two_level_all_reduce_sends_only_shards_across_nodes() -> None:
    """2 nodes x 2 devices on a 100 Mbit/s network with a fast link inside the node: the flat ring
    carries 2(4-1)/4 = 1.5 n over each node's link, the two-level scheme 2(2-1)/2 = 1 n."""
    slow = cm.Network.uniform("100mbit", cm.Link.from_bandwidth(0.1, 0.0))
    fast = cm.Network.uniform("fast", cm.Link.from_bandwidth(1000.0, 0.0))
    net = dataclasses.replace(slow, intra=fast, per_node=2)
    n = 100e6
    assert net.time("all_reduce", n, 4) / net.two_level(n, 4) == pytest.approx(1.5, rel=0.01)
    assert net.two_level(n, 2) == net.time("all_reduce", n, 2) == slow.two_level(n, 2)  # one node's worth
    w, hw = _gpt2(), cm.device_preset("h100")
    flat = cm.predict("bucketed", w, 4, hw, net)
    two = cm.predict("bucketed:hierarchical=true", w, 4, hw, net)
    assert flat.comm_s / two.comm_s == pytest.approx(1.5, rel=0.02)


def test_hybrid_sharding_crosses_nodes_with_shards_and_shards_state_over_the_node() -> None:
    """zero2:hybrid=true on 2 nodes x 2: the slow link carries each bucket's node shard all-reduced
    (1 n per step, as the two-level all-reduce) where flat ZeRO-2's reduce-scatter and gather carry
    2 x 0.75 n; the moments are sharded over the node's 2 devices, not over all 4."""
    slow = cm.Network.uniform("100mbit", cm.Link.from_bandwidth(0.1, 0.0))
    fast = cm.Network.uniform("fast", cm.Link.from_bandwidth(1000.0, 0.0))
    net = dataclasses.replace(slow, intra=fast, per_node=2)
    w, hw = _gpt2(), cm.device_preset("h100")
    flat, hybrid = (cm.predict(s, w, 4, hw, net) for s in ("zero2", "zero2:hybrid=true"))
    assert flat.comm_s / hybrid.comm_s == pytest.approx(1.5, rel=0.02)
    assert hybrid.memory["optimizer"] == pytest.approx(2 * flat.memory["optimizer"])
    z3, z3h = (cm.predict(s, w, 4, hw, net) for s in ("zero3", "zero3:hybrid=true"))
    assert z3h.comm_s < z3.comm_s and z3h.memory["params"] > z3.memory["params"]
    assert cm.predict("zero2:hybrid=true", w, 4, hw, slow).comm_s == cm.predict("zero2", w, 4, hw, slow).comm_s
