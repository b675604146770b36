import json

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

    from hf_ssgr.commands.cli import PruneArguments, _parse
    from hf_ssgr.pruning.config import PRUNING_METHODS, PruningConfig

    recipes = sorted((pathlib.Path(__file__).resolve().parents[1] / "recipes").glob("prune_*.yaml"))
    assert recipes
    for recipe in recipes:
        args, config = _parse((PruneArguments, PruningConfig), ["--config", str(recipe)])
        assert config.method in PRUNING_METHODS, recipe


def test_cli_tasks_path(capsys):
    import os

    assert main(["tasks-path"]) == 0
    path = capsys.readouterr().out.strip()
    assert os.path.isfile(os.path.join(path, "ssgr_reasoning.yaml"))
