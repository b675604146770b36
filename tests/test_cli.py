import json

import pytest
import torch
from testing_utils import make_calibration, make_tiny_model
from transformers import AutoModelForCausalLM

from hf_ssgr.commands.cli import main


def test_cli_prune_with_yaml_and_flag_override(tmp_path):
    model_dir = tmp_path / "dense"
    make_tiny_model("qwen2").save_pretrained(model_dir)
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"input_ids": r, "prompt_length": 4}) + "\n" for r in make_calibration()))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model_name_or_path: {model_dir}\nmethod: wanda\nsparsity: 0.5\nsparsity_type: '4:8'\n")
    out = tmp_path / "pruned"

    rc = main(
        [
            "prune",
            "--config",
            str(recipe),
            "--calibration",
            str(calib),
            "--save_dir",
            str(out),
            "--sparsity_type",
            "2:4",
        ]
    )

    assert rc == 0
    pruned = AutoModelForCausalLM.from_pretrained(out)
    w = pruned.model.layers[0].mlp.down_proj.weight
    assert bool(((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) == 2).all())  # the flag won over the YAML
    meta = json.load(open(out / "pruning_config.json"))
    assert meta["config"]["method"] == "wanda" and meta["config"]["sparsity_type"] == "2:4"
    assert len(meta["modules"]) == 14 and meta["layers"][0]["sparsity"] == 0.5
    assert "hf-ssgr prune --config" in (out / "README.md").read_text()
    assert torch.isfinite(pruned(torch.tensor([make_calibration()[0]])).logits).all()


def test_cli_usage(capsys):
    assert main([]) == 0
    assert main(["frobnicate"]) == 2
    assert "usage: hf-ssgr" in capsys.readouterr().out


def test_every_prune_recipe_parses():
    import pathlib

    from hf_ssgr.commands.prune import make_parser
    from hf_ssgr.pruning.config import PRUNING_METHODS

    recipes = sorted((pathlib.Path(__file__).resolve().parents[1] / "recipes").glob("prune_*.yaml"))
    assert recipes
    for recipe in recipes:
        args, config = make_parser().parse(["--config", str(recipe)])
        assert config.method in PRUNING_METHODS, recipe


def test_cli_tasks_path(capsys):
    import os

    assert main(["tasks-path"]) == 0
    path = capsys.readouterr().out.strip()
    assert os.path.isfile(os.path.join(path, "ssgr_reasoning.yaml"))


# ----------------------------------------------------------------------------------------------------------------
# One grammar for every command


COMMAND_FLAGS = {
    "prune": ["--model_name_or_path", "--calibration", "--save_dir", "--method", "--sparsity_type", "--alps_rho"],
    "calibrate": ["--model", "--source", "--save_dir", "--policy", "--num_generations", "--tau"],
    "evaluate": ["--model", "--output", "--baseline", "--tasks", "--num_samples", "--max_new_tokens", "--data_files"],
    "analyze": ["--dense", "--model_a", "--model_b", "--output", "--num_problems"],
    "push": ["--model", "--repo_id", "--report", "--baseline", "--private", "--create_pr"],
    "run": ["--output_dir", "--limit", "--policies", "--prune", "--num_samples"],
    "tasks-path": [],
}


@pytest.mark.parametrize("command", sorted(COMMAND_FLAGS))
def test_every_command_has_a_typed_help_and_refuses_unknown_flags(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hf-ssgr {command}") and "--config FILE.yaml" in out
    for flag in COMMAND_FLAGS[command]:
        assert flag in out, flag
    assert main([command, "--privte", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hf-ssgr {command}: unrecognized arguments: --privte") and "\n" not in err
    assert err.endswith(f"(see hf-ssgr {command} --help)")


CONFIG_CASES = {  # a YAML of the command's own fields, and what the command then says is still missing
    "push": ("model: from-the-yaml\n", "--repo_id required."),
    "evaluate": ("model: from-the-yaml\n", "Model path not found: 'from-the-yaml'"),
    "analyze": ("dense: from-the-yaml\n", "--model_a --model_b --output required."),
    "calibrate": ("model: from-the-yaml\n", "--source --save_dir required."),
    "prune": ("model_name_or_path: from-the-yaml\nmethod: wanda\n", "--calibration is required."),
}


@pytest.mark.parametrize("command", sorted(CONFIG_CASES))
def test_every_command_honours_config(command, tmp_path, capsys):
    text, expected = CONFIG_CASES[command]
    config = tmp_path / "args.yaml"
    config.write_text(text)
    assert main([command, "--config", str(config)]) == 2
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hf-ssgr")]
    assert said == [f"hf-ssgr {command}: {expected}"] or (len(said) == 1 and expected in said[0]), said
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: x\n")
    assert main([command, "--config", str(bad)]) == 2
    assert f"--config {bad}: unknown field(s) ['modle']" in capsys.readouterr().err
    listed = tmp_path / "list.yaml"
    listed.write_text("- model: x\n")
    assert main([command, "--config", str(listed)]) == 2
    assert "must be a YAML mapping of flag names, not a list" in capsys.readouterr().err


def test_config_with_an_equals_sign_is_read_and_an_abbreviation_is_refused(tmp_path, capsys):
    config = tmp_path / "push.yaml"
    config.write_text(f"model: {tmp_path / 'nowhere'}\nrepo_id: me/x\n")
    assert main(["push", f"--config={config}"]) == 2
    assert f"{tmp_path / 'nowhere'} has no pruning_config.json" in capsys.readouterr().err  # the file was read
    assert main(["push", "--conf", str(config)]) == 2
    assert "unrecognized arguments: --conf" in capsys.readouterr().err
    assert main(["push", "--config", str(config), f"--config={config}"]) == 2
    assert "--config given 2 times" in capsys.readouterr().err
    assert main(["push", "--model", "x", "--repo", "me/x"]) == 2  # no abbreviation passes for a flag (--repo_id)
    assert "unrecognized arguments: --repo" in capsys.readouterr().err


def test_push_config_values_are_used_and_a_flag_overrides_them(tmp_path, capsys):
    config = tmp_path / "push.yaml"
    config.write_text(f"model: {tmp_path / 'nowhere'}\nrepo_id: me/x\n")
    assert main(["push", "--config", str(config)]) == 2
    assert f"{tmp_path / 'nowhere'} has no pruning_config.json" in capsys.readouterr().err
    assert main(["push", "--config", str(config), "--model", str(tmp_path / "elsewhere")]) == 2
    assert f"{tmp_path / 'elsewhere'} has no pruning_config.json" in capsys.readouterr().err


def test_errors_are_one_line_without_a_traceback(tmp_path, capsys):
    calib = tmp_path / "calib.jsonl"
    calib.write_text(json.dumps({"input_ids": [1, 2, 3]}) + "\n")

    def prune(model, calibration, *more):
        return ["prune", "--model_name_or_path", model, "--calibration", calibration, "--save_dir", "o", *more]

    missing = str(tmp_path / "missing")
    cases = [
        (prune(missing, str(calib)), f"Model path not found: '{missing}'"),
        (prune("tiny", str(tmp_path / "nope.jsonl")), "no such file"),
        (prune("tiny", str(calib), "--sparsity", "1.5"), "sparsity=1.5 is outside [0, 1)"),
        (["evaluate", "--model", "tiny", "--num_samples", "0"], "num_samples must be an integer >= 1"),
        (["evaluate", "--model", "tiny", "--tasks", "gsm8k_typo"], "Unknown task 'gsm8k_typo'"),
        (["calibrate", "--model", "tiny", "--source", "tiny-arith", "--tau", "abc"], "invalid float value: 'abc'"),
        (["run", str(tmp_path / "missing.yaml")], "missing.yaml"),
        (["run"], "usage: hf-ssgr run RECIPE.yaml"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        said = [line for line in err.splitlines() if line.startswith("hf-ssgr")]  # not the progress bars
        assert "Traceback" not in err and len(said) == 1, (argv, err)
        assert said[0].startswith(f"hf-ssgr {argv[0]}: ") and expected in said[0], (argv, err)


def test_run_flags_override_the_recipe_with_types(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: tiny\noutput_dir: {tmp_path / 'out'}\nsource: tiny-arith\npolicies: [prompt_only]\n"
                      "tasks: [ssgr_tiny_arith]\nprune: [{method: magnitude, sparsity: 0.5}]\n")  # fmt: skip
    assert main(["run", str(recipe), "--num_samples", "0"]) == 2
    assert "num_samples must be an integer >= 1" in capsys.readouterr().err
    assert main(["run", str(recipe), "--prune", "[{method: sparsgpt, sparsity: 0.5}]"]) == 2
    assert "Unknown pruning method 'sparsgpt'" in capsys.readouterr().err
    assert main(["run", str(recipe), "--policies", "sssgr"]) == 2
    assert "Unknown policy 'sssgr'" in capsys.readouterr().err
