"""The streamed / multi-process / MoE memory model, its time estimate, and `hf-ssgr plan`."""

import json
import pathlib
import re

import pytest
import torch

from hf_ssgr.commands.cli import main
from hf_ssgr.commands.plan import SHAPES, SHAPES_DIR, load_model_config
from hf_ssgr.pruning.memory import GIB, RATE_BASES, estimate_prune_memory, model_shape_summary

ROOT = pathlib.Path(__file__).resolve().parents[1]
MEASURED = ROOT / "benchmarks" / "measured"


def shape(name):
    return json.loads((pathlib.Path(SHAPES_DIR) / SHAPES[name][0]).read_text())


def qwen2_7b(layers=28):
    return {**shape("r1-distill-qwen-7b"), "num_hidden_layers": layers}


def test_streamed_host_peak_grows_with_one_layer_not_the_layer_count():
    llama = shape("r1-distill-llama-70b")
    whole = estimate_prune_memory(llama, 128, 4096, model_on_device=False).host_bytes
    assert estimate_prune_memory(llama, 128, 4096, streamed=True).host_bytes < 0.15 * whole
    cpu = [estimate_prune_memory(llama, 8, 512, same_memory=True, streamed=s).host_bytes for s in (False, True)]
    assert cpu[1] < 0.15 * cpu[0]
    in_memory = estimate_prune_memory(qwen2_7b(), 128, 4096, model_on_device=False)
    streamed = estimate_prune_memory(qwen2_7b(), 128, 4096, streamed=True)
    deeper = estimate_prune_memory(qwen2_7b(56), 128, 4096, streamed=True)
    assert deeper.host_bytes == pytest.approx(streamed.host_bytes)  # 28 more layers: the same host peak
    assert deeper.device_bytes == pytest.approx(streamed.device_bytes)
    assert estimate_prune_memory(qwen2_7b(56), 128, 4096, model_on_device=False).host_bytes > 1.8 * (
        in_memory.host_bytes - in_memory.terms["runtime"]
    )
    # one layer wider: the host peak grows by about two layers (loading/writing), not by the model
    # (a small vocabulary: with 152k tokens the end, copying embeddings and lm_head, is the 7B's host peak)
    small = {**qwen2_7b(), "vocab_size": 1000}
    narrow = estimate_prune_memory(small, 128, 4096, streamed=True)
    wide = estimate_prune_memory({**small, "intermediate_size": 2 * 18944}, 128, 4096, streamed=True)
    layer = 3 * 3584 * 18944 * 2
    assert wide.host_bytes - narrow.host_bytes == pytest.approx(2 * layer, rel=0.01)
    assert streamed.host_bytes == pytest.approx(streamed.terms["runtime"] + 2 * 2 * (2 * 152064 * 3584 + 3584))
    # nothing is backed up, the output checkpoint is the only disk written
    assert streamed.terms["R: restore_on_error copies (disk)"] == 0
    assert streamed.disk_written_bytes == streamed.params * 2
    assert in_memory.disk_written_bytes > streamed.disk_written_bytes


def test_world_size_divides_the_activations_and_the_compute():
    one = estimate_prune_memory(qwen2_7b(), 128, 16384, streamed=True)
    eight = estimate_prune_memory(qwen2_7b(), 128, 16384, streamed=True, world_size=8)
    assert eight.terms["A: cached layer inputs"] == one.terms["A: cached layer inputs"] / 8
    assert eight.terms["S: statistics"] == one.terms["S: statistics"]  # all-reduced: whole on every process
    assert eight.terms["W: model weights"] == one.terms["W: model weights"]
    for phase in ("statistics", "solves", "propagation"):
        assert eight.time_terms[phase] == pytest.approx(one.time_terms[phase] / 8)
    assert eight.time_terms["read checkpoint"] == one.time_terms["read checkpoint"]  # every process reads it all
    assert "all-reduce and weight exchange" in eight.time_terms
    assert eight.processes_per_node == 8 and eight.host_node_bytes == 8 * eight.host_bytes
    odd = estimate_prune_memory(qwen2_7b(), 127, 16384, streamed=True, world_size=8)
    assert odd.terms["A: cached layer inputs"] == eight.terms["A: cached layer inputs"]  # ceil(127 / 8) rows


@pytest.mark.parametrize(
    "name, total, active",
    [
        ("r1-distill-qwen-7b", 7.6e9, None),
        ("r1-distill-llama-70b", 70.6e9, None),
        ("qwen3-30b-a3b", 30.5e9, 3.3e9),
        ("qwen3-235b-a22b", 235e9, 22e9),
        ("deepseek-r1", 671e9, 37e9),
        ("gpt-oss-120b", 117e9, 5.1e9),
    ],
)
def test_shipped_shapes_have_the_published_parameter_counts(name, total, active):
    """The public totals (235B / A22B, 671B / 37B activated, ...) within a few percent, and the exact parameter
    count of the transformers model built from the same config on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = shape(name)
    summary = model_shape_summary(config)
    assert summary["params"] == pytest.approx(total, rel=0.03)
    if active:
        assert summary["active_params"] == pytest.approx(active, rel=0.1)  # publishers differ on embeddings
    kwargs = {k: v for k, v in config.items() if not k.startswith("_") and k not in ("architectures", "torch_dtype")}
    kwargs.pop("quantization_config", None)
    hf_config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    assert summary["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", ["deepseek_v3", "gpt_oss", "qwen2_moe", "mixtral"])
def test_moe_layer_kinds_match_tiny_models(family):
    from testing_utils import make_tiny_moe

    model = make_tiny_moe(family, num_layers=3)
    summary = model_shape_summary(model.config)
    assert summary["params"] == sum(p.numel() for p in model.parameters())
    if family == "deepseek_v3":  # first_k_dense_replace=1: one dense layer, two MoE layers
        assert sorted((k["count"], k["experts"]) for k in summary["layers"]) == [(1, 0), (2, 8)]
        layers = model.model.layers
        assert {k["experts"]: k["params"] for k in summary["layers"]} == {
            0: sum(p.numel() for p in layers[0].parameters()),
            8: sum(p.numel() for p in layers[1].parameters()),
        }


def test_deepseek_r1_streamed_fp8_and_grouped_statistics():
    config = shape("deepseek-r1")
    est = estimate_prune_memory(config, 128, 4096, streamed=True, device_memory_gb=80)
    moe_layer = 256 * 3 * 7168 * 2048 + 3 * 7168 * 2048 + 256 * 7168
    assert est.terms["W: model weights"] > moe_layer * 2  # the device holds the largest (MoE) layer
    # one tensor at a time in float32: the largest matrix is a dense layer's MLP projection, 7168 x 18432
    assert est.terms["FP8 dequantisation (float32 copy of one tensor)"] == 4 * 7168 * 18432
    assert 1.30e12 < est.disk_written_bytes < 1.38e12  # written dequantized, in bf16
    assert 0.62e12 < est.disk_read_bytes < 0.72e12  # read in FP8
    all_experts = 256 * 4 * (7168**2 + 2048**2)
    assert est.terms["S: statistics"] < all_experts  # the default bound: half the GPU's free memory
    assert est.device_bytes < 0.9 * 80 * GIB
    bigger = estimate_prune_memory(config, 128, 4096, streamed=True, device_memory_gb=141)
    assert bigger.terms["S: statistics"] > est.terms["S: statistics"]
    assert bigger.time_terms["statistics"] < est.time_terms["statistics"]  # fewer passes over the data
    assert any("MoE" in n for n in est.notes)


def test_time_reproduces_the_measured_runs_it_is_scaled_from():
    """At their reference shapes the per-layer phases are the measured ones (rates read from benchmarks/measured)."""
    run = json.loads((MEASURED / "h100_sparsegpt_7b_128x16k.json").read_text())["scale"][0]
    per_layer = run["per_layer"]
    est = estimate_prune_memory(qwen2_7b(), 128, 16384)
    for phase, key in (("solves", "solve"), ("propagation", "propagate"), ("statistics", "stats")):
        measured = sum(layer[key] for layer in per_layer)
        assert est.time_terms[phase] == pytest.approx(measured, rel=0.01)
    assert run["total_s"] < est.seconds < 1.2 * run["total_s"]  # plus reading and writing the checkpoint
    moe = json.loads((MEASURED / "cpu_prune_moe_qwen3_30b_a3b.json").read_text())
    cpu = estimate_prune_memory({**shape("qwen3-30b-a3b"), "num_hidden_layers": 1}, 32, 2048, same_memory=True)
    assert cpu.time_terms["propagation"] == pytest.approx(moe["forward_s_per_layer"], rel=0.01)
    assert cpu.time_terms["solves"] == pytest.approx(moe["steady_layer"]["solves_s"], rel=0.01)
    assert cpu.time_terms["statistics"] == pytest.approx(moe["steady_layer"]["stats_pass_s"], rel=0.01)
    assert RATE_BASES["gpu"].solve_s == pytest.approx(run["solve_s"] / 28, rel=0.01)
    # more work, more time: 2:4 and ALPS solve slower, longer rows cost more
    assert estimate_prune_memory(qwen2_7b(), 128, 16384, sparsity_type="2:4").seconds > est.seconds
    assert estimate_prune_memory(qwen2_7b(), 128, 16384, method="alps").seconds > est.seconds
    assert estimate_prune_memory(qwen2_7b(), 128, 4096).seconds < est.seconds


def test_plan_prints_a_table_per_configuration(capsys):
    rc = main(["plan", "--model_name_or_path", "deepseek-ai/DeepSeek-R1", "--num_samples", "128", "--seq_len",
               "4096", "--gpus", "1,8", "--gpu_memory_gb", "80,141"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line for line in out.splitlines() if line.startswith("| DeepSeek-R1 |")]
    assert len(rows) == 4
    assert all("1.34 TB" in r and "extrapolated (MoE" in r for r in rows)
    assert "stored in FP8" in out and "estimate" in out.lower()
    main(["plan", "--model_name_or_path", "r1-distill-llama-70b", "--seq_len", "16384", "--mode", "on_device"])
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("| R1-Distill-Llama-70B |")]
    assert row.split("|")[9].strip() == "no"  # 140 GB of weights on one 80 GB GPU


def test_plan_reads_a_local_folder_and_a_config_file(tmp_path, capsys):
    from testing_utils import make_tiny_model

    make_tiny_model("qwen2").save_pretrained(tmp_path / "m")
    assert main(["plan", "--model_name_or_path", str(tmp_path / "m"), "--num_samples", "4", "--seq_len", "32"]) == 0
    assert "| m | streamed | 1 | 80 |" in capsys.readouterr().out
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(shape("qwen3-235b-a22b")))
    assert main(["plan", "--model_config", str(cfg), "--device", "cpu", "--host_memory_gb", "64"]) == 0
    assert "| Qwen/Qwen3-235B-A22B | streamed | cpu |" in capsys.readouterr().out
    yaml_cfg = tmp_path / "plan.yaml"
    yaml_cfg.write_text("model_name_or_path: r1-distill-qwen-7b\ngpus: '2'\nmethod: wanda\n")
    assert main(["plan", "--config", str(yaml_cfg)]) == 0
    assert "| R1-Distill-Qwen-7B | streamed | 2 | 80 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model_name_or_path", "no-such-org/no-such-model-xyz"], "not in the Hugging Face cache"),
        (["--model_name_or_path", "r1-distill-qwen-7b", "--gpus", "1,x"], "--gpus"),
        (["--model_name_or_path", "r1-distill-qwen-7b", "--gpus", "0"], "positive"),
        (["--model_name_or_path", "r1-distill-qwen-7b", "--mode", "sideways"], "--mode"),
        (["--model_name_or_path", "r1-distill-qwen-7b", "--frobnicate", "1"], "unrecognized"),
        (["--model_name_or_path", "r1-distill-qwen-7b", "--method", "nope"], "nope"),
        (["--model_config", "/no/such/config.json"], "no such file"),
        ([], "required"),
    ],
)
def test_plan_refuses_bad_input_in_one_line(argv, message, capsys):
    assert main(["plan", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hf-ssgr plan:") and len(err.splitlines()) == 1
    assert message in err


def test_known_names_never_touch_the_network(monkeypatch):
    import huggingface_hub

    def refuse(*a, **k):
        raise AssertionError("network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    for name in SHAPES:
        config, display, short = load_model_config(name)
        assert short == name and config["model_type"]


def test_readme_plan_table_is_the_plan_output(capsys):
    """The README's planning table is what the commands above it print."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Planning a run\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    expected = []
    for line in block.strip().splitlines():
        argv = line.split("#")[0].split()
        assert argv[:2] == ["hf-ssgr", "plan"]
        assert main(argv[1:]) == 0
        expected += [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "| model |" not in r]
    table = [r for r in section.splitlines() if r.startswith("| ") and "| model |" not in r]
    assert table == expected
