"""The embedded tiny reasoner, its problem generator, recipes, and the CLI end to end."""

import glob
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from testing_utils import free_port, require_module

from hf_ssgr import PruningConfig
from hf_ssgr import tiny_reasoner as tr
from hf_ssgr.commands.cli import main
from hf_ssgr.recipes import RunConfig, run_recipe
from hf_ssgr.tiny_reasoner import MODEL_PATH, make_problem, reasoning_text, split_of, text_corpus, train_problems

RECIPES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "recipes", "**", "*.yaml"), recursive=True))


# ----------------------------------------------------------------------------------------------------------------
# The shipped model and the generator


def test_shipped_model_loads_and_its_chat_template_renders():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ssgr.calibration.prompts import render_prompt

    size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(MODEL_PATH, "*.safetensors")))
    assert size <= 10 * 1024 * 1024
    model = AutoModelForCausalLM.from_pretrained(MODEL_PATH)
    tok = AutoTokenizer.from_pretrained(MODEL_PATH)
    assert model.config.model_type == "llama"
    text = render_prompt(tok, "Ann has 3 pens, gets 4 more. How many pens now?")
    assert text.startswith("<|user|>Ann has 3 pens") and text.endswith("<|assistant|><think>\n")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=40, eos_token_id=tok.eos_token_id)
    reply = tok.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert reply == "3+4=7\n</think>\n\\boxed{7}"  # the model reasons R1-style and answers


def test_problem_generator_is_deterministic_and_splits_are_disjoint():
    assert [p.problem for p in train_problems(50, seed=3)] == [p.problem for p in train_problems(50, seed=3)]
    assert [p.problem for p in tr.test_problems(10)] == [p.problem for p in tr.test_problems(10)]
    assert text_corpus(5) == text_corpus(5)
    train = {p.problem for p in train_problems(3000, seed=0)}
    test = tr.test_problems(40)
    assert {p.level for p in test} == {1, 2, 3, 4, 5} and len(test) == 200
    assert not train & {p.problem for p in test}
    assert all(split_of(p.problem) == "test" for p in test)
    import random

    p = make_problem(3, random.Random(0))
    value = p.steps[0][0]
    for a, op, d, r in p.steps:  # the reasoning is correct arithmetic, chained
        assert a == value and r == eval(f"{a}{op}{d}")
        value = r
    assert p.answer == value and reasoning_text(p).endswith(f"\\boxed{{{value}}}")


# ----------------------------------------------------------------------------------------------------------------
# Recipes


@pytest.mark.parametrize(
    "path",
    RECIPES,
    ids=[os.path.relpath(p, os.path.join(os.path.dirname(__file__), "..", "recipes")) for p in RECIPES],
)
def test_every_recipe_parses_and_names_real_things(path, tmp_path):
    """RunConfig validates sources, policies, methods, pruning settings and tasks as it is built."""
    import dataclasses

    from hf_ssgr.commands.prune import PruneArguments
    from hf_ssgr.pruning.config import PruningConfig

    with open(path) as f:
        data = yaml.safe_load(f)
    if "prune" in data and "policies" in data:
        cfg = RunConfig.from_yaml(path, output_dir=str(tmp_path))
        assert cfg.policies and cfg.prune
    else:  # a single-step recipe for `hf-ssgr prune --config`
        io_fields = {f.name for f in dataclasses.fields(PruneArguments)}
        PruningConfig(**{k: v for k, v in data.items() if k not in io_fields})


def test_bad_recipe_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny\noutput_dir: x\npolicies: [sssgr]\n")
    with pytest.raises(ValueError, match="Unknown policy 'sssgr'"):
        RunConfig.from_yaml(str(bad))
    bad.write_text("model: tiny\noutput_dir: x\nsparsity: 0.5\n")
    with pytest.raises(ValueError, match="unknown recipe keys \\['sparsity'\\]"):
        RunConfig.from_yaml(str(bad))
    bad.write_text("model: tiny\noutput_dir: x\nprune: [{method: sparsgpt, sparsity: 0.5}]\n")
    with pytest.raises(ValueError, match="sparsgpt"):
        RunConfig.from_yaml(str(bad))
    bad.write_text("model: tiny\noutput_dir: x\ntasks: [gsm8k]\n")
    with pytest.raises(ValueError, match="valid tasks are"):
        RunConfig.from_yaml(str(bad))
    assert PruningConfig(method="sparsegpt", sparsity=0.5, sparsity_type="2:4").short_name == "sparsegpt-2of4"


# ----------------------------------------------------------------------------------------------------------------
# End to end on the tiny model


def _small_recipe(tmp_path):
    recipe = {
        "description": "test",
        "model": "tiny",
        "output_dir": str(tmp_path / "run"),
        "source": "tiny-arith",
        "text_source": "tiny-text",
        "policies": ["text", "ssgr"],
        "calibration": {
            "num_samples": 6,
            "max_length": 128,
            "num_generations": 4,
            "max_new_tokens": 64,
            "min_thinking_words": 1,
            "max_problems": 60,
        },  # fmt: skip
        "prune": [{"method": "wanda", "sparsity": 0.5}],
        "tasks": ["ssgr_tiny_arith"],
        "num_samples": 2,
        "max_new_tokens": 64,
        "limit": 6,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    pytest.importorskip("lm_eval")
    tmp_path = tmp_path_factory.mktemp("one")
    path = _small_recipe(tmp_path)
    return path, tmp_path / "run", run_recipe(path)


@require_module("lm_eval")
def test_run_writes_everything_and_resumes_without_recomputing(one_process_run, monkeypatch):
    path, out, result = one_process_run
    assert sorted(os.listdir(out / "calibration")) == ["ssgr", "text"]
    assert (out / "pruned" / "ssgr" / "wanda-50" / "pruning_config.json").exists()
    assert sorted(os.listdir(out / "eval")) == ["dense.json", "ssgr__wanda-50.json", "text__wanda-50.json"]
    report = (out / "report.md").read_text()
    assert "| dense |" in report and "ssgr__wanda-50" in report and "pass@1 by difficulty level" in report
    dense = result["dense"]["ssgr_tiny_arith"]
    assert "avg pass@1 (SE)" in report and f"| dense | – | – | {dense.pass_at_1_with_se} |" in report
    assert dense.pass_at_1_se is not None and "(" in dense.pass_at_1_with_se
    # every calibration against the text one and against the dense model, with the interval and verdict
    c = result["pruned"]["ssgr__wanda-50"].compare(result["pruned"]["text__wanda-50"])["average"]
    row = f"| ssgr__wanda-50 | text__wanda-50 | {100 * c.difference:+.1f} | [{100 * c.low:+.1f}, {100 * c.high:+.1f}]"
    assert row + f" | 6 | {c.verdict} |" in report
    for name in ("ssgr__wanda-50", "text__wanda-50"):
        assert f"| {name} | dense | " in report
    assert "| text__wanda-50 | text__wanda-50 |" not in report and "10000 resamples, seed 0" in report
    assert (out / "accuracy.png").stat().st_size > 0 and (out / "lengths.png").stat().st_size > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["policies"] == ["text", "ssgr"] and "torch" in manifest["versions"]
    assert result["dense"]["ssgr_tiny_arith"].num_problems == 6
    steps = dict(manifest["steps"])

    # a second run recomputes nothing: any calibration, prune or evaluation would raise
    import hf_ssgr.calibration.calibrator
    import hf_ssgr.evaluation.evaluate
    import hf_ssgr.pruning.pruner

    def boom(*a, **k):
        raise AssertionError("recomputed a finished step")

    monkeypatch.setattr(hf_ssgr.calibration.calibrator.SSGRCalibrator, "build", boom)
    monkeypatch.setattr(hf_ssgr.pruning.pruner.OneShotPruner, "prune", boom)
    monkeypatch.setattr(hf_ssgr.evaluation.evaluate, "evaluate", boom)
    again = run_recipe(path)
    assert json.loads((out / "manifest.json").read_text())["steps"] == steps
    assert again["pruned"]["ssgr__wanda-50"].to_dict() == result["pruned"]["ssgr__wanda-50"].to_dict()


def test_decode_budgets_are_checked():
    base = {"model": "tiny", "output_dir": "x", "tasks": ["ssgr_tiny_arith"], "max_new_tokens": 64}
    assert RunConfig(**base, decode_budgets=[32, 16]).decode_budgets == [32, 16]
    assert RunConfig(**base).decode_budgets == []
    for bad in ([64], [16, 16]):
        with pytest.raises(ValueError, match="list each other budget once"):
            RunConfig(**base, decode_budgets=bad)
    for bad in ([0], ["8k"], [True]):
        with pytest.raises(ValueError, match="positive integers"):
            RunConfig(**base, decode_budgets=bad)
    with pytest.raises(ValueError, match="accuracy task"):
        RunConfig(**{**base, "tasks": ["ssgr_tiny_perplexity"]}, decode_budgets=[16])


@require_module("lm_eval")
def test_decode_budgets_evaluate_every_model_at_each_limit_and_resume(tmp_path, monkeypatch):
    path = _small_recipe(tmp_path)
    result = run_recipe(path, policies=["text"], decode_budgets=[8], limit=3)
    out = tmp_path / "run"
    assert sorted(os.listdir(out / "eval")) == ["dense.json", "dense@8.json", "text__wanda-50.json",
                                                "text__wanda-50@8.json"]  # fmt: skip
    for name in ("dense", "text__wanda-50"):
        short, full = result["budgets"][name][8], result["pruned"].get(name) or result["dense"]
        assert short.settings["max_new_tokens"] == 8 and full.settings["max_new_tokens"] == 64
        assert all(1 <= n <= 8 for n in short["ssgr_tiny_arith"].lengths)
        assert max(full["ssgr_tiny_arith"].lengths) > 8  # the full budget is not cut at 8
        assert short["ssgr_tiny_arith"].gen_seconds > 0 and len(short["ssgr_tiny_arith"].gen_seconds_per_process) == 1
        assert list(short.tasks) == ["ssgr_tiny_arith"] and not short.perplexity
    report = (out / "report.md").read_text()
    assert "Decode budgets" in report and "gen min (Σ processes)" in report
    short = result["budgets"]["dense"][8]["ssgr_tiny_arith"]
    row = f"| dense | 8 | {short.pass_at_1_with_se} | {short.pass_at_1_with_se} | {100 * short.truncated:.1f}% | "
    assert row + f"{short.gen_seconds / 60:.2f} |" in report
    assert "| dense | 64 | " in report and "| text__wanda-50 | 8 | " in report
    # a second run reads every budget's report back and recomputes nothing
    import hf_ssgr.evaluation.evaluate

    def boom(*a, **k):
        raise AssertionError("recomputed a finished evaluation")

    monkeypatch.setattr(hf_ssgr.evaluation.evaluate, "evaluate", boom)
    again = run_recipe(path, policies=["text"], decode_budgets=[8], limit=3)
    assert again["budgets"]["text__wanda-50"][8].to_dict() == result["budgets"]["text__wanda-50"][8].to_dict()


def _files(root) -> list[str]:
    """Every file under `root` but the rollout stores (one file per process)."""
    found = (os.path.join(d, f) for d, _, names in os.walk(root) if "rollouts" not in d for f in names)
    return sorted(os.path.relpath(p, root) for p in found)


@require_module("lm_eval")
def test_run_under_torchrun_writes_one_run_like_one_process(one_process_run, tmp_path):
    _, one, _ = one_process_run
    path = _small_recipe(tmp_path)
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    proc = subprocess.run([*cmd, "-m", "hf_ssgr.commands.cli", "run", path], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert proc.stdout.count("Everything is in") == 1  # one process reports
    two = tmp_path / "run"
    assert _files(two) == _files(one)  # the same results, and no temporary file left
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["processes"] == 2 and set(manifest["steps"]) == set(
        json.loads((one / "manifest.json").read_text())["steps"]
    )

    # The text calibration draws no samples: the same rows, and the same pruned layers up to float32 summation order.
    import datasets

    assert (
        datasets.load_from_disk(two / "calibration" / "text")["input_ids"]
        == datasets.load_from_disk(one / "calibration" / "text")["input_ids"]
    )
    meta = [json.loads((r / "pruned" / "text" / "wanda-50" / "pruning_config.json").read_text()) for r in (one, two)]
    for name, m in meta[0]["modules"].items():
        assert m["sparsity"] == meta[1]["modules"][name]["sparsity"]
        assert m["error"] == pytest.approx(meta[1]["modules"][name]["error"], rel=1e-4), name
    # The problems were dealt across the processes; the report lists all of them, in problem order.
    for name in ("dense", "text__wanda-50", "ssgr__wanda-50"):
        a, b = (json.loads((r / "eval" / f"{name}.json").read_text())["tasks"]["ssgr_tiny_arith"] for r in (one, two))
        assert b["num_problems"] == a["num_problems"] == 6 and len(b["lengths"]) == 12
        assert b["problem_levels"] == a["problem_levels"]
        # generation wall time: each process's, summed into the task's (one process: its own)
        assert len(a["gen_seconds_per_process"]) == 1 and len(b["gen_seconds_per_process"]) == 2
        assert all(x > 0 for x in b["gen_seconds_per_process"])
        assert sum(b["gen_seconds_per_process"]) == pytest.approx(b["gen_seconds"], rel=1e-6)
        assert b["gen_wall_seconds"] == max(b["gen_seconds_per_process"])


@require_module("lm_eval")
def test_cli_calibrate_prune_evaluate_on_the_tiny_model(tmp_path, capsys):
    calib, pruned, ev = tmp_path / "calib", tmp_path / "pruned", tmp_path / "eval.json"
    assert main(["calibrate", "--model", "tiny", "--source", "tiny-arith", "--policy", "sgr", "--num_samples", "4",
                 "--num_generations", "2", "--max_new_tokens", "48", "--max_length", "128", "--min_thinking_words", "1",
                 "--save_dir", str(calib)]) == 0  # fmt: skip
    assert main(["prune", "--model_name_or_path", "tiny", "--calibration", str(calib), "--method", "sparsegpt",
                 "--sparsity", "0.5", "--save_dir", str(pruned)]) == 0  # fmt: skip
    meta = json.loads((pruned / "pruning_config.json").read_text())
    assert meta["calibration"]["policy"] == "sgr" and meta["calibration"]["rows"] == 4
    assert main(["evaluate", "--model", str(pruned), "--tasks", "ssgr_tiny_arith", "--num_samples", "2",
                 "--max_new_tokens", "48", "--limit", "4", "--output", str(ev)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "Tiny arithmetic" in out and ev.exists()
    magnitude, heat = tmp_path / "magnitude", tmp_path / "heat.png"
    assert main(["prune", "--model_name_or_path", "tiny", "--method", "magnitude", "--sparsity", "0.5",
                 "--save_dir", str(magnitude)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["analyze", "--dense", "tiny", "--model_a", str(pruned), "--model_b", str(magnitude),
                 "--num_problems", "2", "--max_new_tokens", "16", "--output", str(heat)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{") : printed.index("Heatmap written")])
    assert heat.stat().st_size > 0
    assert summary["decode_error_A"] < summary["decode_error_B"]  # SparseGPT reconstructs better than magnitude
    capsys.readouterr()
    assert main(["calibrate", "--model", "tiny", "--source", "tiny-arith", "--save_dir", "x", "--polcy", "sgr"]) == 2
    assert "hf-ssgr calibrate: unrecognized arguments: --polcy sgr" in capsys.readouterr().err
    assert main(["calibrate", "--model", "tiny", "--save_dir", "x"]) == 2
    assert "hf-ssgr calibrate: --source required." in capsys.readouterr().err


@require_module("lm_eval")
def test_moe_quickstart_runs_in_a_reduced_form(tmp_path):
    """recipes/quickstart_moe.yaml on the embedded mixture of experts, with fewer rows and problems."""
    from hf_ssgr.tiny_reasoner import MOE_MODEL_PATH

    with open(os.path.join(os.path.dirname(__file__), "..", "recipes", "quickstart_moe.yaml")) as f:
        recipe = yaml.safe_load(f)
    recipe.update(output_dir=str(tmp_path / "run"), policies=["text", "ssgr"], limit=4, num_samples=2,
                  max_new_tokens=64)  # fmt: skip
    recipe["calibration"].update(num_samples=6, num_generations=4, max_new_tokens=64, max_problems=60)
    recipe["prune"] = recipe["prune"][:2]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_recipe(str(path))
    out = tmp_path / "run"
    for variant in ("sparsegpt-2of4", "sparsegpt-2of4-alltokens"):
        meta = json.loads((out / "pruned" / "ssgr" / variant / "pruning_config.json").read_text())
        assert meta["base_model"] in ("tiny-moe", MOE_MODEL_PATH)
        assert meta["achieved_sparsity"]["targets"] == pytest.approx(0.5)
        assert meta["coverage"]["coverage_of_decoder_layers"] > 0.95
        experts = [n for n in meta["modules"] if ".mlp.experts." in n]
        assert len(experts) == 4 * 2 * 8  # every expert's two projections in each of the 4 layers
    assert set(result["pruned"]) == {f"{p}__{v}" for p in ("text", "ssgr")
                                     for v in ("sparsegpt-2of4", "sparsegpt-2of4-alltokens")}  # fmt: skip
    assert "ssgr__sparsegpt-2of4-alltokens" in (out / "report.md").read_text()


def test_varied_reasoner_loads_and_its_replies_to_one_problem_differ():
    """The second embedded reasoner: same world and tokenizer, but sampled chains of thought of one problem vary in
    length (restatements, checks, longer routes, shortcuts), and grow with difficulty."""
    import statistics

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ssgr.calibration.prompts import render_prompt
    from hf_ssgr.tiny_reasoner import VARIED_MODEL_PATH
    from hf_ssgr.utils import resolve_model

    assert resolve_model("tiny-varied") == VARIED_MODEL_PATH
    size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(VARIED_MODEL_PATH, "*.safetensors")))
    assert size <= 10 * 1024 * 1024
    model = AutoModelForCausalLM.from_pretrained(VARIED_MODEL_PATH).eval()
    tok = AutoTokenizer.from_pretrained(VARIED_MODEL_PATH)
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(MODEL_PATH).get_vocab()  # off-policy rows stay readable
    means, cvs = {}, []
    for level in (1, 3):
        for p in tr.test_problems(4, levels=(level,)):
            ids = tok(render_prompt(tok, p.problem), add_special_tokens=False)["input_ids"]
            torch.manual_seed(0)
            out = model.generate(torch.tensor([ids] * 16), do_sample=True, temperature=0.6, top_p=0.95, top_k=0,
                                 max_new_tokens=200, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
            lengths = []
            for seq in out[:, len(ids) :].tolist():
                lengths.append(seq.index(tok.eos_token_id) + 1 if tok.eos_token_id in seq else len(seq))
            cvs.append(statistics.pstdev(lengths) / statistics.mean(lengths))
            means.setdefault(level, []).append(statistics.mean(lengths))
    assert statistics.median(cvs) > 0.15  # measured 0.32 over 500 problems × 16 samples (training_log.json)
    assert statistics.mean(means[3]) > statistics.mean(means[1])
