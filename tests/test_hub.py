"""Saving and sharing: checkpoints with pruning metadata, model/dataset cards, push_to_hub.

The Hub cannot be reached from the test machines, so the upload tests run the real code up to huggingface_hub's
`HfApi.create_repo` / `HfApi.upload_folder` calls and replace those two methods at that boundary (recording what
would have been uploaded).
"""

import json
import os

import datasets
import pytest
import torch
from huggingface_hub import DatasetCard, HfApi, ModelCard
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results
from testing_utils import make_calibration, make_char_tokenizer, make_tiny_model
from transformers import AutoModelForCausalLM

from hf_ssgr import OneShotPruner, PruningConfig
from hf_ssgr.evaluation.evaluate import EvalReport, TaskResult
from hf_ssgr.hub.cards import calibration_card, model_card
from hf_ssgr.hub.metadata import pruning_metadata
from hf_ssgr.hub.upload import push_calibration_to_hub, push_to_hub, save_pruned
from hf_ssgr.utils import PRUNING_CONFIG_NAME

TOKEN = "hf_SecretTokenValue1234567890abcdef"
BASE = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"


def report(name, accs, lengths=(100.0,)):
    tasks = {
        t: TaskResult(t, t.upper(), 10, 4, a, min(1.0, a * 1.5), lengths[0], lengths[0], 0.05, 2.0, [])
        for t, a in accs.items()
    }
    return EvalReport(name, tasks, {"num_samples": 4, "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 32768})


def calibration_dataset():
    rows = make_calibration(num_rows=4)
    desc = {
        "model": BASE,
        "rollout_model": BASE,
        "source": "MathR",
        "policy": "ssgr",
        "config": {
            "policy": "ssgr",
            "num_samples": 4,
            "max_length": 2048,
            "tau": 0.75,
            "num_generations": 16,
            "temperature": 0.6,
            "top_p": 0.95,
            "max_new_tokens": 32768,
            "engine": "vllm",
        },  # fmt: skip
        "counts": {
            "problems_visited": 9,
            "too_easy": 3,
            "selected": 4,
            "responses_generated": 120,
            "tokens_generated": 345678,
            "generated_to_exhaustive_ratio": 0.25,
        },  # fmt: skip
        "rows": 4,
        "seconds": 12.0,
    }
    data = {
        "input_ids": rows,
        "prompt_length": [4] * 4,
        "problem_id": [f"MATH/{i}" for i in range(4)],
        "source": ["MATH"] * 4,
        "policy": ["ssgr"] * 4,
        "model": [BASE] * 4,
    }
    return datasets.Dataset.from_dict(data, info=datasets.DatasetInfo(description=json.dumps(desc)))


@pytest.fixture(scope="module")
def pruned():
    model = make_tiny_model("qwen2")
    pruner = OneShotPruner(PruningConfig(method="sparsegpt", sparsity=0.5, sparsity_type="2:4", layers="0"))
    pruner.prune(model, make_calibration())
    return model, pruner


def test_save_load_round_trip_keeps_exact_zeros_and_outputs(tmp_path, pruned):
    model, pruner = pruned
    tok = make_char_tokenizer()
    out = save_pruned(model, str(tmp_path / "ckpt"), tokenizer=tok, pruner=pruner, calibration=calibration_dataset())
    assert sorted(os.listdir(out)) == sorted(
        ["config.json", "generation_config.json", "model.safetensors", PRUNING_CONFIG_NAME, "README.md",
         "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
    )  # fmt: skip
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    for (n, p), (n2, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert n == n2 and torch.equal(p, q)
        assert torch.equal(p == 0, q == 0)
    ids = torch.tensor([make_calibration(num_rows=1)[0]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    meta = json.load(open(os.path.join(out, PRUNING_CONFIG_NAME)))
    assert meta["method"] == "sparsegpt" and meta["sparsity_type"] == "2:4" and meta["scope"]["layers"] == [0]
    assert meta["layers"][0]["sparsity"] == 0.5 and meta["layers"][0]["reconstruction_error"] > 0
    assert meta["layers"][1]["reconstruction_error"] is None  # layer 1 was not in scope
    assert meta["calibration"]["policy"] == "ssgr" and meta["calibration"]["rows"] == 4
    assert meta["calibration"]["generation"]["model"] == BASE
    assert meta["calibration"]["generation"]["num_generations"] == 16
    assert meta["calibration"]["max_tokens"] == 24
    assert {"torch", "transformers", "hf-ssgr"} <= set(meta["versions"])
    assert set(meta["modules"]) == set(pruner.state.module_metrics)
    # save again over it: replaced atomically, no temporary folder left behind
    save_pruned(model, out, tokenizer=tok, pruner=pruner)
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []


def test_failed_save_leaves_nothing_half_written(tmp_path, pruned, monkeypatch):
    model, pruner = pruned

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(type(model), "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        save_pruned(model, str(tmp_path / "ckpt"), pruner=pruner)
    assert os.listdir(tmp_path) == []


def test_model_card_renders_parses_and_validates(tmp_path, pruned):
    model, pruner = pruned
    meta = pruning_metadata(model, pruner.config, pruner.state.module_metrics, calibration_dataset(), BASE)
    dense = report("dense", {"ssgr_gsm8k": 0.9, "ssgr_aime": 0.5}, lengths=(3000.0,))
    sparse = report("pruned", {"ssgr_gsm8k": 0.72, "ssgr_aime": 0.3}, lengths=(4200.0,))
    card = model_card(meta, sparse, dense)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data
    assert data.base_model == BASE and data.library_name == "transformers"
    assert {"pruning", "sparsity", "reasoning", "sparsegpt"} <= set(data.tags)
    assert {"openai/gsm8k", "HuggingFaceH4/aime_2024", "math-ai/aime25"} <= set(data.datasets)
    assert {"openai/gsm8k", "EleutherAI/hendrycks_math"} <= set(data.datasets)  # MathR calibration
    # the model-index round-trips through huggingface_hub's own parser and validation
    model_index = data.to_dict()["model-index"]
    name, results = model_index_to_eval_results(model_index)
    assert eval_results_to_model_index(name, results) == model_index
    by_dataset = {r.dataset_type: r.metric_value for r in results}
    assert by_dataset == {"openai/gsm8k": 72.0, "HuggingFaceH4/aime_2024": 30.0}
    body = loaded.text
    assert "80.0%" in body  # recovery 72/90
    assert "60.0%" in body  # recovery 30/50
    assert "3000" in body and "4200" in body  # mean length, dense vs pruned
    assert "pruned generation s |" in body and "| 2.0 | 2.0 |" in body  # generation time, dense and pruned
    sparse.tasks["ssgr_gsm8k"].gen_seconds_per_process = [1.25, 0.75]
    assert "| 2.0 (1.2 + 0.8) |" in model_card(meta, sparse, dense).text  # several processes: each one's
    assert "hf-ssgr prune" in body and "sparsity_type: '2:4'" in body
    assert "vLLM serves it as a dense model" in body


def test_calibration_card(tmp_path):
    card = calibration_card(calibration_dataset(), rollouts=True)
    card.save(tmp_path / "README.md")
    loaded = DatasetCard.load(tmp_path / "README.md")
    assert "calibration" in loaded.data.tags and loaded.data.task_categories == ["text-generation"]
    assert set(loaded.data.source_datasets) == {"openai/gsm8k", "EleutherAI/hendrycks_math"}
    text = loaded.text
    for needle in ("| tau | 0.75 |", "| num_generations | 16 |", "| too_easy | 3 |", "345678 generated tokens",
                   "25.0% of sampling every problem", "| MIT |", "rollouts/"):  # fmt: skip
        assert needle in text, needle


class FakeHub:
    """Stands in for the two HfApi calls that would reach the Hub; records what would be committed."""

    def __init__(self, monkeypatch, fail_create=None):
        self.created, self.commits = [], []
        hub = self

        def create_repo(api, repo_id, repo_type=None, private=False, exist_ok=False, **kw):
            if fail_create is not None:
                raise fail_create
            hub.created.append((repo_id, repo_type, private, exist_ok))

        def upload_folder(api, repo_id, folder_path, repo_type=None, commit_message=None, create_pr=False, **kw):
            files = {}
            for root, _, names in os.walk(folder_path):
                for n in names:
                    path = os.path.join(root, n)
                    with open(path, "rb") as f:
                        files[os.path.relpath(path, folder_path)] = f.read()
            hub.commits.append({"repo_id": repo_id, "repo_type": repo_type, "files": files, "create_pr": create_pr,
                                "token": api.token, "message": commit_message})  # fmt: skip
            return {"commit_url": f"https://huggingface.co/{repo_id}/commit/0"}

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)


def test_push_to_hub_makes_one_commit_and_never_writes_the_token(monkeypatch, pruned, tmp_path):
    model, pruner = pruned
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub = FakeHub(monkeypatch)
    push_to_hub(
        model, make_char_tokenizer(), "me/tiny-2of4", calibration=calibration_dataset(),
        report=report("p", {"ssgr_gsm8k": 0.5}), baseline=report("d", {"ssgr_gsm8k": 0.6}), pruner=pruner,
        private=True, create_pr=True,
    )  # fmt: skip
    assert hub.created == [("me/tiny-2of4", "model", True, True)]
    (commit,) = hub.commits
    assert commit["create_pr"] and commit["token"] == TOKEN  # the token is used for the call ...
    files = commit["files"]
    assert {"model.safetensors", "config.json", PRUNING_CONFIG_NAME, "README.md", "eval_results.json"} <= set(files)
    for name, content in files.items():  # ... and written nowhere
        assert TOKEN.encode() not in content, name
    # the uploaded folder is a loadable checkpoint
    folder = tmp_path / "pulled"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert torch.equal(loaded.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)
    assert ModelCard.load(folder / "README.md").data.model_name == "tiny-2of4"


def test_push_without_token_or_write_access_uploads_nothing(monkeypatch, pruned):
    from huggingface_hub.errors import HfHubHTTPError

    model, pruner = pruned
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")  # no stored login
    hub = FakeHub(monkeypatch)
    with pytest.raises(PermissionError, match="needs a token with write access.*hf auth login"):
        push_to_hub(model, None, "me/x", pruner=pruner)
    assert hub.created == [] and hub.commits == []

    response = type("R", (), {"status_code": 403, "headers": {}, "request": None})()
    denied = HfHubHTTPError("403 Forbidden", response=response)
    hub = FakeHub(monkeypatch, fail_create=denied)
    with pytest.raises(PermissionError, match=r"Cannot create or write the model repo 'someone/x' \(HTTP 403\)") as e:
        push_to_hub(model, None, "someone/x", token=TOKEN, pruner=pruner)
    assert TOKEN not in str(e.value)
    assert hub.commits == []
    with pytest.raises(ValueError, match="namespace/name"):
        push_to_hub(model, None, "no-namespace", token=TOKEN)


def test_the_pruned_model_carries_its_record_to_save_and_push(monkeypatch, pruned, tmp_path):
    """The documented flow: calibrate -> prune -> push, with no pruner= in between; explicit arguments still win."""
    model, pruner = pruned
    assert model.hf_ssgr_pruning["config"] is pruner.config
    with_pruner = json.loads(open(os.path.join(save_pruned(model, str(tmp_path / "a"), pruner=pruner),
                                               PRUNING_CONFIG_NAME)).read())  # fmt: skip
    without = json.loads(open(os.path.join(save_pruned(model, str(tmp_path / "b")), PRUNING_CONFIG_NAME)).read())
    assert {k: v for k, v in without.items() if k != "versions"} == {
        k: v for k, v in with_pruner.items() if k != "versions"
    }
    other = PruningConfig(method="wanda", sparsity=0.3)
    given = json.loads(open(os.path.join(save_pruned(model, str(tmp_path / "c"), config=other),
                                         PRUNING_CONFIG_NAME)).read())  # fmt: skip
    assert given["method"] == "wanda" and given["sparsity"] == 0.3  # an explicit config wins over the record
    hub = FakeHub(monkeypatch)
    push_to_hub(model, make_char_tokenizer(), "me/tiny", token=TOKEN)
    pushed = json.loads(hub.commits[0]["files"][PRUNING_CONFIG_NAME])
    assert pushed["method"] == "sparsegpt" and pushed["modules"].keys() == with_pruner["modules"].keys()


def test_push_runs_on_the_main_process_only(monkeypatch, pruned):
    import hf_ssgr.hub.upload as hub_module

    model, pruner = pruned
    hub = FakeHub(monkeypatch)
    monkeypatch.setattr(hub_module, "_is_main_process", lambda: False)
    assert push_to_hub(model, None, "me/x", token=TOKEN, pruner=pruner) is None
    assert hub.commits == []


def test_push_calibration_with_rollouts(monkeypatch, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "meta.json").write_text(json.dumps({"model": BASE}))
    (store / "rollouts.jsonl").write_text('{"problem_id": "MATH/0"}\n')
    hub = FakeHub(monkeypatch)
    push_calibration_to_hub(calibration_dataset(), "me/calib", rollouts_dir=str(store), token=TOKEN)
    (commit,) = hub.commits
    assert commit["repo_type"] == "dataset"
    files = commit["files"]
    assert set(files) == {"README.md", "data/train-00000-of-00001.parquet", "rollouts/meta.json",
                          "rollouts/rollouts.jsonl"}  # fmt: skip
    pulled = tmp_path / "pulled"
    for name, content in files.items():
        (pulled / name).parent.mkdir(parents=True, exist_ok=True)
        (pulled / name).write_bytes(content)
    ds = datasets.load_dataset(str(pulled), split="train")  # the layout load_dataset(repo_id) reads
    assert ds["input_ids"] == calibration_dataset()["input_ids"]
    assert all(TOKEN.encode() not in c for c in files.values())


def test_metadata_takes_one_shape_and_names_come_from_short_name(pruned, tmp_path):
    model, pruner = pruned
    with pytest.raises(TypeError, match="needs the PruningConfig the model was pruned with, got dict"):
        pruning_metadata(model, pruner.config.to_dict(), pruner.state.module_metrics)
    with pytest.raises(TypeError, match="carries no pruning record.*pass the OneShotPruner as pruner="):
        save_pruned(make_tiny_model("qwen2"), str(tmp_path / "x"))  # a model that was never pruned
    meta = pruning_metadata(model, pruner.config, pruner.state.module_metrics, base_model=BASE)
    assert model_card(meta).data.model_name == f"DeepSeek-R1-Distill-Qwen-7B-{pruner.config.short_name}"
    two_four = PruningConfig(method="wanda", sparsity=0.5, sparsity_type="2:4", layers="0,1")
    assert two_four.short_name == "wanda-2of4-0_1"
    assert PruningConfig(method="sparsegpt", token_mask="response").short_name == "sparsegpt-50-response"
