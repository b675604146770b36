"""Streamed pruning (`OneShotPruner.prune_pretrained`): one decoder layer at a time from the safetensors shards, with
the same result as pruning the model in memory and saving it; resumable from its own output shards; stored FP8
checkpoints dequantized layer by layer; offloaded models refused with a pointer to it."""

import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from testing_utils import make_calibration, make_tiny_model, make_tiny_moe, stop_after

from hf_ssgr import OneShotPruner, PruningConfig
from hf_ssgr.hub.upload import save_pruned
from hf_ssgr.pruning.streaming import dequantize_fp8, partial_dir

HERE = os.path.dirname(os.path.abspath(__file__))


def tensors(folder) -> dict[str, torch.Tensor]:
    out = {}
    for path in glob.glob(os.path.join(folder, "*.safetensors")):
        out.update(load_file(path))
    return out


def assert_same_tensors(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key].view(torch.uint8), b[key].view(torch.uint8)), key  # the same bytes


def prune_in_memory(src, calibration, config: dict, out, dtype=torch.float32) -> OneShotPruner:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
    pruner = OneShotPruner(PruningConfig(**config), progress_bar=False)
    pruner.prune(model, calibration)
    save_pruned(model, out, pruner=pruner, calibration=calibration)
    return pruner


CASES = {
    "qwen2-sparsegpt": ("qwen2", {"method": "sparsegpt", "sparsity": 0.5, "batch_size": 2}),
    "llama-tied-wanda24": ("llama-tied", {"method": "wanda", "sparsity": 0.5, "sparsity_type": "2:4"}),
    "qwen3-head-and-scope": (
        "qwen3",
        {"method": "sparsegpt", "sparsity": 0.6, "layers": [0], "targets": ["self_attn", "mlp", "lm_head"]},
    ),
    "qwen2-first-layer-only": ("qwen2", {"method": "sparsegpt", "sparsity": 0.5, "layers": [0]}),
    "magnitude-no-data": ("qwen2", {"method": "magnitude", "sparsity": 0.5}),
    "qwen3_moe": ("qwen3_moe", {"method": "sparsegpt", "sparsity": 0.5}),
    "gpt_oss": ("gpt_oss", {"method": "wanda", "sparsity": 0.5, "sparsity_type": "2:4"}),
    "deepseek_v3": ("deepseek_v3", {"method": "sparsegpt", "sparsity": 0.5}),
}


def make_model(kind: str, num_layers: int = 3):
    if kind == "llama-tied":
        return make_tiny_model("llama", num_layers=num_layers, tie_word_embeddings=True)
    if kind in ("qwen2", "llama", "qwen3"):
        return make_tiny_model(kind, num_layers=num_layers)
    return make_tiny_moe(kind, num_layers=num_layers)


@pytest.mark.parametrize("case", sorted(CASES))
def test_streamed_prune_equals_in_memory_prune_and_save(tmp_path, case):
    from transformers import AutoModelForCausalLM

    kind, config = CASES[case]
    make_model(kind).save_pretrained(tmp_path / "src")
    calibration = None if config["method"] == "magnitude" else make_calibration(6, 24, ragged=True)
    ref = prune_in_memory(tmp_path / "src", calibration, config, tmp_path / "memory")
    pruner = OneShotPruner(PruningConfig(**config), progress_bar=False)
    out = pruner.prune_pretrained(str(tmp_path / "src"), calibration, str(tmp_path / "stream"), dtype=torch.float32)
    assert out == str(tmp_path / "stream")
    assert_same_tensors(tensors(tmp_path / "memory"), tensors(tmp_path / "stream"))
    assert sorted(os.listdir(tmp_path)) == ["memory", "src", "stream"]  # no partial or temporary folder left
    files = sorted(os.listdir(tmp_path / "stream"))
    assert ".hf_ssgr_stream" not in files and "model.safetensors.index.json" in files
    assert {"config.json", "generation_config.json", "pruning_config.json", "README.md"} <= set(files)
    index = json.loads((tmp_path / "stream" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors(tmp_path / "stream"))
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in tensors(tmp_path / "stream").values()
    )
    # The same measured accounting and metrics as the in-memory run.
    assert pruner.state.achieved_sparsity == ref.state.achieved_sparsity
    mem = json.loads((tmp_path / "memory" / "pruning_config.json").read_text())
    streamed = json.loads((tmp_path / "stream" / "pruning_config.json").read_text())
    for key in ("coverage", "achieved_sparsity", "layers", "calibration", "solver_warnings", "method", "scope"):
        assert streamed[key] == mem[key], key
    assert streamed["modules"].keys() == mem["modules"].keys()
    for name, m in mem["modules"].items():
        assert {k: v for k, v in streamed["modules"][name].items() if k != "seconds"} == {
            k: v for k, v in m.items() if k != "seconds"
        }, name
    assert json.loads((tmp_path / "stream" / "config.json").read_text()) == json.loads(
        (tmp_path / "memory" / "config.json").read_text()
    )
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "stream")
    assert loaded(torch.tensor([[1, 2, 3]])).logits.isfinite().all()


def test_a_stopped_run_resumes_at_the_first_unwritten_layer_and_writes_nothing_twice(tmp_path):
    config = {"method": "sparsegpt", "sparsity": 0.5}
    make_tiny_model("qwen2", num_layers=4).save_pretrained(tmp_path / "src")
    calibration = make_calibration(6, 24)
    prune_in_memory(tmp_path / "src", calibration, config, tmp_path / "memory")
    first = OneShotPruner(PruningConfig(**config), callbacks=[stop_after(1)], progress_bar=False)
    partial = first.prune_pretrained(str(tmp_path / "src"), calibration, str(tmp_path / "out"))
    assert partial == partial_dir(str(tmp_path / "out")) and not (tmp_path / "out").exists()
    written = sorted(f for f in os.listdir(partial) if f.endswith(".safetensors"))
    assert written == ["model-00001-of-00005.safetensors", "model-00002-of-00005.safetensors"]
    inodes = {f: os.stat(os.path.join(partial, f)).st_ino for f in written}
    begun = []

    class Record(stop_after(99).__class__):
        def on_layer_begin(self, config, state, control, **kwargs):
            begun.append(kwargs["layer_index"])

    second = OneShotPruner(PruningConfig(**config), callbacks=[Record()], progress_bar=False)
    second.prune_pretrained(str(tmp_path / "src"), calibration, str(tmp_path / "out"))
    assert begun == [2, 3]  # layers 0 and 1 were replayed from their shards, not pruned again
    for f, inode in inodes.items():
        assert os.stat(tmp_path / "out" / f).st_ino == inode  # the shards written before the stop were kept
    assert_same_tensors(tensors(tmp_path / "memory"), tensors(tmp_path / "out"))
    meta = json.loads((tmp_path / "out" / "pruning_config.json").read_text())
    assert sorted({int(n.split(".")[2]) for n in meta["modules"]}) == [0, 1, 2, 3]
    layers_logged = [e["layer"] for e in second.state.log_history if "layer" in e]
    assert layers_logged == [0, 1, 2, 3]  # each layer once, the first two from the first run's records
    assert not os.path.exists(partial)


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    """The process dies (os._exit, nothing cleaned up) after the second layer's shard; the next run finishes."""
    make_tiny_model("llama", num_layers=4).save_pretrained(tmp_path / "src")
    calibration = make_calibration(6, 24)
    (tmp_path / "calib.json").write_text(json.dumps(calibration))
    script = textwrap.dedent(
        f"""
        import json, os, sys
        sys.path.insert(0, {HERE!r})
        from hf_ssgr import OneShotPruner, PruningConfig
        from hf_ssgr.pruning.callbacks import PrunerCallback

        class Die(PrunerCallback):
            def on_layer_begin(self, config, state, control, **kwargs):
                if kwargs["layer_index"] == 2:
                    os._exit(9)

        calib = json.load(open({str(tmp_path / "calib.json")!r}))
        OneShotPruner(PruningConfig(method="wanda", sparsity=0.5), callbacks=[Die()], progress_bar=False
                      ).prune_pretrained({str(tmp_path / "src")!r}, calib, {str(tmp_path / "out")!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr[-3000:]
    partial = partial_dir(str(tmp_path / "out"))
    assert len(glob.glob(os.path.join(partial, "*.safetensors"))) == 2
    assert not glob.glob(os.path.join(partial, "*.tmp"))
    OneShotPruner(PruningConfig(method="wanda", sparsity=0.5), progress_bar=False).prune_pretrained(
        str(tmp_path / "src"), calibration, str(tmp_path / "out")
    )
    prune_in_memory(tmp_path / "src", calibration, {"method": "wanda", "sparsity": 0.5}, tmp_path / "memory")
    assert_same_tensors(tensors(tmp_path / "memory"), tensors(tmp_path / "out"))


def test_an_unfinished_run_of_another_config_is_refused_and_restart_discards_it(tmp_path):
    make_tiny_model("qwen2", num_layers=3).save_pretrained(tmp_path / "src")
    calibration = make_calibration(4, 16)
    OneShotPruner(PruningConfig(method="wanda", sparsity=0.5), callbacks=[stop_after(0)], progress_bar=False
                  ).prune_pretrained(str(tmp_path / "src"), calibration, str(tmp_path / "out"))  # fmt: skip
    other = OneShotPruner(PruningConfig(method="wanda", sparsity=0.6), progress_bar=False)
    with pytest.raises(ValueError, match=r"unfinished streamed prune of another run .*numerics.*restart=True"):
        other.prune_pretrained(str(tmp_path / "src"), calibration, str(tmp_path / "out"))
    with pytest.raises(ValueError, match="unfinished streamed prune of another run .*calibration"):
        OneShotPruner(PruningConfig(method="wanda", sparsity=0.5), progress_bar=False).prune_pretrained(
            str(tmp_path / "src"), make_calibration(4, 16, seed=7), str(tmp_path / "out")
        )
    other.prune_pretrained(str(tmp_path / "src"), calibration, str(tmp_path / "out"), restart=True)
    meta = json.loads((tmp_path / "out" / "pruning_config.json").read_text())
    assert meta["sparsity"] == 0.6 and abs(meta["achieved_sparsity"]["targets"] - 0.6) < 0.01


def test_bad_inputs_are_refused_before_anything_is_written(tmp_path):
    pruner = OneShotPruner(PruningConfig(method="magnitude", sparsity=0.5), progress_bar=False)
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        pruner.prune_pretrained(str(tmp_path / "nowhere"), None, str(tmp_path / "out"))
    model = make_tiny_model("qwen2")
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    if not os.path.exists(tmp_path / "bin" / "model.safetensors"):  # transformers 5 may always write safetensors
        with pytest.raises(FileNotFoundError, match="safetensors"):
            pruner.prune_pretrained(str(tmp_path / "bin"), None, str(tmp_path / "out"))
    model.save_pretrained(tmp_path / "src")
    with pytest.raises(ValueError, match="is the input checkpoint"):
        pruner.prune_pretrained(str(tmp_path / "src"), None, str(tmp_path / "src"))
    with pytest.raises(ValueError, match="dtype='int8'|not a torch dtype"):
        pruner.prune_pretrained(str(tmp_path / "src"), None, str(tmp_path / "out"), dtype="halfish")
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (tmp_path / "src" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="stored quantized .*bitsandbytes"):
        pruner.prune_pretrained(str(tmp_path / "src"), None, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not os.path.exists(partial_dir(str(tmp_path / "out")))


# ---------------------------------------------------------------------------------------------------------------------
# Stored FP8


def _block_quantize(w: torch.Tensor, block: tuple[int, int]):
    """DeepSeek-style: one float32 `weight_scale_inv` per block, weight / scale in float8_e4m3fn."""
    rows, cols = -(-w.shape[0] // block[0]), -(-w.shape[1] // block[1])
    scale = torch.empty(rows, cols)
    q = torch.empty_like(w, dtype=torch.float8_e4m3fn)
    for r in range(rows):
        for c in range(cols):
            sl = (slice(r * block[0], (r + 1) * block[0]), slice(c * block[1], (c + 1) * block[1]))
            s = w[sl].abs().max().clamp(min=1e-12) / 448.0
            scale[r, c] = s
            q[sl] = (w[sl] / s).to(torch.float8_e4m3fn)
    return q, scale


def _block_dequantize(q: torch.Tensor, scale: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    out = torch.empty(q.shape)
    for r in range(scale.shape[0]):
        for c in range(scale.shape[1]):
            sl = (slice(r * block[0], (r + 1) * block[0]), slice(c * block[1], (c + 1) * block[1]))
            out[sl] = q[sl].to(torch.float32) * scale[r, c]
    return out


def _write_quantized(tmp_path, model, quantize, quantization_config):
    """Save `model`, then rewrite its decoder layers' 2-D weights stored quantized (weight + scale), and the same
    model dequantized (the reference) in float32."""
    model.save_pretrained(tmp_path / "dense")
    stored, reference = {}, {}
    for key, t in load_file(tmp_path / "dense" / "model.safetensors").items():
        if ".layers." in key and key.endswith(".weight") and t.ndim == 2 and "norm" not in key and ".gate." not in key:
            q, extra, deq = quantize(t)
            stored[key] = q
            stored.update({key + suffix: v for suffix, v in extra.items()})
            reference[key] = deq
        else:
            stored[key] = reference[key] = t
    os.makedirs(tmp_path / "fp8")
    os.makedirs(tmp_path / "reference")
    save_file(stored, tmp_path / "fp8" / "model.safetensors", metadata={"format": "pt"})
    save_file(reference, tmp_path / "reference" / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((tmp_path / "dense" / "config.json").read_text())
    (tmp_path / "reference" / "config.json").write_text(json.dumps(cfg))
    cfg["quantization_config"] = quantization_config
    (tmp_path / "fp8" / "config.json").write_text(json.dumps(cfg))
    return stored


@pytest.mark.parametrize(("family", "dtype"), [("llama", torch.float32), ("llama", torch.bfloat16),
                                               ("deepseek_v3", torch.float32)])  # fmt: skip
def test_block_fp8_checkpoints_are_dequantized_layer_by_layer(tmp_path, family, dtype):
    block = (32, 32)

    def quantize(w):
        q, scale = _block_quantize(w, block)
        return q, {"_scale_inv": scale}, _block_dequantize(q, scale, block)

    model = (
        make_tiny_model("llama", num_layers=2, intermediate_size=96) if family == "llama" else make_tiny_moe(family)
    )
    stored = _write_quantized(tmp_path, model, quantize, {"quant_method": "fp8", "fmt": "e4m3",
                                                          "activation_scheme": "dynamic",
                                                          "weight_block_size": list(block)})  # fmt: skip
    assert any(t.dtype == torch.float8_e4m3fn for t in stored.values())
    calibration = make_calibration(6, 24)
    config = {"method": "sparsegpt", "sparsity": 0.5}
    prune_in_memory(tmp_path / "reference", calibration, config, tmp_path / "memory", dtype=dtype)
    OneShotPruner(PruningConfig(**config), progress_bar=False).prune_pretrained(
        str(tmp_path / "fp8"), calibration, str(tmp_path / "out"), dtype=dtype
    )
    out = tensors(tmp_path / "out")
    assert not any(k.endswith("_scale_inv") for k in out) and all(t.dtype == dtype for t in out.values())
    assert_same_tensors(tensors(tmp_path / "memory"), out)
    assert "quantization_config" not in json.loads((tmp_path / "out" / "config.json").read_text())


def test_compressed_tensors_fp8_checkpoints_are_dequantized_as_compressed_tensors_does(tmp_path):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
    from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize

    args = QuantizationArgs(num_bits=8, type="float", strategy="channel", symmetric=True, dynamic=False)

    def fake(w):
        scale = (w.abs().amax(dim=1, keepdim=True) / 448.0).clamp(min=1e-12)
        q = quantize(w, scale, torch.zeros_like(scale), args, dtype=torch.float8_e4m3fn)
        return q, {"_scale": scale}, dequantize(q, scale, args=args, dtype=torch.float32)

    scheme = QuantizationScheme(
        targets=["Linear"], weights=args,
        input_activations=QuantizationArgs(num_bits=8, type="float", strategy="token", dynamic=True, symmetric=True),
    )  # fmt: skip
    qconfig = QuantizationConfig(config_groups={"group_0": scheme}, format="float-quantized", ignore=["lm_head"])
    qdict = json.loads(qconfig.model_dump_json())
    qdict["quant_method"] = "compressed-tensors"
    stored = _write_quantized(tmp_path, make_tiny_model("qwen2", num_layers=2), fake, qdict)
    assert stored["model.layers.0.mlp.up_proj.weight"].dtype == torch.float8_e4m3fn
    calibration = make_calibration(6, 24)
    config = {"method": "wanda", "sparsity": 0.5}
    prune_in_memory(tmp_path / "reference", calibration, config, tmp_path / "memory")
    OneShotPruner(PruningConfig(**config), progress_bar=False).prune_pretrained(
        str(tmp_path / "fp8"), calibration, str(tmp_path / "out"), dtype=torch.float32
    )
    out = tensors(tmp_path / "out")
    assert not any(k.endswith("_scale") for k in out)
    assert_same_tensors(tensors(tmp_path / "memory"), out)


def test_dequantize_fp8_covers_tensor_channel_group_and_block_scales():
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(70, 96, generator=g) * 3).to(torch.float8_e4m3fn)
    wf = w.to(torch.float32)
    assert torch.equal(dequantize_fp8(w, torch.tensor([2.0])), wf * 2)
    channel = torch.rand(70, 1, generator=g)
    assert torch.equal(dequantize_fp8(w, channel), wf * channel)
    group = torch.rand(70, 3, generator=g)  # groups of 32 input features
    assert torch.equal(dequantize_fp8(w, group), wf * group.repeat_interleave(32, dim=1))
    block = torch.rand(2, 3, generator=g)  # 64 x 32 blocks; the last row block is partial (70 = 64 + 6)
    assert torch.equal(dequantize_fp8(w, block, [64, 32]), _block_dequantize(w, block, (64, 32)))
    with pytest.raises(ValueError, match="does not tile"):
        dequantize_fp8(w, torch.rand(3, 3), [64, 32])


# ---------------------------------------------------------------------------------------------------------------------
# Offloaded models


def test_an_offloaded_model_is_refused_with_a_pointer_to_streaming(tmp_path):
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    make_tiny_model("qwen2").save_pretrained(tmp_path / "src")
    pruner = OneShotPruner(PruningConfig(method="magnitude", sparsity=0.5), progress_bar=False)
    offloaded = AutoModelForCausalLM.from_pretrained(
        tmp_path / "src", device_map={"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                                      "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"},
        offload_folder=str(tmp_path / "offload"),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"offloaded .*prune_pretrained\(model_name_or_path"):
        pruner.prune(offloaded)
    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(offloaded.config)
    with pytest.raises(ValueError, match="meta device.*prune_pretrained"):
        pruner.prune(empty)


# ---------------------------------------------------------------------------------------------------------------------
# Memory


def test_a_model_of_1_5_gb_streams_with_at_most_40_percent_of_the_in_memory_peak_rss(tmp_path):
    """benchmarks/bench_prune_streaming.py in its default shape: 24 layers of a 1024-wide Qwen2, float32, 1.6 GB on
    disk; each path in its own process."""
    out = tmp_path / "report.json"
    bench = os.path.join(HERE, "..", "benchmarks", "bench_prune_streaming.py")
    proc = subprocess.run([sys.executable, bench, "--workdir", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["checkpoint_bytes"] >= 1.5e9
    assert report["identical"] is True
    assert report["rss_ratio"] <= 0.40, report["results"]
    mem, streamed = report["results"]["memory"], report["results"]["streamed"]
    for written in (streamed["disk_written_bytes"], mem["disk_written_bytes"]):  # the same tensors; headers differ
        assert abs(written - report["checkpoint_bytes"]) < 1e-4 * report["checkpoint_bytes"]
