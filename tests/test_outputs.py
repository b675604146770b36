"""What a run writes: outputs refused before any work when they cannot be written, nothing stray in a finished folder,
a full disk or a damaged checkpoint said as such, a changed source noticed on resume, no local path in anything
published, the umask honoured, and bad input named."""

import errno
import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file
from testing_utils import make_calibration, make_char_tokenizer, make_tiny_model, stop_after

from hf_ssgr import OneShotPruner, PruningConfig
from hf_ssgr.commands.cli import main
from hf_ssgr.hub.upload import push_to_hub, save_pruned
from hf_ssgr.pruning.streaming import partial_dir
from hf_ssgr.utils import check_output, public_name, public_text


def _pruner(**config):
    return OneShotPruner(PruningConfig(**{"method": "sparsegpt", "sparsity": 0.5, **config}), progress_bar=False)


@pytest.fixture
def src(tmp_path):
    """A saved tiny model (4 layers) and its calibration rows as a JSON-lines file."""
    model = make_tiny_model("qwen2", num_layers=4)
    model.save_pretrained(tmp_path / "src")
    make_char_tokenizer().save_pretrained(tmp_path / "src")
    rows = make_calibration(4, 16)
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"input_ids": r}) + "\n" for r in rows))
    return tmp_path / "src", calib, rows


# ----------------------------------------------------------------------------------------------------------------
# 1, 2: outputs checked before any work


def _no_hidden_copies(folder) -> bool:
    return not [n for n in os.listdir(folder) if n.startswith(".") and (".old-" in n or ".tmp-" in n)]


def test_an_existing_file_as_output_is_refused_before_any_work(src, tmp_path, capsys, monkeypatch):
    model_dir, calib, rows = src
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    loaded = []
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained",
                        lambda *a, **k: loaded.append(a) or pytest.fail("loaded a model"))  # fmt: skip
    for argv in (
        ["prune", "--model_name_or_path", str(model_dir), "--calibration", str(calib), "--save_dir", str(afile)],
        ["prune", "--model_name_or_path", str(model_dir), "--calibration", str(calib), "--save_dir", str(afile),
         "--stream", "false"],
        ["calibrate", "--model", str(model_dir), "--source", "tiny-arith", "--save_dir", str(afile)],
        ["quantize", str(model_dir), str(afile)],
    ):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"{afile} is an existing file, not a folder" in err and "unexpected" not in err, (argv, err)
    monkeypatch.undo()
    model = make_tiny_model("qwen2")
    pruner = _pruner()
    pruner.prune(model, rows)
    with pytest.raises(FileExistsError, match="is an existing file, not a folder"):
        save_pruned(model, str(afile), pruner=pruner)
    assert afile.read_text() == "keep me" and _no_hidden_copies(tmp_path) and not loaded


def test_an_unwritable_output_is_refused_before_generating_or_pruning(src, tmp_path, capsys, monkeypatch):
    model_dir, calib, _ = src
    import hf_ssgr.calibration.calibrator as calibrator
    import hf_ssgr.evaluation.evaluate as evaluate_module

    monkeypatch.setattr(calibrator.SSGRCalibrator, "_rows", lambda *a, **k: pytest.fail("generated"))
    unwritable = "/proc/hf_ssgr_out"  # no file can be created in /proc, root or not
    assert main(["calibrate", "--model", str(model_dir), "--source", "tiny-arith", "--save_dir", unwritable]) == 2
    assert "nothing can be written in /proc" in capsys.readouterr().err
    under_a_file = tmp_path / "afile"
    under_a_file.write_text("x")
    assert main(["prune", "--model_name_or_path", str(model_dir), "--calibration", str(calib), "--save_dir",
                 str(under_a_file / "out")]) == 2  # fmt: skip
    assert "is a file, so nothing can be written under it" in capsys.readouterr().err
    folder = tmp_path / "a_folder"
    folder.mkdir()
    monkeypatch.setattr(evaluate_module, "ReasoningLM", lambda *a, **k: pytest.fail("evaluated"), raising=False)
    assert main(["evaluate", "--model", str(model_dir), "--output", str(folder)]) == 2
    assert f"--output {folder} is an existing folder: give a file path" in capsys.readouterr().err
    with pytest.raises(PermissionError, match="nothing can be written in /proc"):
        check_output(unwritable, "--save_dir")


def test_folders_get_the_permissions_of_the_umask(src, tmp_path):
    model_dir, _, rows = src
    old = os.umask(0o022)
    try:
        model = make_tiny_model("qwen2")
        pruner = _pruner()
        pruner.prune(model, rows)
        save_pruned(model, str(tmp_path / "saved"), pruner=pruner)
        _pruner().prune_pretrained(str(model_dir), rows, str(tmp_path / "streamed"))
    finally:
        os.umask(old)
    for name in ("saved", "streamed"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o755, name


# ----------------------------------------------------------------------------------------------------------------
# 3, 4, 5: streamed runs


def test_a_shard_half_written_by_a_killed_run_is_not_in_the_finished_folder(src, tmp_path):
    model_dir, _, rows = src
    first = OneShotPruner(PruningConfig(method="sparsegpt", sparsity=0.5), callbacks=[stop_after(0)], progress_bar=False)
    partial = first.prune_pretrained(str(model_dir), rows, str(tmp_path / "out"))
    stray = os.path.join(partial, "model-00002-of-00005.safetensors.999999999.tmp")  # a process that is gone
    with open(stray, "wb") as f:
        f.write(b"\0" * 74864)
    _pruner().prune_pretrained(str(model_dir), rows, str(tmp_path / "out"))
    files = sorted(os.listdir(tmp_path / "out"))
    assert not [f for f in files if f.endswith(".tmp") or f.startswith(".")], files
    assert [f for f in files if f.endswith(".safetensors")] == [f"model-0000{i}-of-00005.safetensors" for i in range(1, 6)]


def test_a_full_disk_is_said_with_what_is_needed_and_the_run_resumes(src, tmp_path, monkeypatch):
    model_dir, _, rows = src
    import safetensors.torch

    original = safetensors.torch.save_file
    calls = []

    def full(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 3:
            with open(path, "wb") as f:
                f.write(b"\0" * 1000)  # part of the file is written, then the disk is full
            raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return original(tensors, path, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError, match=r"No space left on device writing .*GiB are needed there and .*GiB are free\. "
                                      r"Free some space and run the same command again: the 2 layers") as err:  # fmt: skip
        _pruner().prune_pretrained(str(model_dir), rows, str(tmp_path / "out"))
    assert err.value.errno == errno.ENOSPC
    partial = partial_dir(str(tmp_path / "out"))
    assert not [f for f in os.listdir(partial) if f.endswith(".tmp")]
    monkeypatch.setattr(safetensors.torch, "save_file", original)
    _pruner().prune_pretrained(str(model_dir), rows, str(tmp_path / "out"))  # room again: it finishes
    assert (tmp_path / "out" / "model.safetensors.index.json").exists() and not os.path.exists(partial)


def test_a_full_disk_in_memory_leaves_nothing(tmp_path, monkeypatch):
    import hf_ssgr.hub.upload as upload

    model = make_tiny_model("qwen2")
    pruner = _pruner()
    pruner.prune(model, make_calibration(4, 16))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(upload, "write_checkpoint_files", full)
    with pytest.raises(OSError, match=r"No space left on device writing .*out: about .* GiB are needed there") as err:
        save_pruned(model, str(tmp_path / "out"), pruner=pruner)
    assert "nothing was written" in str(err.value) and os.listdir(tmp_path) == []


def test_a_checkpoint_with_nan_weights_leaves_no_unfinished_folder(tmp_path):
    model = make_tiny_model("qwen2", num_layers=3)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "src")
    from hf_ssgr import NonFiniteActivationError

    with pytest.raises(NonFiniteActivationError, match="checkpoint is damaged.*was removed: it could never finish"):
        _pruner().prune_pretrained(str(tmp_path / "src"), make_calibration(4, 16), str(tmp_path / "out"))
    assert not os.path.exists(partial_dir(str(tmp_path / "out"))) and not (tmp_path / "out").exists()


def test_a_source_changed_since_the_unfinished_run_is_noticed(src, tmp_path):
    model_dir, _, rows = src
    first = OneShotPruner(PruningConfig(method="sparsegpt", sparsity=0.5), callbacks=[stop_after(0)], progress_bar=False)
    first.prune_pretrained(str(model_dir), rows, str(tmp_path / "out"))
    shard = next(p for p in os.listdir(model_dir) if p.endswith(".safetensors"))
    tensors = load_file(model_dir / shard)
    key = next(k for k in tensors if "layers.3.mlp.down_proj" in k)
    tensors[key] = tensors[key] + 1.0  # one tensor changed in place: the same size and layout
    before = os.path.getsize(model_dir / shard)
    save_file(tensors, model_dir / shard, metadata={"format": "pt"})
    assert os.path.getsize(model_dir / shard) == before
    with pytest.raises(ValueError, match=f"the source shards changed since: {shard}.*restart"):
        _pruner().prune_pretrained(str(model_dir), rows, str(tmp_path / "out"))
    _pruner().prune_pretrained(str(model_dir), rows, str(tmp_path / "out"), restart=True)
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()


# ----------------------------------------------------------------------------------------------------------------
# 6: --resume is safe the first time


def test_resume_on_a_fresh_in_memory_run_starts_at_the_first_layer(src, tmp_path, capsys):
    model_dir, calib, _ = src
    argv = ["prune", "--model_name_or_path", str(model_dir), "--calibration", str(calib), "--save_dir",
            str(tmp_path / "out"), "--stream", "false", "--resume", "--output_dir", str(tmp_path / "ckpt")]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "pruning_config.json").exists()
    assert main(argv) == 0  # and again, now resuming from the finished checkpoints


# ----------------------------------------------------------------------------------------------------------------
# 7: no local path published


def test_nothing_uploaded_names_a_local_path(tmp_path, monkeypatch):
    from test_hub import FakeHub

    home = tmp_path / "home" / "someone"
    models = home / "models"
    (models / "base").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    model = make_tiny_model("qwen2", vocab_size=len(make_char_tokenizer()), max_position_embeddings=512)
    model.save_pretrained(models / "base")
    tok = make_char_tokenizer()
    tok.save_pretrained(models / "base")
    from hf_ssgr import CalibrationConfig, SSGRCalibrator

    fixtures = os.path.join(os.path.dirname(__file__), "fixtures")
    calib = SSGRCalibrator(CalibrationConfig(policy="rac", num_samples=2, max_new_tokens=4, max_length=256,
                                             source_path=os.path.join(fixtures, "gsm8k_train_sample.jsonl"),
                                             rollouts_dir=str(home / "rollouts"))).build(str(models / "base"), "GSM8K")  # fmt: skip
    assert set(calib["model"]) == {"base"}
    pruner = _pruner(output_dir=str(home / "ckpt"))
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(models / "base")
    pruner.prune(loaded, calib)
    hub = FakeHub(monkeypatch)
    push_to_hub(loaded, tok, "me/x", calibration=calib, pruner=pruner, token="hf_x", base_model=str(models / "base"),
                command=f"hf-ssgr prune --model_name_or_path {models / 'base'} --save_dir={home / 'out'}")  # fmt: skip
    from hf_ssgr.hub.upload import push_calibration_to_hub

    push_calibration_to_hub(calib, "me/calib", rollouts_dir=str(home / "rollouts"), token="hf_x")
    needles = [str(tmp_path).encode(), str(home).encode(), b"/home/", b"someone"]
    for commit in hub.commits:
        for name, content in commit["files"].items():
            if name.endswith((".safetensors", ".parquet")) or name.startswith("tokenizer"):
                assert str(home).encode() not in content, name
                continue
            for needle in needles:
                assert needle not in content, (commit["repo_id"], name, needle)


def test_public_names_keep_hub_ids_and_drop_local_paths():
    assert public_name("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B") == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert public_name("/home/u/models/r1-7b/") == "r1-7b" and public_name("~/m/x") == "x"
    assert public_name("/root/.cache/huggingface/hub/models--Qwen--Qwen3-8B/snapshots/0123abcd") == "Qwen/Qwen3-8B"
    assert public_text("run --a /home/u/x --b=/tmp/y https://h.co/a/b 1/3 tokens/s") == (
        "run --a x --b=y https://h.co/a/b 1/3 tokens/s"
    )


# ----------------------------------------------------------------------------------------------------------------
# 9-12: bad input named


def test_plan_refuses_negative_sizes(capsys, tmp_path):
    from hf_ssgr.pruning.memory import estimate_prune_memory

    config = {"model_type": "qwen2", "hidden_size": -64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 128, "vocab_size": 100}  # fmt: skip
    with pytest.raises(ValueError, match="hidden_size must be a whole number >= 1, got -64"):
        estimate_prune_memory(config, 8, 128)
    with pytest.raises(ValueError, match="num_rows must be a whole number >= 1"):
        estimate_prune_memory({**config, "hidden_size": 64}, -1, 128)
    assert main(["plan", "--model_name_or_path", "r1-distill-qwen-7b", "--num_samples", "8", "--seq_len", "-5"]) == 2
    assert "--num_samples and --seq_len must be at least 1" in capsys.readouterr().err
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps(config))
    assert main(["plan", "--model_config", str(bad), "--num_samples", "8", "--seq_len", "64"]) == 2
    assert "hidden_size must be a whole number >= 1, got -64" in capsys.readouterr().err


def test_a_misspelt_dtype_is_named_with_the_valid_ones(src, tmp_path, capsys):
    model_dir, calib, _ = src
    assert main(["prune", "--model_name_or_path", str(model_dir), "--calibration", str(calib), "--save_dir",
                 str(tmp_path / "out"), "--torch_dtype", "float33"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "--torch_dtype 'float33' is not a dtype" in err and "bfloat16, float16, float32" in err
    assert "unexpected" not in err and not (tmp_path / "out").exists()


def test_an_unreachable_hub_is_said_as_such(monkeypatch):
    from huggingface_hub import HfApi

    model = make_tiny_model("qwen2")
    pruner = _pruner()
    pruner.prune(model, make_calibration(4, 16))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match=r"The Hub cannot be reached \(HF_HUB_OFFLINE=1 is set\).*nothing was uploaded"):
        push_to_hub(model, None, "me/x", token="hf_fake", pruner=pruner)

    class Unreachable(Exception):
        pass

    Unreachable.__module__ = "httpx"
    Unreachable.__name__ = "ConnectError"

    def fail(*args, **kwargs):
        raise Unreachable("[Errno -2] Name or service not known")

    monkeypatch.setattr(HfApi, "create_repo", fail)
    with pytest.raises(ConnectionError, match=r"The Hub cannot be reached .*Name or service not known.*nothing was"):
        push_to_hub(model, None, "me/x", token="hf_fake", pruner=pruner)


def test_calibration_rows_that_are_not_token_ids_are_named():
    from hf_ssgr import CalibrationConfig, SSGRCalibrator

    model = make_tiny_model("qwen2")
    with pytest.raises(ValueError, match="Calibration row 0 is text.*rows are token ids: tokenize it first"):
        _pruner().prune(model, ["hello world"])
    batch = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    two = _pruner()
    two.prune(make_tiny_model("qwen2"), [batch])  # a (rows, tokens) tensor in the list: its rows
    one = _pruner()
    one.prune(make_tiny_model("qwen2"), batch)
    assert two.state.num_tokens == one.state.num_tokens == 8
    with pytest.raises(ValueError, match=r"row 0 has shape \(1, 2, 2\): a row is one sequence"):
        _pruner().prune(make_tiny_model("qwen2"), [torch.ones(1, 2, 2, dtype=torch.long)])
    with pytest.raises(FileNotFoundError, match="'/nonexistent/m' is not a local folder"):
        SSGRCalibrator(CalibrationConfig(policy="prompt_only", num_samples=2)).build("/nonexistent/m", "GSM8K")
