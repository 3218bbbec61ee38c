"""Routing at both levels: weights, capacity and dropping, gradients, load-balancing losses."""

from __future__ import annotations

import pytest
import torch
from conftest import variant
from torch import nn

from nestor_ds.model import build_model
from nestor_ds.model.routing import SampleGate
from nestor_ds.model.sub_moe import SubMoE


def test_sample_gate_weights_sum_to_one_and_capacity_drops() -> None:
    torch.manual_seed(0)
    gate = SampleGate(nn.Linear(16, 4), experts=4, top_k=2, capacity_factor=0.5, drop=True)
    routes = gate(torch.randn(32, 16))
    torch.testing.assert_close(routes.weights.sum(dim=0), torch.ones(32))
    assert routes.capacity == 8  # ceil(0.5 * 2 * 32 / 4)
    assert routes.counts.sum() == 64
    expected_drop = (routes.counts - routes.capacity).clamp_min(0).sum()
    assert routes.dropped == expected_drop > 0
    assert routes.kept.sum() == 64 - expected_drop
    slot = routes.experts * routes.capacity + routes.position
    assert torch.unique(slot[routes.kept]).numel() == routes.kept.sum()  # no two routes share a slot


def test_first_choices_win_slots_before_second_choices() -> None:
    gate = SampleGate(nn.Linear(4, 2, bias=False), experts=2, top_k=2, capacity_factor=0.25, drop=True)
    with torch.no_grad():
        gate.scorer.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    pooled = torch.tensor([[2.0, 0, 0, 0]] * 2 + [[0, 2.0, 0, 0]] * 2)
    routes = gate(pooled)  # capacity 1 per expert
    kept = routes.kept
    assert kept[0].tolist() == [True, False, True, False]  # first choice of the first sample per expert
    assert not kept[1].any()


def test_no_drop_mode_never_drops() -> None:
    torch.manual_seed(0)
    gate = SampleGate(nn.Linear(16, 4), experts=4, top_k=2, capacity_factor=0.01, drop=False)
    routes = gate(torch.randn(64, 16) * 5)
    assert routes.dropped == 0 and routes.kept is None and routes.capacity is None


def test_model_counts_dropped_samples(tiny_model_cfg) -> None:
    x = torch.randn(16, 32, 32, 4, 4)
    low = build_model(variant(tiny_model_cfg, moe__capacity_factor=0.25, moe__drop_tokens=True))(x)
    assert (low.dropped > 0).all()
    nodrop = build_model(variant(tiny_model_cfg, moe__capacity_factor=0.25))(x)  # dropless is the default
    assert (nodrop.dropped == 0).all()
    evaluating = build_model(variant(tiny_model_cfg, moe__capacity_factor=0.25, moe__drop_tokens=True)).eval()
    with torch.no_grad():
        assert (evaluating(x).dropped == 0).all()  # evaluation never drops
    assert (nodrop.image_load.sum(dim=1) == 16 * 2).all()


def test_sub_moe_matches_a_per_token_reference() -> None:
    torch.manual_seed(0)
    moe = SubMoE(8, 16, experts=4, top_k=2, shared=1)
    x = torch.randn(3, 5, 8)
    out, aux, counts = moe(x)
    tokens = x.reshape(-1, 8)
    probs = torch.softmax(moe.router(tokens), dim=-1)
    top_p, top_i = probs.topk(2, dim=-1)
    w = top_p / top_p.sum(-1, keepdim=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(15))

    def expert(e: int, t: torch.Tensor) -> torch.Tensor:
        gate, up = (t @ moe.w_gate_up[e]).chunk(2)
        return (torch.nn.functional.silu(gate) * up) @ moe.w_down[e]

    ref = torch.stack(
        [
            sum(w[t, j] * expert(int(top_i[t, j]), tokens[t]) for j in range(2)) + moe.shared[0](tokens[t])
            for t in range(15)
        ]
    )
    torch.testing.assert_close(out.reshape(-1, 8), ref, rtol=1e-5, atol=1e-6)
    assert counts.sum() == 30 and counts.tolist() == torch.bincount(top_i.reshape(-1), minlength=4).tolist()
    f, p = counts.float() / 30, probs.mean(0)
    torch.testing.assert_close(aux, 4 * (f * p).sum())


@pytest.mark.parametrize("path", ["grouped", "dense"])
def test_sub_moe_paths_equal_the_python_loop(path: str, monkeypatch) -> None:
    """Grouped GEMM and the batched dense path give the loop's outputs and gradients."""
    from nestor_ds.model import grouped, sub_moe

    if path == "dense":
        monkeypatch.setattr(grouped, "grouped_mm_applies", lambda *a: False)
    torch.manual_seed(1)
    moe = SubMoE(16, 32, experts=6, top_k=2, shared=1)
    x = torch.randn(4, 64, 16, requires_grad=True)
    assert grouped.grouped_mm_applies(x, moe.w_gate_up) == (path == "grouped")
    grad_out = torch.randn(4, 64, 16)
    out = moe(x)[0]
    grads = torch.autograd.grad((out * grad_out).sum(), [x, moe.w_gate_up, moe.w_down, moe.router.weight])
    ref = sub_moe.loop_sub_moe(moe, x)[0]
    ref_grads = torch.autograd.grad((ref * grad_out).sum(), [x, moe.w_gate_up, moe.w_down, moe.router.weight])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_every_routed_expert_gets_gradient_and_aux_reaches_routers(tiny_model_cfg) -> None:
    cfg = variant(tiny_model_cfg, moe__drop_tokens=False)
    model = build_model(cfg)
    out = model(torch.randn(16, 32, 32, 4, 4))
    out.pred.square().mean().backward(retain_graph=True)
    for li, block in enumerate(model.blocks):
        for e, expert in enumerate(block.moe.deepspeed_moe.experts.deepspeed_experts):
            routed = out.image_load[li, e] > 0
            has_grad = all(p.grad is not None and p.grad.abs().sum() > 0 for p in expert.attn.parameters())
            assert has_grad == bool(routed), (li, e)
            for s in range(expert.ffn.experts):
                if routed and out.token_load[li, e, s] > 0:
                    assert expert.ffn.w_gate_up.grad[s].abs().sum() > 0
    model.zero_grad()
    (out.aux_image + out.aux_token).backward()
    for li, block in enumerate(model.blocks):
        assert block.moe.deepspeed_moe.gate.scorer.weight.grad.abs().sum() > 0
        for e, expert in enumerate(block.moe.deepspeed_moe.experts.deepspeed_experts):
            # an expert that got no sample runs on padding only, which its aux loss leaves out
            grad = expert.ffn.router.weight.grad
            assert (grad is not None and grad.abs().sum() > 0) == bool(out.image_load[li, e] > 0), (li, e)


def test_temperature_schedules(tiny_model_cfg) -> None:
    linear = build_model(
        variant(
            tiny_model_cfg,
            variant="moepot",
            moe__temperature_schedule="linear",
            moe__temperature_start=2.0,
            moe__temperature_end=0.5,
            moe__anneal_steps=100,
        )
    )
    assert [linear.set_step(n) for n in (0, 50, 100, 1000)] == [2.0, 1.25, 0.5, 0.5]
    assert float(linear.moe_layers[-1].deepspeed_moe.gate.temperature) == 0.5  # every layer follows
    moepot = build_model(
        variant(
            tiny_model_cfg,
            variant="moepot",
            moe__temperature_schedule="exponential",
            moe__temperature_start=2.0,
            moe__temperature_end=0.5,
        )
    )
    assert moepot.set_step(0) == 2.0 and moepot.set_step(1) == 2.0 * 0.99  # MoE-POT: x0.99 per forward
    assert moepot.set_step(137) == pytest.approx(2.0 * 0.99**137) and moepot.set_step(138) == 0.5  # floor 0.5


def test_moepot_gate_scales_logits_by_temperature(tiny_model_cfg) -> None:
    """The routing weights are MoE-POT's softmax(top-k logits / T) for the current temperature."""
    model = build_model(variant(tiny_model_cfg, variant="moepot", moe__experts=8, moe__top_k=4)).eval()
    gate = model.moe_layers[0].deepspeed_moe.gate
    pooled = torch.randn(5, gate.scorer.gate[0].in_channels)
    with torch.no_grad():
        logits = gate.scorer(pooled)
        for temp in (2.0, 0.5):
            model.set_temperature(temp)
            routes = gate(pooled)
            top_v, top_i = logits.topk(4, dim=-1)
            torch.testing.assert_close(routes.weights.t(), torch.softmax(top_v / temp, dim=-1))
            assert torch.equal(routes.experts.t(), top_i)


def test_reference_loss_reduction_sums_over_blocks_and_active_experts(tiny_model_cfg) -> None:
    """``train.loss_reduction: reference`` weighs the aux terms as the NESTOR trainer: image-level summed
    over blocks, token-level summed over blocks and over every expert that received samples."""
    model = build_model(tiny_model_cfg)
    inputs = []
    for layer in model.moe_layers:  # the blocks call start/finish (the exchange overlaps the AFNO path)
        dispatcher = layer.deepspeed_moe
        dispatcher.start = lambda x, start=dispatcher.start: inputs.append(x) or start(x)
    out = model(torch.randn(8, 32, 32, 4, 4))
    image, token = 0.0, 0.0
    for layer, x in zip(model.moe_layers, inputs):
        gate, experts = layer.deepspeed_moe.gate, layer.deepspeed_moe.experts.deepspeed_experts
        probs = torch.softmax(gate.scorer(x.mean(dim=1)), dim=-1)
        chosen = probs.topk(gate.top_k, dim=-1).indices
        f = torch.bincount(chosen.reshape(-1), minlength=len(experts)).float() / chosen.numel()
        image += len(experts) * (f * probs.mean(dim=0)).sum()
        for e, expert in enumerate(experts):
            samples = (chosen == e).any(dim=-1)
            if samples.any():
                token += expert(x[samples])[1]
    ref_image, ref_token = out.aux_losses("reference")
    torch.testing.assert_close(ref_image, image.detach())
    torch.testing.assert_close(ref_token, token.detach())
    mean_image, mean_token = out.aux_losses("mean")
    torch.testing.assert_close(mean_image, image.detach() / len(inputs))
    torch.testing.assert_close(mean_token, token.detach() / len(inputs) / tiny_model_cfg.moe.experts)


def test_moepot_training_on_one_sample_names_the_setting(tiny_model_cfg) -> None:
    model = build_model(variant(tiny_model_cfg, variant="moepot"))
    with pytest.raises(ValueError, match="at least 2 samples per rank.*micro_batch_per_rank"):
        model(torch.randn(1, 32, 32, 4, 4))
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 32, 32, 4, 4)).pred.shape == (1, 32, 32, 1, 4)  # eval: running stats


def test_sub_moe_leaves_padding_rows_out_of_its_statistics() -> None:
    """Buffer padding rows run through the experts but count neither in the loads nor the aux loss,
    and the real rows' outputs are those of a run without the padding."""
    torch.manual_seed(3)
    moe = SubMoE(16, 16, experts=4, top_k=2, shared=1)
    real = torch.randn(3, 8, 16)
    padded = torch.cat([real, torch.zeros(2, 8, 16)])
    valid = torch.tensor([True, True, True, False, False])
    out, aux, counts = moe(padded, valid)
    ref_out, ref_aux, ref_counts = moe(real)
    torch.testing.assert_close(out[:3], ref_out)
    torch.testing.assert_close(aux, ref_aux)
    assert torch.equal(counts, ref_counts) and counts.sum() == 3 * 8 * 2
    none_real = moe(padded, torch.zeros(5, dtype=torch.bool))
    assert none_real[1] == 0 and none_real[2].sum() == 0 and torch.isfinite(none_real[0]).all()
