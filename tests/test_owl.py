"""OWL (outlier-weighted layer-wise sparsity) and explicit per-layer sparsities."""

import json

import numpy as np
import pytest
import torch
from testing_utils import linear_weights, make_calibration, make_tiny_model, make_tiny_moe, stop_after

from hf_ssgr import OneShotPruner, PruningConfig
from hf_ssgr.pruning.owl import outlier_ratio, owl_layer_sparsities, wanda_outlier_ratio

NUM_LAYERS = 4


def layer_weights(model) -> dict:
    """The decoder layers' linear weights (lm_head left out)."""
    return {n: w for n, w in linear_weights(model).items() if ".layers." in n}


def prune(model, calib, **kwargs):
    pruner = OneShotPruner(PruningConfig(**kwargs), progress_bar=False)
    pruner.prune(model, calib)
    return pruner


def reference_owl(model, calib, sparsity, m, lam):
    """The OWL allocation computed directly: hooks on the dense model's linears record their inputs in one full
    forward, the Wanda metric of each layer is concatenated, and the reference formula is applied with numpy."""
    sq, hooks = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".layers." in name:

            def hook(module, inputs, name=name):
                x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
                sq[name] = sq.get(name, 0) + (x**2).sum(0)

            hooks.append(mod.register_forward_pre_hook(hook))
    with torch.no_grad():
        for row in calib:
            model(torch.tensor([row]))
    for h in hooks:
        h.remove()
    ratios = []
    for i in range(NUM_LAYERS):
        parts = [
            (mod.weight.detach().double().abs() * sq[name].sqrt()[None, :]).flatten()
            for name, mod in model.named_modules()
            if name in sq and f".layers.{i}." in name
        ]
        metric = torch.cat(parts).numpy()
        ratios.append(100.0 * (metric > metric.mean() * m).sum() / metric.size)  # a percentage, as the reference
    d = np.array(ratios)
    d = (d - d.min()) * (1 / (d.max() - d.min()) * lam * 2)
    return [1 - (x - d.mean() + (1 - sparsity)) for x in d], ratios


@pytest.mark.parametrize("m", [5.0, 3.0])
def test_owl_allocation_matches_the_formula(m):
    calib = make_calibration(num_rows=6, seq_len=32)
    model = make_tiny_model("llama", num_layers=NUM_LAYERS)
    expected, ratios = reference_owl(model, calib, 0.6, m, 0.08)
    assert max(ratios) > min(ratios)  # the layers differ, so the allocation is not uniform
    pruner = prune(model, calib, method="wanda", sparsity=0.6, sparsity_profile="owl", owl_m=m)
    got = [pruner.state.layer_sparsities[str(i)] for i in range(NUM_LAYERS)]
    np.testing.assert_allclose(got, expected, atol=1e-9)
    np.testing.assert_allclose([pruner.state.outlier_ratios[str(i)] for i in range(NUM_LAYERS)],
                               np.array(ratios) / 100, atol=1e-12)  # fmt: skip
    assert abs(np.mean(got) - 0.6) < 1e-12
    assert max(got) - min(got) == pytest.approx(0.16)  # min-max scaled to a span of 2 * lambda


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "alps"])
def test_owl_layers_reach_their_allocation(method):
    calib = make_calibration(num_rows=4, seq_len=24)
    model = make_tiny_model("qwen2", num_layers=NUM_LAYERS)
    pruner = prune(model, calib, method=method, sparsity=0.7, sparsity_profile="owl", owl_m=3.0, alps_max_iter=30)
    alloc = pruner.state.layer_sparsities
    assert len(alloc) == NUM_LAYERS and abs(np.mean(list(alloc.values())) - 0.7) < 1e-12
    assert len(set(alloc.values())) > 1
    for name, w in layer_weights(model).items():
        i = name.split(".layers.")[1].split(".")[0]
        zeros = float((w == 0).float().mean())
        assert abs(zeros - alloc[i]) <= 1.0 / w.shape[1], (name, zeros, alloc[i])  # rounding to whole weights per row
        assert pruner.state.module_metrics[name]["target_sparsity"] == alloc[i]


def test_owl_is_uniform_when_every_layer_has_the_same_ratio(caplog):
    with caplog.at_level("WARNING", logger="hf_ssgr"):
        assert owl_layer_sparsities([0.01, 0.01, 0.01], 0.6, 0.08) == [0.6, 0.6, 0.6]
    assert "same outlier ratio" in caplog.text


def test_owl_allocation_outside_range_is_refused():
    with pytest.raises(ValueError, match="lower owl_lambda"):
        owl_layer_sparsities([0.0, 1.0], 0.05, 0.08)


def test_outlier_ratio_helpers_agree():
    g = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(8, 16, generator=g), torch.randn(4, 16, generator=g)
    s1, s2 = torch.rand(16, generator=g) * 10, torch.rand(16, generator=g)
    joint = torch.cat([(w1.abs() * s1.sqrt()).flatten(), (w2.abs() * s2.sqrt()).flatten()])
    assert wanda_outlier_ratio([w1, w2], [s1, s2], 2.0) == pytest.approx(outlier_ratio(joint, 2.0))
    assert 0 < outlier_ratio(joint, 2.0) < 1


def test_explicit_layer_sparsities():
    calib = make_calibration(num_rows=4, seq_len=24)
    model = make_tiny_model("llama", num_layers=NUM_LAYERS)
    values = [0.3, 0.5, 0.6, 0.8]
    pruner = prune(model, calib, method="sparsegpt", sparsity=0.55, layer_sparsities=values)
    assert pruner.state.layer_sparsities == {str(i): v for i, v in enumerate(values)}
    for name, w in layer_weights(model).items():
        i = int(name.split(".layers.")[1].split(".")[0])
        assert abs(float((w == 0).float().mean()) - values[i]) <= 1.0 / w.shape[1], name
    assert pruner.config.short_name == "sparsegpt-55-layerwise"


def test_explicit_layer_sparsities_with_a_layer_scope_and_magnitude_without_data():
    model = make_tiny_model("llama", num_layers=NUM_LAYERS)
    dense = layer_weights(model)
    prune(model, None, method="magnitude", sparsity=0.5, layers="1,3", layer_sparsities=[0.2, 0.8])
    for name, w in layer_weights(model).items():
        zeros = float((w == 0).float().mean())
        if ".layers.1." in name:
            assert abs(zeros - 0.2) <= 1.0 / w.shape[1]
        elif ".layers.3." in name:
            assert abs(zeros - 0.8) <= 1.0 / w.shape[1]
        else:
            assert torch.equal(w, dense[name])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sparsity_profile="owl", sparsity=0.5, sparsity_type="2:4"), "cannot vary by layer"),
        (dict(layer_sparsities=[0.5, 0.5], sparsity=0.5, sparsity_type="2:4"), "cannot vary by layer"),
        (dict(sparsity_profile="layerwise"), "sparsity_profile='layerwise' is not known"),
        (dict(sparsity_profile="owl", owl_m=0), "owl_m > 0"),
        (dict(sparsity_profile="owl", owl_lambda=-0.1), "owl_lambda >= 0"),
        (dict(sparsity_profile="owl", layer_sparsities=[0.5]), "pass one"),
        (dict(layer_sparsities=[0.5, 1.0], sparsity=0.75), r"in \[0, 1\)"),
        (dict(layer_sparsities=[], sparsity=0.5), "non-empty"),
        (dict(layer_sparsities=["a"]), "list of numbers"),
        (dict(layer_sparsities=[0.4, 0.8], sparsity=0.5), "set sparsity=0.6"),
    ],
)
def test_bad_layerwise_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruningConfig(**kwargs)


def test_layer_sparsities_length_is_checked_at_prune_time():
    model = make_tiny_model("llama", num_layers=NUM_LAYERS)
    dense = linear_weights(model)
    with pytest.raises(ValueError, match="3 values but 4 decoder layers are pruned"):
        prune(model, make_calibration(), method="wanda", sparsity=0.5, layer_sparsities=[0.4, 0.5, 0.6])
    assert all(torch.equal(w, dense[n]) for n, w in linear_weights(model).items())


def test_owl_needs_calibration_data():
    with pytest.raises(ValueError, match="sparsity_profile='owl' needs calibration data"):
        prune(make_tiny_model("llama"), None, method="magnitude", sparsity_profile="owl")


def test_owl_resume_uses_the_saved_allocation(tmp_path):
    calib = make_calibration(num_rows=4, seq_len=24)
    kwargs = dict(method="wanda", sparsity=0.6, sparsity_profile="owl", owl_m=3.0)
    reference = make_tiny_model("qwen2", num_layers=NUM_LAYERS)
    ref_pruner = prune(reference, calib, **kwargs)

    first = OneShotPruner(PruningConfig(output_dir=str(tmp_path), **kwargs), callbacks=[stop_after(1)],
                          progress_bar=False)  # fmt: skip
    first.prune(make_tiny_model("qwen2", num_layers=NUM_LAYERS), calib)
    saved = json.loads((tmp_path / "checkpoint-layer-001" / "pruner_state.json").read_text())
    assert saved["layer_sparsities"] == ref_pruner.state.layer_sparsities

    resumed = make_tiny_model("qwen2", num_layers=NUM_LAYERS)
    pruner = OneShotPruner(PruningConfig(output_dir=str(tmp_path), **kwargs), progress_bar=False)
    pruner.prune(resumed, calib, resume_from_checkpoint=True)
    assert pruner.state.finished and pruner.state.layer_sparsities == ref_pruner.state.layer_sparsities
    ref_w = linear_weights(reference)
    for name, w in linear_weights(resumed).items():
        assert torch.equal(w, ref_w[name]), name


def test_owl_with_experts():
    model = make_tiny_moe("qwen3_moe", num_layers=2)
    calib = make_calibration(num_rows=4, seq_len=24)
    pruner = prune(model, calib, method="wanda", sparsity=0.6, sparsity_profile="owl", owl_m=3.0)
    alloc = pruner.state.layer_sparsities
    assert set(alloc) == {"0", "1"} and abs(np.mean(list(alloc.values())) - 0.6) < 1e-12
    experts = [n for n, m in pruner.state.module_metrics.items() if ".experts." in n]
    assert experts
    for name in experts:
        m = pruner.state.module_metrics[name]
        i = name.split(".layers.")[1].split(".")[0]
        assert m["target_sparsity"] == alloc[i] and abs(m["sparsity"] - alloc[i]) < 0.05


def test_owl_is_refused_by_the_streamed_path(tmp_path):
    pruner = OneShotPruner(PruningConfig(method="wanda", sparsity_profile="owl"), progress_bar=False)
    with pytest.raises(ValueError, match="prune_pretrained loads each layer once"):
        pruner.prune_pretrained(str(tmp_path), make_calibration(), str(tmp_path / "out"))


def test_metadata_records_the_allocation(tmp_path):
    from hf_ssgr.hub.metadata import pruning_metadata, sparsity_description

    calib = make_calibration(num_rows=4, seq_len=24)
    model = make_tiny_model("llama", num_layers=NUM_LAYERS)
    pruner = prune(model, calib, method="wanda", sparsity=0.6, sparsity_profile="owl", owl_m=3.0)
    meta = pruning_metadata(model, pruner.config, pruner.state.module_metrics)
    assert meta["sparsity_profile"] == "owl"
    assert meta["layer_sparsities"] == pruner.state.layer_sparsities
    assert [e["target_sparsity"] for e in meta["layers"]] == [pruner.state.layer_sparsities[str(i)]
                                                              for i in range(NUM_LAYERS)]  # fmt: skip
    assert meta["config"]["owl_m"] == 3.0 and meta["config"]["owl_lambda"] == 0.08
    assert pruner.config.short_name == "wanda-60-owl"
    assert sparsity_description(meta) == (
        "60% unstructured sparsity (mean over layers; OWL per-layer allocation in pruning_config.json)"
    )


def test_owl_two_processes_share_one_allocation(tmp_path):
    """Under torchrun the squared norms are all-reduced: both processes prune with one process's allocation."""
    from test_distributed import _load, _single_process, _torchrun

    spec = {"arch": "llama", "num_layers": 3, "config": dict(method="wanda", sparsity=0.6, sparsity_profile="owl",
                                                              owl_m=3.0)}  # fmt: skip
    _torchrun(tmp_path, {"owl": spec})
    (w0, info0), (w1, info1) = _load(tmp_path, "owl")
    reference, state = _single_process(spec)
    assert len(set(state.layer_sparsities.values())) > 1
    for full, m in info0["metrics"].items():
        i = full.split(".layers.")[1].split(".")[0]
        assert m["target_sparsity"] == pytest.approx(state.layer_sparsities[i], abs=1e-9), full
        assert info1["metrics"][full]["target_sparsity"] == m["target_sparsity"]
    for key, ref in reference.items():
        assert torch.equal(w0[key], w1[key]) and torch.equal(w0[key] == 0, ref == 0), key


def test_explicit_layer_sparsities_streamed_equal_in_memory(tmp_path):
    """prune_pretrained takes an explicit allocation (e.g. an in-memory OWL run's) and writes what prune() writes."""
    from test_streaming import assert_same_tensors, prune_in_memory, tensors

    make_tiny_model("llama", num_layers=3).save_pretrained(tmp_path / "src")
    calib = make_calibration(6, 24, ragged=True)
    config = dict(method="sparsegpt", sparsity=0.6, layer_sparsities=[0.5, 0.7, 0.6])
    prune_in_memory(tmp_path / "src", calib, config, tmp_path / "memory")
    pruner = OneShotPruner(PruningConfig(**config), progress_bar=False)
    pruner.prune_pretrained(str(tmp_path / "src"), calib, str(tmp_path / "stream"), dtype=torch.float32)
    assert_same_tensors(tensors(tmp_path / "memory"), tensors(tmp_path / "stream"))
    meta = json.loads((tmp_path / "stream" / "pruning_config.json").read_text())
    assert meta["layer_sparsities"] == {"0": 0.5, "1": 0.7, "2": 0.6}
    for entry in meta["layers"]:
        assert abs(entry["sparsity"] - entry["target_sparsity"]) < 0.02
