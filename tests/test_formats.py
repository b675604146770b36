"""What an earlier version wrote still loads and resumes: pruning checkpoints, `pruning_config.json`, rollout stores and
calibration Datasets, from the fixtures of `fixtures/formats_v1/` (written by `make_fixtures.py` with that version)."""

import json
import pathlib
import shutil
import sys

import datasets
import torch
from safetensors.torch import load_file
from testing_utils import ScriptedEngine, make_calibration, make_char_tokenizer, make_tiny_model

from hf_ssgr import CalibrationConfig, OneShotPruner, PruningConfig, SSGRCalibrator

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
V1 = FIXTURES / "formats_v1"
sys.path.insert(0, str(V1))
from make_fixtures import TINY, script  # noqa: E402


def dense_model():
    model = make_tiny_model("llama", num_layers=2, **TINY)
    saved = load_file(str(V1 / "dense" / "model.safetensors"))
    assert all(torch.equal(p, saved[n]) for n, p in model.state_dict().items() if n in saved)  # same seeded model
    return model


def decoder_weights(model):
    return {n: p.detach() for n, p in model.named_parameters() if ".layers." in n and "proj" in n}


def assert_same_prune(model):
    expected = load_file(str(V1 / "pruned_decoder_weights.safetensors"))
    got = decoder_weights(model)
    assert sorted(got) == sorted(expected)
    for name, w in got.items():
        assert torch.equal(w == 0, expected[name] == 0), name  # the same masks
        torch.testing.assert_close(w, expected[name], rtol=0, atol=1e-6)


def test_an_earlier_prune_gives_the_same_weights():
    model = dense_model()
    OneShotPruner(PruningConfig(method="sparsegpt", sparsity=0.5), progress_bar=False).prune(model, make_calibration())
    assert_same_prune(model)


def test_an_earlier_checkpoint_resumes(tmp_path):
    shutil.copytree(V1 / "checkpoint-layer-000", tmp_path / "checkpoint-layer-000")
    model = dense_model()
    pruner = OneShotPruner(
        PruningConfig(method="sparsegpt", sparsity=0.5, output_dir=str(tmp_path)), progress_bar=False
    )
    pruner.prune(model, make_calibration(), resume_from_checkpoint=True)
    assert pruner.state.finished and pruner.state.layer_index == 1
    assert_same_prune(model)


def test_an_earlier_pruned_folder_loads_and_its_pruning_config_reads():
    from transformers import AutoModelForCausalLM

    from hf_ssgr.hub.cards import model_card

    model = AutoModelForCausalLM.from_pretrained(str(V1 / "pruned"))
    assert_same_prune(model)
    meta = json.loads((V1 / "pruned" / "pruning_config.json").read_text())
    assert meta["format"] == "hf-ssgr/pruning-config" and meta["version"] == 1
    assert PruningConfig.from_dict(meta["config"]).method == "sparsegpt"
    assert "SparseGPT" in str(model_card(meta))


def test_an_earlier_rollout_store_and_calibration_are_reused(tmp_path, monkeypatch):
    import hf_ssgr.calibration.calibrator as calibration_module
    from hf_ssgr.calibration.sources import load_source

    gsm8k = str(FIXTURES / "gsm8k_train_sample.jsonl")
    problems = load_source("GSM8K", path=gsm8k)
    tok = make_char_tokenizer()
    engine = ScriptedEngine(tok, script(problems["problem"], dict(zip(problems["problem"], problems["answer"]))),
                            problems["problem"])  # fmt: skip
    monkeypatch.setattr(calibration_module, "make_engine", lambda *a, **k: engine)
    shutil.copytree(V1 / "rollouts", tmp_path / "rollouts")
    cal = SSGRCalibrator(
        CalibrationConfig(
            policy="ssgr",
            num_samples=100,
            num_generations=4,
            max_length=4096,
            samples_per_round=2,
            source_path=gsm8k,
            rollouts_dir=str(tmp_path / "rollouts"),
        )  # fmt: skip
    )
    ds = cal.build(make_tiny_model("qwen2", vocab_size=128, max_position_embeddings=2048), "GSM8K", tokenizer=tok)
    assert engine.samples_generated == 0  # everything came from the store
    earlier = datasets.load_from_disk(str(V1 / "calibration"))
    assert ds["input_ids"] == earlier["input_ids"] and ds["problem_id"] == earlier["problem_id"]
    assert ds.column_names == earlier.column_names
    report = json.loads(earlier.info.description)
    assert report["policy"] == "ssgr" and report["counts"]["selected"] == len(earlier)
    # an earlier calibration Dataset prunes, and its provenance reads into the card metadata
    from hf_ssgr.hub.metadata import calibration_summary

    assert calibration_summary(earlier)["policy"] == "ssgr"
    model = make_tiny_model("qwen2", vocab_size=128, max_position_embeddings=4096)
    OneShotPruner(PruningConfig(method="wanda", sparsity=0.5), progress_bar=False).prune(model, earlier)
