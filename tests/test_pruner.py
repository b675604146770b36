import json
import os

import datasets
import pytest
import torch
from testing_utils import linear_weights, make_calibration, make_tiny_model, stop_after

from hf_ssgr import OneShotPruner, PrunerCallback, PruningConfig
from hf_ssgr.pruning.kernels import sparsegpt_prune, wanda_prune
from hf_ssgr.pruning.pruner import NonFiniteActivationError

METHODS = ["magnitude", "wanda", "sparsegpt", "alps"]


def prune(model, calib, **kwargs):
    pruner = OneShotPruner(PruningConfig(**kwargs), progress_bar=False)
    pruner.prune(model, calib)
    return pruner


def decoder_linears(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity_type", ["unstructured", "2:4", "4:8"])
def test_exact_sparsity_and_untouched_modules(arch, method, sparsity_type):
    model = make_tiny_model(arch)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pruner = prune(model, make_calibration(), method=method, sparsity=0.5, sparsity_type=sparsity_type)

    linears = decoder_linears(model)
    assert len(linears) == 2 * 7
    for name, module in linears.items():
        w = module.weight.detach()
        if sparsity_type == "unstructured":
            assert int((w == 0).sum()) == w.numel() // 2, name
        else:
            n, m = map(int, sparsity_type.split(":"))
            zeros = (w.reshape(w.shape[0], -1, m) == 0).sum(-1)
            assert bool((zeros == n).all()), f"{name}: not exactly {n} zeros in every group of {m}"
        assert pruner.state.module_metrics[name]["sparsity"] == pytest.approx(0.5)
    # lm_head, embeddings, norms (everything that is not a decoder linear weight) are bit-identical.
    linear_weight_names = {f"{n}.weight" for n in linears}
    for name, p in model.named_parameters():
        if name not in linear_weight_names:
            assert torch.equal(p, before[name]), f"{name} changed"
    out = model(torch.tensor([make_calibration(1)[0]])).logits
    assert torch.isfinite(out).all()


def _layer_input(model, calib, layer_idx, attr):
    """Inputs of a norm in `layer_idx`, from the (possibly pruned) model's hidden states, as the pruner sees them."""
    xs = []
    for row in calib:
        hs = model(torch.tensor([row]), output_hidden_states=True).hidden_states
        norm = getattr(model.model.layers[layer_idx], attr)
        xs.append(norm(hs[layer_idx])[0])
    return torch.cat(xs)


@torch.no_grad()
def test_sequential_statistics_match_direct_computation():
    """Layer 0 sees the embeddings, layer 1 sees the output of the *pruned* layer 0 (error propagation)."""
    calib = make_calibration(num_rows=4, seq_len=20)
    model = make_tiny_model("llama")
    dense = {n: w for n, w in linear_weights(model).items()}
    prune(model, calib, method="sparsegpt", sparsity=0.5)

    for layer_idx in (0, 1):
        x = _layer_input(model, calib, layer_idx, "input_layernorm")
        gram = x.T.double() @ x.double()
        for proj in ("q_proj", "k_proj", "v_proj"):  # one shared Hessian for q/k/v
            name = f"model.layers.{layer_idx}.self_attn.{proj}"
            expected, _ = sparsegpt_prune(dense[name], gram.float(), x.shape[0], 0.5)
            got = model.get_submodule(name).weight
            assert torch.equal(got == 0, expected == 0), name
            torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)


@torch.no_grad()
def test_padding_never_enters_statistics():
    calib = make_calibration(num_rows=6, seq_len=24, ragged=True)
    results = []
    for batch_size in (1, 3):
        model = make_tiny_model("llama")
        pruner = prune(model, calib, method="wanda", sparsity=0.5, batch_size=batch_size)
        results.append((linear_weights(model), pruner.state.num_tokens))
    (w1, n1), (w3, n3) = results
    assert n1 == n3 == sum(len(r) for r in calib)
    for name in w1:
        assert torch.equal(w1[name] == 0, w3[name] == 0), name


@torch.no_grad()
def test_token_mask_selects_prompt_or_response_tokens():
    calib = make_calibration(num_rows=4, seq_len=20)
    ds = datasets.Dataset.from_dict({"input_ids": calib, "prompt_length": [5, 8, 0, 20]})
    counts = {}
    weights = {}
    for mask in ("all", "prompt", "response"):
        model = make_tiny_model("llama")
        pruner = prune(model, ds, method="wanda", sparsity=0.5, token_mask=mask)
        counts[mask] = pruner.state.num_tokens
        weights[mask] = linear_weights(model)["model.layers.0.mlp.gate_proj"]
    assert counts == {"all": 80, "prompt": 33, "response": 47}
    assert not torch.equal(weights["prompt"], weights["response"])

    # The prompt statistics equal Wanda's on the prompt tokens alone.
    model = make_tiny_model("llama")
    dense = linear_weights(model)["model.layers.0.mlp.gate_proj"]
    hs_rows = []
    for row, p in zip(calib, [5, 8, 0, 20]):
        hs = model(torch.tensor([row]), output_hidden_states=True).hidden_states
        layer = model.model.layers[0]
        h = (
            hs[0]
            + layer.self_attn(
                layer.input_layernorm(hs[0]),
                position_embeddings=model.model.rotary_emb(hs[0], torch.arange(len(row))[None]),
                attention_mask=None,
            )[0]
        )
        hs_rows.append(layer.post_attention_layernorm(h)[0, :p])
    x = torch.cat(hs_rows)
    expected = wanda_prune(dense, (x.float() ** 2).sum(0), x.shape[0], 0.5)
    assert torch.equal(expected == 0, weights["prompt"] == 0)


def test_token_mask_needs_prompt_length():
    model = make_tiny_model("llama")
    before = linear_weights(model)
    with pytest.raises(ValueError, match="prompt_length"):
        prune(model, make_calibration(), method="wanda", token_mask="response")
    assert all(torch.equal(before[n], w) for n, w in linear_weights(model).items())


@pytest.mark.parametrize(
    "layers, num_layers, expected",
    [
        ("all", 3, [0, 1, 2]),
        ("first_third", 3, [0]),
        ("first_last_third", 6, [0, 1, 4, 5]),
        ([1], 3, [1]),
        ("0,2", 3, [0, 2]),
    ],
)
def test_layer_scopes(layers, num_layers, expected):
    model = make_tiny_model("qwen2", num_layers=num_layers)
    pruner = prune(model, make_calibration(), method="wanda", sparsity=0.5, layers=layers)
    assert pruner.state.pruned_layers == expected
    for i in range(num_layers):
        w = model.model.layers[i].mlp.up_proj.weight
        assert (float((w == 0).float().mean()) == 0.5) == (i in expected)


def test_targets_and_exclude():
    model = make_tiny_model("llama")
    prune(model, make_calibration(), method="sparsegpt", targets=["mlp"], exclude=["down_proj"])
    for name, m in decoder_linears(model).items():
        expect = ".mlp." in name and not name.endswith("down_proj")
        assert bool((m.weight == 0).any()) == expect, name


def test_lm_head_only_when_asked():
    model = make_tiny_model("llama")
    pruner = prune(model, make_calibration(), method="sparsegpt", targets=["lm_head", "re:mlp\\..*"])
    assert float((model.lm_head.weight == 0).float().mean()) == pytest.approx(0.5)
    assert pruner.state.module_metrics["lm_head"]["error"] is not None
    assert not bool((model.model.layers[0].self_attn.q_proj.weight == 0).any())
    assert not bool((model.model.embed_tokens.weight == 0).any())

    tied = make_tiny_model("llama", tie_word_embeddings=True)
    with pytest.raises(ValueError, match="tied"):
        prune(tied, make_calibration(), method="sparsegpt", targets=["lm_head"])


@torch.no_grad()
def test_magnitude_needs_no_calibration():
    a, b = make_tiny_model("llama"), make_tiny_model("llama")
    prune(a, None, method="magnitude", sparsity_type="2:4", sparsity=0.5)
    pruner = prune(b, make_calibration(), method="magnitude", sparsity_type="2:4", sparsity=0.5)
    for (n, wa), wb in zip(linear_weights(a).items(), linear_weights(b).values()):
        assert torch.equal(wa, wb), n
    assert all(m["error"] is not None for m in pruner.state.module_metrics.values())


def test_methods_ranked_by_layer_reconstruction_error():
    """Same calibration data, fixed seed: the second-order solvers reconstruct every layer better."""
    calib = make_calibration(num_rows=8, seq_len=48)
    errors = {}
    for method in METHODS:
        model = make_tiny_model("llama")
        pruner = prune(model, calib, method=method, sparsity=0.5, layers=[0])
        errors[method] = {n: m["error"] for n, m in pruner.state.module_metrics.items()}
    for name in errors["sparsegpt"]:
        for good in ("sparsegpt", "alps"):
            for bad in ("wanda", "magnitude"):
                assert errors[good][name] < errors[bad][name], (name, good, bad, errors)


def test_deterministic():
    runs = []
    for _ in range(2):
        model = make_tiny_model("qwen3")
        prune(model, make_calibration(), method="sparsegpt", sparsity_type="2:4")
        runs.append(linear_weights(model))
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


def test_bfloat16_model_keeps_exact_zeros():
    model = make_tiny_model("qwen2", dtype=torch.bfloat16)
    prune(model, make_calibration(), method="sparsegpt", sparsity=0.5)
    w = model.model.layers[1].self_attn.o_proj.weight
    assert w.dtype == torch.bfloat16
    assert int((w == 0).sum()) == w.numel() // 2


def test_dataset_with_provenance_columns():
    calib = make_calibration(num_rows=3)
    ds = datasets.Dataset.from_dict(
        {"input_ids": calib, "prompt_length": [4, 4, 4], "problem_id": ["a", "b", "c"], "source": ["x"] * 3}
    )
    model = make_tiny_model("llama")
    pruner = prune(model, ds, method="wanda")
    assert pruner.state.num_samples == 3 and pruner.state.num_tokens == 3 * 24


def test_metrics_log_and_checkpoints_written(tmp_path):
    model = make_tiny_model("llama", num_layers=3)
    prune(model, make_calibration(), method="wanda", output_dir=str(tmp_path), save_every_n_layers=2)
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [line["layer"] for line in lines] == [0, 1, 2]
    assert all(line["sparsity"] == pytest.approx(0.5) for line in lines)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-layer-001", "checkpoint-layer-002", "metrics.jsonl"]


# ----------------------------------------------------------------------------------------------------------------
# Resume


class CrashAfter(PrunerCallback):
    def __init__(self, layer):
        self.layer = layer

    def on_save(self, config, state, control, **kwargs):
        if state.layer_index == self.layer:
            raise KeyboardInterrupt("simulated crash")


@pytest.mark.parametrize("method, how", [("sparsegpt", "crash"), ("wanda", "stop"), ("alps", "stop")])
def test_resume_equals_uninterrupted_run(tmp_path, method, how):
    calib = make_calibration(num_rows=4, seq_len=24)
    kwargs = dict(method=method, sparsity=0.5, alps_max_iter=30)
    reference = make_tiny_model("qwen2", num_layers=4)
    prune(reference, calib, **kwargs)

    first = make_tiny_model("qwen2", num_layers=4)
    cfg = PruningConfig(output_dir=str(tmp_path), restore_on_error=False, **kwargs)
    interrupter = CrashAfter(1) if how == "crash" else stop_after(1)
    pruner = OneShotPruner(cfg, callbacks=[interrupter], progress_bar=False)
    if how == "crash":
        with pytest.raises(KeyboardInterrupt):
            pruner.prune(first, calib)
    else:
        pruner.prune(first, calib)
        assert pruner.state.layer_index == 1 and not pruner.state.finished

    resumed = make_tiny_model("qwen2", num_layers=4)  # a fresh dense model, as after a restart
    pruner = OneShotPruner(PruningConfig(output_dir=str(tmp_path), **kwargs), progress_bar=False)
    pruner.prune(resumed, calib, resume_from_checkpoint=True)
    assert pruner.state.finished and pruner.state.layer_index == 3
    assert len(pruner.state.module_metrics) == 4 * 7
    ref_w = linear_weights(reference)
    for name, w in linear_weights(resumed).items():
        assert torch.equal(w, ref_w[name]), name


def test_resume_refuses_other_config_or_data(tmp_path):
    calib = make_calibration()
    model = make_tiny_model("llama")
    prune(model, calib, method="wanda", output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="config differs"):
        OneShotPruner(PruningConfig(method="sparsegpt", output_dir=str(tmp_path)), progress_bar=False).prune(
            make_tiny_model("llama"), calib, resume_from_checkpoint=True
        )
    with pytest.raises(ValueError, match="different calibration"):
        OneShotPruner(PruningConfig(method="wanda", output_dir=str(tmp_path)), progress_bar=False).prune(
            make_tiny_model("llama"), make_calibration(seed=7), resume_from_checkpoint=True
        )


# ----------------------------------------------------------------------------------------------------------------
# Callbacks


class EventRecorder(PrunerCallback):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name.startswith("on_"):

            def record(config, state, control, **kwargs):
                self.events.append(name)

            return record
        return super().__getattribute__(name)


def test_callback_event_order(tmp_path):
    recorder = EventRecorder()
    model = make_tiny_model("llama")
    pruner = OneShotPruner(
        PruningConfig(method="wanda", targets=["mlp.down_proj", "mlp.up_proj"], layers=[1], output_dir=str(tmp_path)),
        callbacks=[recorder],
        progress_bar=False,
    )
    pruner.prune(model, make_calibration())
    layer0 = ["on_layer_begin", "on_layer_end", "on_log", "on_save"]  # run (to propagate) but not pruned
    layer1 = [
        "on_layer_begin",
        "on_stats_collected",
        "on_module_pruned",
        "on_module_pruned",
        "on_layer_end",
        "on_log",
        "on_save",
    ]
    assert recorder.events == ["on_init_end", "on_prune_begin", *layer0, *layer1, "on_prune_end"]


def test_callback_handler_management():
    from hf_ssgr import ProgressCallback

    pruner = OneShotPruner(PruningConfig())
    assert "ProgressCallback" in pruner.callback_handler.callback_list
    popped = pruner.pop_callback(ProgressCallback)
    assert isinstance(popped, ProgressCallback)
    assert "ProgressCallback" not in pruner.callback_handler.callback_list


# ----------------------------------------------------------------------------------------------------------------
# Bad input: a clear error, and the model as it was


def assert_untouched(model, before):
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), f"{name} was modified"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sparsity=1.0), r"outside \[0, 1\)"),
        (dict(sparsity=-0.1), r"outside \[0, 1\)"),
        (dict(sparsity=0.6, sparsity_type="2:4"), "set sparsity=0.5"),
        (dict(sparsity=0.5, sparsity_type="2:4", block_size=130), "not a multiple of M=4"),
        (dict(method="obs"), "Unknown pruning method 'obs'.*magnitude, wanda, sparsegpt, alps"),
        (dict(sparsity_type="2-4"), "not understood"),
        (dict(layers="middle"), "not understood"),
        (dict(token_mask="answer"), "Unknown token_mask"),
        (dict(gram_dtype="float16"), "gram_dtype='float16' is not supported.*'bfloat16'"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruningConfig(**kwargs)


def test_config_from_yaml(tmp_path):
    path = tmp_path / "prune.yaml"
    path.write_text("method: wanda\nsparsity: 0.5\nsparsity_type: '4:8'\nlayers: [0, 2]\ntargets: [mlp]\n")
    cfg = PruningConfig.from_yaml(path)
    assert (cfg.method, cfg.nm, cfg.layers, cfg.targets) == ("wanda", (4, 8), [0, 2], ["mlp"])
    from transformers import HfArgumentParser

    (parsed,) = HfArgumentParser(PruningConfig).parse_yaml_file(str(path))
    assert parsed == cfg
    with pytest.raises(ValueError, match="Unknown PruningConfig field"):
        PruningConfig.from_yaml({"methd": "wanda"})


@pytest.mark.parametrize(
    "case, match",
    [
        ("empty", "calibration set is empty"),
        ("too_long", "max_position_embeddings=256: truncate"),
        ("bad_module", "matches no weight.*available names"),
        ("bad_token", "outside the model's vocabulary"),
        ("nm_divisibility", "not divisible by M=7"),
        ("no_data", "needs calibration data"),
        ("empty_row", "row 1 is empty"),
    ],
)
def test_bad_input_leaves_model_untouched(case, match):
    model = make_tiny_model("llama")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    calib = make_calibration()
    kwargs = dict(method="sparsegpt")
    if case == "empty":
        calib = []
    elif case == "too_long":
        calib = make_calibration(num_rows=2, seq_len=300)
    elif case == "bad_module":
        kwargs["targets"] = ["gate_up_proj"]
    elif case == "bad_token":
        calib[2][3] = 500
    elif case == "nm_divisibility":
        kwargs.update(sparsity=3 / 7, sparsity_type="3:7", block_size=7 * 18)
    elif case == "no_data":
        calib = None
    elif case == "empty_row":
        calib[1] = []
    with pytest.raises(ValueError, match=match):
        prune(model, calib, **kwargs)
    assert_untouched(model, before)


def test_model_without_decoder_stack():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8))
    with pytest.raises(ValueError, match="no decoder-layer stack"):
        prune(model, [[1, 2, 3]])


@torch.no_grad()
def test_non_finite_activations_restore_the_model():
    model = make_tiny_model("llama", num_layers=3)
    # Layer 2 overflows: the error is found after layers 0 and 1 were already pruned.
    model.model.layers[2].self_attn.v_proj.weight.mul_(1e38)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(NonFiniteActivationError, match="decoder layer 2.*finite.*overflows in float32"):
        prune(model, make_calibration(), method="sparsegpt")
    assert_untouched(model, before)

    model = make_tiny_model("llama")
    model.model.embed_tokens.weight[5] = float("nan")
    with pytest.raises(NonFiniteActivationError, match="embeddings"):
        prune(model, [[1, 5, 7]], method="wanda")


def test_block_triangular_statistics_give_the_same_prune(monkeypatch):
    import hf_ssgr.pruning.statistics as statistics_module

    calib = make_calibration()
    results = []
    for min_dim in (10**9, 1):  # full XᵀX, then the block-upper accumulation on every module
        monkeypatch.setattr(statistics_module, "GRAM_BLOCKS_MIN_DIM", min_dim)
        model = make_tiny_model("llama")
        pruner = prune(model, calib, method="sparsegpt")
        results.append((linear_weights(model), pruner.state.module_metrics))
    (w_full, m_full), (w_block, m_block) = results
    for name in w_full:
        torch.testing.assert_close(w_block[name], w_full[name], rtol=1e-3, atol=1e-4)
    for name in m_full:
        assert m_block[name]["error"] == pytest.approx(m_full[name]["error"], rel=1e-3)


@pytest.mark.parametrize("method, least, mean, rel", [("sparsegpt", 0.97, 0.99, 0.05), ("alps", 0.95, 0.97, 0.1)])
def test_bfloat16_gram_products_prune_like_float32(method, least, mean, rel):
    """`gram_dtype="bfloat16"` changes XᵀX by about 1e-3: nearly the same masks, the same reconstruction errors to
    within a few percent (ALPS's iterations amplify the difference), the same damping; and the statistics really are different (not silently float32). 1024
    tokens: with far fewer tokens than input channels XᵀX is near-singular and the rounding can need more damping."""
    calib = make_calibration(num_rows=16, seq_len=64)
    runs = {}
    for gram_dtype in ("float32", "bfloat16"):
        model = make_tiny_model("qwen2", dtype=torch.bfloat16)
        pruner = prune(model, calib, method=method, gram_dtype=gram_dtype, alps_max_iter=60)
        runs[gram_dtype] = (linear_weights(model), pruner.state.module_metrics)
    (w32, m32), (w16, m16) = runs["float32"], runs["bfloat16"]
    agreement = [float(((w32[n] == 0) == (w16[n] == 0)).float().mean()) for n in w32]
    assert min(agreement) > least and sum(agreement) / len(agreement) > mean, agreement
    assert any(not torch.equal(w32[n], w16[n]) for n in w32)
    for name in m32:
        assert m16[name]["error"] == pytest.approx(m32[name]["error"], rel=rel), name
        assert m16[name].get("damping") == m32[name].get("damping"), name


def test_statistics_pass_stops_after_the_last_target():
    # Dense layers: only the first batch runs down_proj in the statistics pass; every batch runs it when propagating.
    model = make_tiny_model("llama")
    calls = {}
    for i, layer in enumerate(model.model.layers):
        layer.mlp.down_proj.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls.get(i, 0) + 1))
    calib = make_calibration(5)
    prune(model, calib, method="wanda", batch_size=1)
    assert calls == {0: 1 + 5, 1: 1 + 5}

    # With down_proj excluded, o_proj is the last target: the MLP no longer runs after the first batch.
    model = make_tiny_model("llama")
    gate_calls = []
    model.model.layers[0].mlp.gate_proj.register_forward_hook(lambda *_: gate_calls.append(1))
    prune(model, calib, method="wanda", batch_size=1, targets=["self_attn.q_proj", "self_attn.k_proj",
                                                                "self_attn.v_proj", "self_attn.o_proj"])  # fmt: skip
    assert len(gate_calls) == 1 + 5


def test_statistics_of_layers_that_skip_a_target_run_every_batch_whole():
    from hf_ssgr.pruning.statistics import LayerStats, StopLayer

    a, b, c = (torch.nn.Linear(4, 4) for _ in range(3))

    def layer(x, use_b):
        y = a(x)
        return c(b(y) if use_b else y)

    stats = LayerStats({"a": a, "b": b, "c": c}, need_gram=False, need_sq=True, chunk_size=8, stop_early=True)
    x = torch.randn(3, 4)
    with stats:
        stats.begin_batch(None)
        layer(x, use_b=False)  # b not called: a mixture-of-experts-like layer
        for use_b in (True, True):
            stats.begin_batch(None)
            layer(x, use_b=use_b)  # no StopLayer
    assert stats.stats["b"]["count"] == 6 and stats.stats["a"]["count"] == 9

    stats = LayerStats({"a": a, "b": b}, need_gram=False, need_sq=True, chunk_size=8, stop_early=True)
    with stats:
        stats.begin_batch(None)
        layer(x, use_b=True)
        stats.begin_batch(None)
        with pytest.raises(StopLayer):
            layer(x, use_b=True)  # stops before c: every target was called


@pytest.mark.parametrize("chunk_size", [1, 5, 7, 64])
def test_buffered_gram_equals_the_direct_product(chunk_size):
    from hf_ssgr.pruning.statistics import LayerStats

    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 3)
    xs = [torch.randn(2, n, 6, dtype=torch.bfloat16) for n in (3, 9, 1, 4)]
    masks = [None, torch.rand(18) > 0.3, None, torch.rand(8) > 0.5]
    stats = LayerStats({"lin": lin}, need_gram=True, need_sq=False, chunk_size=chunk_size)
    for x, m in zip(xs, masks):
        stats.begin_batch(m)
        stats.observe("lin", x)
    stats.finalize()
    flat = torch.cat([x.reshape(-1, 6)[m] if m is not None else x.reshape(-1, 6) for x, m in zip(xs, masks)])
    ref = flat.double().T @ flat.double()
    st = stats.stats["lin"]
    assert st["count"] == flat.shape[0]
    torch.testing.assert_close(st["gram"].double(), ref, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("method", ["sparsegpt", "alps"])
def test_raised_damping_is_warned_counted_and_recorded(method, caplog, tmp_path):
    """With dampening=0 and fewer tokens than input features, XᵀX is singular: the solvers raise the damping, and
    that is said once per module, counted in the layer log and listed in pruning_config.json."""
    from hf_ssgr.hub.metadata import pruning_metadata

    model = make_tiny_model("llama", num_layers=1)
    calib = make_calibration(1, seq_len=12)  # 12 tokens < 64 input features
    with caplog.at_level("WARNING", logger="hf_ssgr"):
        pruner = prune(model, calib, method=method, dampening=0.0, alps_max_iter=20, output_dir=str(tmp_path))
    raised = [n for n, m in pruner.state.module_metrics.items() if m.get("damping_raised")]
    assert raised and all(pruner.state.module_metrics[n]["damping"] > 0 for n in raised)
    warnings = [r.getMessage() for r in caplog.records if "not positive definite with dampening=0" in r.getMessage()]
    assert sorted(w.split(":")[0] for w in warnings) == sorted(raised)  # one warning per module
    assert pruner.state.log_history[0]["damping_raised"] == len(raised)
    logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert logged[0]["damping_raised"] == len(raised)
    meta = pruning_metadata(model, pruner.config, pruner.state.module_metrics)
    assert meta["solver_warnings"]["damping_raised"] == sorted(raised)
    assert all(meta["modules"][n]["damping_raised"] for n in raised)
    from hf_ssgr.hub.cards import model_card

    assert f"In {len(raised)} module(s) the calibration statistics were not positive definite" in str(model_card(meta))
    # with the default damping nothing is raised, and nothing is said
    caplog.clear()
    with caplog.at_level("WARNING", logger="hf_ssgr"):
        pruner = prune(make_tiny_model("llama", num_layers=1), make_calibration(), method=method, alps_max_iter=20)
    assert not any(m.get("damping_raised") for m in pruner.state.module_metrics.values())
    assert "damping_raised" not in pruner.state.log_history[0] and not caplog.records


def test_wanda_and_magnitude_estimate_the_error_on_a_token_sample(monkeypatch):
    """Wanda never needs XᵀX: by default its error comes from a uniform sample of tokens, and no XᵀX is formed."""
    import hf_ssgr.pruning.statistics as statistics_module

    calib = make_calibration(6, seq_len=24)  # 144 tokens
    products = []
    real = statistics_module.accumulate_gram
    monkeypatch.setattr(statistics_module, "accumulate_gram", lambda *a, **k: products.append(1) or real(*a, **k))
    for method in ("wanda", "magnitude"):
        products.clear()
        all_tokens = prune(make_tiny_model("llama", num_layers=2), calib, method=method)  # 144 < 2048: every token
        assert not products
        sampled = prune(make_tiny_model("llama", num_layers=2), calib, method=method, error_sample_tokens=48)
        assert not products
        exact = prune(make_tiny_model("llama", num_layers=2), calib, method=method, error_sample_tokens=0)
        assert products  # the exact figure accumulates XᵀX
        for name, m in exact.state.module_metrics.items():
            assert m["error_tokens"] == 144 and all_tokens.state.module_metrics[name]["error_tokens"] == 144
            assert all_tokens.state.module_metrics[name]["error"] == pytest.approx(m["error"], rel=1e-4)
            estimate = sampled.state.module_metrics[name]
            assert estimate["error_tokens"] == 48
            assert estimate["error"] == pytest.approx(m["error"], rel=0.3)
            # the weights are the same whatever the error's figure
            assert sampled.state.module_metrics[name]["sparsity"] == m["sparsity"]


def test_error_sample_is_uniform_and_independent_of_the_split():
    from hf_ssgr.pruning.batches import Row, assign_error_sample

    def rows(prompt_length=0):
        return [Row(torch.arange(n), prompt_length) for n in (30, 50, 20, 100)]

    a, b = rows(), rows()
    assert assign_error_sample(a, "all", 60, seed=0) == 60
    assign_error_sample(b, "all", 60, seed=0)
    assert all(torch.equal(x.sample_positions, y.sample_positions) for x, y in zip(a, b))  # deterministic
    assert sum(r.sample_positions.numel() for r in a) == 60
    assert [r.sample_positions.numel() for r in a] != [15, 15, 15, 15]  # proportional to the rows, not per row
    c = rows(prompt_length=10)
    assign_error_sample(c, "response", 500, seed=0)  # fewer response tokens than asked: all of them
    assert [r.sample_positions.tolist() for r in c] == [list(range(10, r.input_ids.numel())) for r in c]
    d = rows()
    assign_error_sample(d, "all", 60, seed=1)
    assert any(not torch.equal(x.sample_positions, y.sample_positions) for x, y in zip(a, d))  # the seed matters


def test_alps_divergence_falls_back_and_is_recorded(monkeypatch, caplog):
    import dataclasses

    import hf_ssgr.pruning.solvers as solvers_module
    from hf_ssgr.hub.metadata import pruning_metadata
    from hf_ssgr.pruning.kernels import alps_factors

    def broken(gram, dampening=0.01):  # eigenvalues at the edge of (G + ρI)'s singularity: the ADMM blows up
        f = alps_factors(gram, dampening)
        return dataclasses.replace(f, eigvals=f.eigvals - f.eigvals[0] - 0.1 + 1e-12)

    monkeypatch.setattr(solvers_module, "alps_factors", broken)
    model = make_tiny_model("llama", num_layers=1)
    with caplog.at_level("WARNING", logger="hf_ssgr"):
        pruner = prune(model, make_calibration(), method="alps", alps_max_iter=20)
    fell_back = sorted(n for n, m in pruner.state.module_metrics.items() if m.get("fallback") == "projection")
    assert fell_back and "iterations diverged" in caplog.text
    assert pruner.state.log_history[0]["fallback"] == len(fell_back)
    for name in fell_back:
        w = dict(model.named_modules())[name].weight
        assert torch.isfinite(w).all() and int((w == 0).sum()) == w.numel() // 2
    assert (
        pruning_metadata(model, pruner.config, pruner.state.module_metrics)["solver_warnings"]["fallback"] == fell_back
    )


@pytest.mark.parametrize("method", ["sparsegpt", "wanda", "alps"])
def test_a_module_whose_inputs_are_all_zero_is_pruned_by_magnitude(method, caplog):
    from hf_ssgr.pruning.kernels import magnitude_prune

    model = make_tiny_model("llama")
    with torch.no_grad():
        model.model.layers[0].self_attn.v_proj.weight.zero_()  # so o_proj of layer 0 only ever sees zeros
    dense_o = model.model.layers[0].self_attn.o_proj.weight.detach().clone()
    with caplog.at_level("WARNING", logger="hf_ssgr"):
        pruner = prune(model, make_calibration(), method=method, alps_max_iter=20)
    m = pruner.state.module_metrics["model.layers.0.self_attn.o_proj"]
    assert m["fallback"] == "magnitude" and m["no_signal"] is True and m["sparsity"] == pytest.approx(0.5)
    assert torch.equal(model.model.layers[0].self_attn.o_proj.weight, magnitude_prune(dense_o, 0.5))
    assert "no_signal" not in pruner.state.module_metrics["model.layers.1.self_attn.o_proj"]
    assert "model.layers.0.self_attn.o_proj" in caplog.text
