"""Mixtures of experts: every expert of every family is pruned from the tokens routed to it, the rest stays as it was,
coverage is reported, unknown layouts are refused, and grouping, resume and the starved-expert rules are exact."""

import copy

import pytest
import torch
from testing_utils import MOE_FAMILIES, make_calibration, make_tiny_model, make_tiny_moe, stop_after
from torch import nn

from hf_ssgr import OneShotPruner, PruningConfig
from hf_ssgr.pruning.experts import UnknownExpertsLayoutError, is_experts_module
from hf_ssgr.pruning.modeling import find_decoder_layers
from hf_ssgr.pruning.statistics import LayerStats
from hf_ssgr.pruning.targets import resolve_targets


def calib(rows=16, seq=48):
    return make_calibration(num_rows=rows, seq_len=seq, seed=3)


def experts_modules(model):
    return {n: m for n, m in model.named_modules() if is_experts_module(m)}


def expert_matrices(module, attr):
    """Each expert's `[out, in]` matrix of projection `attr`, written independently of the library."""
    p = getattr(module, attr).detach()
    return [p[e].t() if module.is_transposed else p[e] for e in range(p.shape[0])]


def prune(model, config, data, **kwargs):
    pruner = OneShotPruner(config, progress_bar=False, **kwargs)
    pruner.prune(model, data)
    return pruner


@pytest.fixture(scope="module", params=MOE_FAMILIES)
def pruned_family(request):
    family = request.param
    dense = make_tiny_moe(family)
    model = copy.deepcopy(dense)
    pruner = prune(model, PruningConfig(method="sparsegpt", sparsity=0.5), calib())
    return family, dense, model, pruner


def test_every_expert_is_pruned_to_the_sparsity(pruned_family):
    family, dense, model, pruner = pruned_family
    modules = experts_modules(model)
    assert modules, f"{family} has no fused experts module"
    for name, module in modules.items():
        for attr in ("gate_up_proj", "down_proj"):
            for e, w in enumerate(expert_matrices(module, attr)):
                # SparseGPT's unstructured mask is exact per block of columns over all rows
                assert int((w == 0).sum()) == w.numel() // 2, f"{family} {name}.{attr}[{e}]"
                m = pruner.state.module_metrics[f"{name}.{attr}.{e}"]
                assert m["sparsity"] == 0.5 and m["tokens"] >= 0
    assert pruner.state.achieved_sparsity["targets"] == pytest.approx(0.5)


def test_everything_but_the_targets_is_bit_identical(pruned_family):
    family, dense, model, pruner = pruned_family
    layers, prefix = find_decoder_layers(model)
    targets = resolve_targets(layers, list(range(len(layers))), None, [])
    target_params = {f"{prefix}.{i}.{t.param_name}" for i, ts in targets.items() for t in ts.values()}
    before = dict(dense.named_parameters())
    routers = 0
    for name, p in model.named_parameters():
        if name in target_params:
            assert not torch.equal(p, before[name]), f"{family}: {name} was not pruned"
        else:
            assert torch.equal(p, before[name]), f"{family}: {name} changed"
            routers += name.endswith(("gate.weight", "router.weight"))
    assert routers >= 1, f"{family}: no router left dense"


def test_coverage_is_reported(pruned_family):
    family, dense, model, pruner = pruned_family
    cov = pruner.state.coverage
    layers, _ = find_decoder_layers(model)
    linear = sum(
        m.weight.numel()
        for layer in layers
        for n, m in layer.named_modules()
        if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] not in ("gate", "router", "shared_expert_gate")
    )
    fused = sum(m.gate_up_proj.numel() + m.down_proj.numel() for m in experts_modules(model).values())
    everything = sum(p.numel() for p in layers.parameters())
    assert cov["target_params"] == linear + fused
    assert cov["decoder_layer_params"] == everything
    assert cov["coverage_of_decoder_layers"] == pytest.approx((linear + fused) / everything)
    assert cov["coverage_of_decoder_layers"] > 0.9
    assert any(n.endswith(("gate.weight", "router.weight")) for n in cov["uncovered"])
    zeros = sum(int((p == 0).sum()) for p in layers.parameters())
    assert pruner.state.achieved_sparsity["decoder_layers"] == pytest.approx(zeros / everything)


def test_sparsegpt_reconstructs_the_experts_better_than_magnitude(pruned_family):
    family, dense, model, pruner = pruned_family
    magnitude_model = copy.deepcopy(dense)
    magnitude = prune(magnitude_model, PruningConfig(method="magnitude", sparsity=0.5), calib())

    def mean_expert_error(p):
        errs = [m["error"] for n, m in p.state.module_metrics.items() if "experts." in n and not m.get("starved")]
        assert errs
        return sum(errs) / len(errs)

    assert mean_expert_error(pruner) < 0.8 * mean_expert_error(magnitude)
    # and the layers as a whole: the last decoder layer's output is closer to the dense model's
    ids = torch.tensor(calib(4, 40))
    with torch.no_grad():
        ref = dense(ids, output_hidden_states=True).hidden_states[-1]

        def error(m):
            return float((m(ids, output_hidden_states=True).hidden_states[-1] - ref).norm() / ref.norm())

        assert error(model) < error(magnitude_model)


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_per_expert_statistics_equal_the_routed_tokens(family):
    model = make_tiny_moe(family, num_layers=2)
    layers, _ = find_decoder_layers(model)
    targets = resolve_targets(layers, [1], None, [])[1]  # layer 1: DeepSeek's first layer is dense
    ((name, experts),) = [(n, m) for n, m in layers[1].named_modules() if is_experts_module(m)]
    seen = []

    def record(module, args, kwargs):
        seen.append((args[0].detach().reshape(-1, args[0].shape[-1]), args[1].reshape(args[0].shape[0], -1)))

    handle = experts.register_forward_pre_hook(record, with_kwargs=True)
    stats = LayerStats(targets, need_gram=True, need_sq=True, chunk_size=64)
    ids = torch.tensor(calib(3, 40))
    with stats, torch.no_grad():
        stats.begin_batch(None)
        model(ids)
    handle.remove()
    stats.finalize()
    ((x, index),) = seen
    has_bias = experts.has_bias
    for e in range(experts.down_proj.shape[0]):
        routed = (index == e).any(-1)
        xe = x[routed].double()
        gu = expert_matrices(experts, "gate_up_proj")[e].double()
        h = xe @ gu.t() + (experts.gate_up_proj_bias[e].double() if has_bias else 0)
        inter = experts._apply_gate(h)
        for attr, inp in (("gate_up_proj", xe), ("down_proj", inter)):
            st = stats.module_stats(f"{name}.{attr}.{e}")
            assert st.count == int(routed.sum())
            torch.testing.assert_close(st.gram.double(), inp.t() @ inp, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(st.sq_norms.double(), (inp**2).sum(0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["qwen3_moe", "gpt_oss"])
def test_nm_groups_in_every_expert(family):
    model = make_tiny_moe(family)
    prune(model, PruningConfig(method="sparsegpt", sparsity=0.5, sparsity_type="2:4"), calib())
    for module in experts_modules(model).values():
        for attr in ("gate_up_proj", "down_proj"):
            for w in expert_matrices(module, attr):
                assert bool(((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) == 2).all())


def test_targets_and_exclude_name_experts():
    model = make_tiny_moe("qwen3_moe")
    pruner = prune(model, PruningConfig(method="wanda", sparsity=0.5, targets=["mlp.experts.down_proj"]), calib())
    assert set(pruner.state.module_metrics) == {f"model.layers.{i}.mlp.experts.down_proj.{e}" for i in range(2)
                                                for e in range(8)}  # fmt: skip
    model = make_tiny_moe("qwen3_moe")
    pruner = prune(model, PruningConfig(method="wanda", sparsity=0.5, exclude=["mlp.experts"]), calib())
    assert not any("experts" in n for n in pruner.state.module_metrics)
    assert float((model.model.layers[0].mlp.experts.down_proj == 0).float().mean()) == 0.0
    model = make_tiny_moe("qwen3_moe")
    pruner = prune(model, PruningConfig(method="wanda", sparsity=0.5, targets=[r"re:mlp\.experts\.\w+\.3"]), calib())
    assert set(pruner.state.module_metrics) == {f"model.layers.{i}.mlp.experts.{a}.3" for i in range(2)
                                                for a in ("gate_up_proj", "down_proj")}  # fmt: skip
    # and the router, only when named
    model = make_tiny_moe("mixtral")
    with pytest.raises(ValueError, match="matches no weight"):  # the router of transformers 5.x is no nn.Linear
        prune(model, PruningConfig(method="wanda", sparsity=0.5, targets=["mlp.gate"]), calib())


class OpaqueExperts(nn.Module):
    """Fused experts in a layout of its own (no experts interface)."""

    def __init__(self, inner):
        super().__init__()
        self.w = nn.Parameter(inner.gate_up_proj.detach().clone())
        self.num_experts = inner.num_experts

    def forward(self, hidden_states, top_k_index, top_k_weights):
        return hidden_states * 0


def test_unknown_experts_layout_is_refused():
    model = make_tiny_moe("qwen3_moe")
    model.model.layers[1].mlp.experts = OpaqueExperts(model.model.layers[1].mlp.experts)
    with pytest.raises(UnknownExpertsLayoutError, match=r"mlp\.experts \(OpaqueExperts.*does not know"):
        prune(model, PruningConfig(method="wanda", sparsity=0.5), calib())


def test_experts_that_depart_from_their_interface_are_refused():
    model = make_tiny_moe("qwen3_moe", num_layers=1)
    experts = model.model.layers[0].mlp.experts
    forward = experts.forward
    experts.forward = lambda *a, **k: 2 * forward(*a, **k)  # claims the interface, computes something else
    dense = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match="does not reproduce its output"):
        prune(model, PruningConfig(method="sparsegpt", sparsity=0.5), calib())
    for k, v in model.state_dict().items():
        assert torch.equal(v, dense[k]), k  # restored


def test_default_targets_that_leave_weights_dense_are_refused():
    model = make_tiny_model("llama", num_layers=2)
    for layer in model.model.layers:  # a layout the pruner does not see: a dense 2-D weight of a custom module
        layer.extra = nn.Module()
        layer.extra.table = nn.Parameter(torch.randn(256, 128))
    with pytest.raises(ValueError, match=r"leave \d+\.\d% of the pruned layers' parameters.*extra\.table"):
        prune(model, PruningConfig(method="magnitude", sparsity=0.5), None)
    pruner = prune(model, PruningConfig(method="magnitude", sparsity=0.5, exclude=["mlp.down_proj"]), None)
    assert pruner.state.coverage["uncovered"]["extra.table"] == 2 * 256 * 128


def test_expert_groups_under_a_memory_bound_give_the_same_result():
    data = calib()
    one = make_tiny_moe("qwen3_moe")
    prune(one, PruningConfig(method="sparsegpt", sparsity=0.5), data)
    grouped = make_tiny_moe("qwen3_moe")
    bound = 3 * 4 * (64 * 64 + 32 * 32) / 2**30  # three experts' XᵀX per group
    pruner = prune(grouped, PruningConfig(method="sparsegpt", sparsity=0.5, moe_stats_memory_gb=bound), data)
    for (n, a), b in zip(one.named_parameters(), grouped.parameters()):
        assert torch.equal(a, b), n
    assert len(pruner.state.module_metrics) == 2 * (4 + 16)  # q, k, v, o and 8 experts × 2


@pytest.mark.parametrize("moe_statistics", ["routed", "all_tokens"])
def test_batched_expert_solves_equal_one_by_one(moe_statistics):
    data = calib()
    results = {}
    for size in (1, 3, 16):
        model = make_tiny_moe("qwen3_moe")
        cfg = PruningConfig(method="sparsegpt", sparsity=0.5, moe_statistics=moe_statistics, expert_solve_batch=size)
        results[size] = (model, prune(model, cfg, data).state.module_metrics)
    one, m1 = results[1]
    for size in (3, 16):
        model, metrics = results[size]
        for (n, a), b in zip(one.named_parameters(), model.parameters()):
            assert torch.equal(a == 0, b == 0), n
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        batches = [metrics[f"model.layers.0.mlp.experts.down_proj.{e}"]["solve_batch"] for e in range(8)]
        assert batches == ([3, 3, 3, 3, 3, 3, 2, 2] if size == 3 else [8] * 8)
        assert "solve_batch" not in metrics["model.layers.0.self_attn.q_proj"]
        for n, m in metrics.items():
            assert m["tokens" if "experts" in n else "sparsity"] == m1[n]["tokens" if "experts" in n else "sparsity"]
    assert all("solve_batch" not in m for m in m1.values())
    with pytest.raises(ValueError, match="expert_solve_batch=0 must be an integer >= 1"):
        PruningConfig(expert_solve_batch=0)


def test_all_tokens_statistics():
    data = calib()
    model = make_tiny_moe("qwen3_moe")
    pruner = prune(model, PruningConfig(method="sparsegpt", sparsity=0.5, moe_statistics="all_tokens"), data)
    tokens = sum(len(r) for r in data)
    for e in range(8):
        m = pruner.state.module_metrics[f"model.layers.0.mlp.experts.gate_up_proj.{e}"]
        assert m["tokens"] == tokens and "starved" not in m
    routed = make_tiny_moe("qwen3_moe")
    prune(routed, PruningConfig(method="sparsegpt", sparsity=0.5), data)
    assert not torch.equal(model.model.layers[0].mlp.experts.down_proj, routed.model.layers[0].mlp.experts.down_proj)


def test_starved_experts():
    data = calib(2, 20)  # 40 tokens, 10 per expert on average: fewer than the 64 inputs of every expert
    results = {}
    for rule in ("all_tokens", "magnitude", "routed"):
        model = make_tiny_moe("qwen3_moe", num_layers=1)
        pruner = prune(model, PruningConfig(method="sparsegpt", sparsity=0.5, starved_experts=rule), data)
        results[rule] = (model, pruner.state.module_metrics)
    metrics = results["routed"][1]
    starved = [n for n, m in metrics.items() if m.get("starved")]
    assert len(starved) == 16  # every expert, both projections
    assert sum(metrics[f"model.layers.0.mlp.experts.down_proj.{e}"]["tokens"] for e in range(8)) == 2 * 40
    for rule, (_, m) in results.items():
        assert {m[n]["starved"] for n in starved} == {rule}
        assert sum(m[f"model.layers.0.mlp.experts.down_proj.{e}"]["tokens"] for e in range(8)) == 2 * 40
    # magnitude: the magnitude mask; all tokens: the statistics of every token (the all_tokens mode's weights)
    mag = make_tiny_moe("qwen3_moe", num_layers=1)
    prune(mag, PruningConfig(method="magnitude", sparsity=0.5, targets=["mlp.experts"]), None)
    w = results["magnitude"][0].model.layers[0].mlp.experts.down_proj
    assert torch.equal(w, mag.model.layers[0].mlp.experts.down_proj)
    every = make_tiny_moe("qwen3_moe", num_layers=1)
    prune(every, PruningConfig(method="sparsegpt", sparsity=0.5, moe_statistics="all_tokens"), data)
    torch.testing.assert_close(results["all_tokens"][0].model.layers[0].mlp.experts.down_proj,
                               every.model.layers[0].mlp.experts.down_proj)  # fmt: skip


@pytest.mark.parametrize("family", ["qwen3_moe", "gpt_oss"])
def test_resume_is_bit_identical(family, tmp_path):
    data = calib()
    full = make_tiny_moe(family, num_layers=3)
    prune(full, PruningConfig(method="sparsegpt", sparsity=0.5), data)
    cfg = PruningConfig(method="sparsegpt", sparsity=0.5, output_dir=str(tmp_path))
    stopped = make_tiny_moe(family, num_layers=3)
    prune(stopped, cfg, data, callbacks=[stop_after(1)])
    resumed = make_tiny_moe(family, num_layers=3)
    pruner = OneShotPruner(cfg, progress_bar=False)
    pruner.prune(resumed, data, resume_from_checkpoint=True)
    for (n, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n


def test_saved_moe_loads_and_records_what_was_pruned(tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    from hf_ssgr import save_pruned

    model = make_tiny_moe("gpt_oss")
    pruner = prune(model, PruningConfig(method="wanda", sparsity=0.5, sparsity_type="2:4"), calib())
    save_pruned(model, str(tmp_path / "out"), pruner=pruner)
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    for (n, a), b in zip(model.named_parameters(), loaded.parameters()):
        assert torch.equal(a, b), n
    meta = json.loads((tmp_path / "out" / "pruning_config.json").read_text())
    assert meta["coverage"] == pruner.state.coverage  # JSON keeps floats exactly
    assert meta["achieved_sparsity"] == pruner.state.achieved_sparsity
    assert meta["achieved_sparsity"]["targets"] == pytest.approx(0.5)
    assert meta["layers"][0]["sparsity"] == pytest.approx(0.5)
    assert meta["modules"]["model.layers.0.mlp.experts.down_proj.0"]["tokens"] >= 0
    card = (tmp_path / "out" / "README.md").read_text()
    share = 100 * pruner.state.coverage["coverage_of_decoder_layers"]
    assert f"{share:.1f}% of the decoder layers' parameters" in card


def test_keep_sparsity_keeps_the_experts_zeros():
    from hf_ssgr import KeepSparsityCallback

    model = make_tiny_moe("qwen3_moe")
    prune(model, PruningConfig(method="wanda", sparsity=0.5), calib())
    callback = KeepSparsityCallback()
    callback.record_masks(model)
    assert "model.layers.0.mlp.experts.gate_up_proj" in callback.masks
    experts = model.model.layers[0].mlp.experts
    zeros = experts.down_proj == 0
    with torch.no_grad():
        experts.down_proj.add_(1.0)  # an optimizer step
    callback.apply_masks()
    assert torch.equal(experts.down_proj == 0, zeros)


class LinearExpertsMLP(nn.Module):
    """Experts as separate nn.Linear modules with an nn.Linear router, top 1 (as older and remote-code MoE code)."""

    def __init__(self, d=64, f=32, n=4):
        super().__init__()
        self.gate = nn.Linear(d, n, bias=False)
        self.experts = nn.ModuleList(
            nn.ModuleDict({"w1": nn.Linear(d, f, bias=False), "w2": nn.Linear(f, d, bias=False)}) for _ in range(n)
        )
        self.calls: list[list[int]] = []  # tokens routed to each expert, per call

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        choice = self.gate(flat).argmax(-1)
        out = torch.zeros_like(flat)
        self.calls.append([int((choice == e).sum()) for e in range(len(self.experts))])
        for e, expert in enumerate(self.experts):
            tok = (choice == e).nonzero().squeeze(1)
            if tok.numel():
                out[tok] = expert["w2"](torch.relu(expert["w1"](flat[tok])))
        return out.reshape(x.shape)


def test_experts_as_linear_modules_see_their_routed_tokens():
    model = make_tiny_model("llama", num_layers=2)
    for layer in model.model.layers:
        layer.mlp = LinearExpertsMLP()
    gate = model.model.layers[0].mlp.gate.weight.detach().clone()
    data = calib()
    pruner = prune(model, PruningConfig(method="sparsegpt", sparsity=0.5), data)
    assert torch.equal(model.model.layers[0].mlp.gate.weight, gate)  # the router stays dense by default
    mlp = model.model.layers[0].mlp
    # the statistics pass called the dense layer once per row (then the pruned layer propagated, routing anew)
    assert len(mlp.calls) == 2 * len(data)
    for e in range(4):
        m = pruner.state.module_metrics[f"model.layers.0.mlp.experts.{e}.w1"]
        assert m["error_tokens"] == sum(c[e] for c in mlp.calls[: len(data)]) > 0
        assert m["sparsity"] == 0.5
    assert "model.layers.0.mlp.gate" not in pruner.state.module_metrics
    assert "mlp.gate.weight" in pruner.state.coverage["uncovered"]


def test_an_expert_that_no_token_reached_is_pruned_by_magnitude_not_zeroed(caplog):
    data = calib(1, 3)  # 3 tokens, top-2 of 8 experts: some experts receive none
    model = make_tiny_moe("qwen3_moe", num_layers=1)
    dense = copy.deepcopy(model)
    with caplog.at_level("WARNING", logger="hf_ssgr"):
        pruner = prune(model, PruningConfig(method="sparsegpt", sparsity=0.5, starved_experts="routed"), data)
    metrics = pruner.state.module_metrics
    empty = [n for n, m in metrics.items() if m.get("tokens") == 0]
    assert empty, "every expert received a token"
    mag = copy.deepcopy(dense)
    prune(mag, PruningConfig(method="magnitude", sparsity=0.5, targets=["mlp.experts"]), None)
    module, reference = model.model.layers[0].mlp.experts, mag.model.layers[0].mlp.experts
    for name in empty:
        m = metrics[name]
        assert m["sparsity"] == 0.5 and m["fallback"] == "magnitude" and m["no_signal"] is True, (name, m)
        attr, e = name.split(".")[-2], int(name.split(".")[-1])
        assert torch.equal(expert_matrices(module, attr)[e], expert_matrices(reference, attr)[e])
    reached = [n for n, m in metrics.items() if "experts." in n and m.get("tokens")]
    assert reached and all("no_signal" not in metrics[n] for n in reached)
    assert "received no signal to prune from" in caplog.text
    assert pruner.state.log_history[0]["fallback"] >= len(empty)
