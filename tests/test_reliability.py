"""Interrupted runs resume to what an uninterrupted run gives, errors say what is wrong and how to fix it, and nothing
is left behind."""

import json
import os
import pathlib

import pytest
from testing_utils import make_tiny_model

from hf_ssgr import CalibrationConfig, SSGRCalibrator
from hf_ssgr.calibration.store import RolloutStore

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
GSM8K = str(FIXTURES / "gsm8k_train_sample.jsonl")


def _calibrate(model, tok, store, **overrides):
    kwargs = dict(policy="incorrect", num_samples=4, max_problems=4, num_generations=4, samples_per_round=2, early_stop=False,
                  max_length=512, max_new_tokens=6, generation_batch_size=8, source_path=GSM8K,
                  rollouts_dir=str(store))  # fmt: skip
    kwargs.update(overrides)
    cal = SSGRCalibrator(CalibrationConfig(**kwargs))
    return cal.build(model, "GSM8K", tokenizer=tok), cal


def _stored(store) -> dict:
    meta = json.loads((store / "meta.json").read_text())
    data = RolloutStore(str(store), meta).to_dataset()
    return {(p, i): ids for p, i, ids in zip(data["problem_id"], data["sample_idx"], data["response_ids"])}


# ----------------------------------------------------------------------------------------------------------------
# Sampling per (problem, sample index)


def test_a_crash_between_a_batchs_store_writes_resumes_to_the_same_draws(model, tok, tmp_path, monkeypatch):
    """Killed after the first of a generation batch's store writes, the resumed run draws for the other problems of
    the batch (now generated in a smaller batch) exactly what the uninterrupted run drew."""
    whole, whole_cal = _calibrate(model, tok, tmp_path / "whole")
    expected = _stored(tmp_path / "whole")
    assert len(expected) == 4 * 4

    writes = []
    original = RolloutStore.append

    def crash_on_second_write(self, *args, **kwargs):
        writes.append(args[0])
        if len(writes) == 2:
            raise KeyboardInterrupt("killed between two store writes of one batch")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RolloutStore, "append", crash_on_second_write)
    with pytest.raises(KeyboardInterrupt):
        _calibrate(model, tok, tmp_path / "resumed")
    monkeypatch.setattr(RolloutStore, "append", original)
    assert len(_stored(tmp_path / "resumed")) == 4  # one problem's four samples were written before the kill

    resumed, cal = _calibrate(model, tok, tmp_path / "resumed")
    assert _stored(tmp_path / "resumed") == expected
    assert resumed["input_ids"] == whole["input_ids"] and resumed["problem_id"] == whole["problem_id"]

    # the description reports the totals, as the uninterrupted run does, and what the resumed run generated
    counts, whole_counts = json.loads(resumed.info.description)["counts"], whole_cal.report.counts
    for key in ("responses_generated", "tokens_generated", "responses_correct", "responses_truncated",
                "responses_wrong_format", "exhaustive_tokens_estimate", "generated_to_exhaustive_ratio"):  # fmt: skip
        assert counts[key] == whole_counts[key], key
    assert counts["responses_generated"] == 16 and whole_counts["responses_generated_this_run"] == 16
    assert counts["responses_generated_this_run"] == 12  # four were read from the store
    assert counts["tokens_generated_this_run"] == counts["tokens_generated"] - sum(
        len(ids) for (pid, _), ids in expected.items() if pid == writes[0]
    )


def test_samples_do_not_depend_on_the_batch_they_are_drawn_in(model, tok):
    from hf_ssgr.calibration.engines import TransformersEngine, sample_seed

    engine = TransformersEngine(model, tok, temperature=0.8, top_p=0.9, max_new_tokens=8, batch_size=8)
    prompts = [tok("What is 2+3?")["input_ids"], tok("Add 40 and 2, please.")["input_ids"]]
    seeds = [[sample_seed(0, f"p{i}", j) for j in range(2)] for i in range(2)]
    together = engine.generate(prompts, 2, 0, sample_seeds=seeds)
    alone = engine.generate(prompts[1:], 2, 123, sample_seeds=seeds[1:])
    assert [s.response_ids for s in together[1]] == [s.response_ids for s in alone[0]]
    assert together[1][0].response_ids != together[1][1].response_ids  # two samples, two draws
    assert sample_seed(0, "p1", 0) != sample_seed(1, "p1", 0) != sample_seed(0, "p1", 1)


def test_an_earlier_store_is_reused_and_samples_added_to_it_are_warned_and_recorded(model, tok, tmp_path, caplog):
    _calibrate(model, tok, tmp_path / "s", num_samples=1)
    meta_path = tmp_path / "s" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["sampling"]  # as an earlier version wrote it
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="hf_ssgr"):
        _calibrate(model, tok, tmp_path / "s", num_samples=2)
    assert "drawn by an earlier version" in caplog.text
    assert json.loads(meta_path.read_text())["sampling"].startswith("mixed: per-batch-seed")


# ----------------------------------------------------------------------------------------------------------------
# Nothing left behind by killed runs

KILLED_SAVE = """
import os, signal, sys
from hf_ssgr import utils
replace, calls = os.replace, []
def replace_then_die(src, dst):
    calls.append(dst)
    if len(calls) == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)
os.replace = replace_then_die
def write(folder):
    with open(os.path.join(folder, "weights.txt"), "w") as f:
        f.write("new")
utils.write_folder_atomically(sys.argv[1], write)
"""

KILLED_BACKUP = """
import os, signal, sys, tempfile, torch
tempfile.tempdir = sys.argv[1]
from hf_ssgr.pruning.checkpoint import WeightBackup
backup = WeightBackup()
backup["layer.weight"] = torch.ones(3)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _run_killed(code: str, *args: str) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr


def _old_copy(tmp_path, name="model"):
    (tmp_path / name).mkdir()
    (tmp_path / name / "weights.txt").write_text("old")


def test_a_kill_between_the_two_renames_is_recovered_on_the_next_load(tmp_path, caplog):
    from hf_ssgr.utils import check_model_path

    _old_copy(tmp_path)
    _run_killed(KILLED_SAVE, tmp_path / "model", 2)  # killed after moving the old copy aside
    assert not (tmp_path / "model").exists()
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == [".model.old", ".model.tmp"]
    with caplog.at_level("WARNING", logger="hf_ssgr"):
        check_model_path(str(tmp_path / "model"))
    assert (tmp_path / "model" / "weights.txt").read_text() == "old"
    assert "was put back" in caplog.text and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_kill_between_the_two_renames_is_recovered_on_the_next_save(tmp_path):
    from hf_ssgr.utils import write_folder_atomically

    _old_copy(tmp_path)
    _run_killed(KILLED_SAVE, tmp_path / "model", 2)
    seen = []
    write_folder_atomically(tmp_path / "model", lambda folder: seen.append(sorted(os.listdir(tmp_path / "model"))))
    assert seen == [["weights.txt"]]  # the old copy was back in place while the new one was written
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_partial_save_of_a_killed_run_is_removed_and_a_live_ones_kept(tmp_path):
    from hf_ssgr.utils import owned_temp_dir, write_folder_atomically

    _old_copy(tmp_path)
    _run_killed(KILLED_SAVE, tmp_path / "model", 1)  # killed before any rename: the partial copy stays hidden
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == [".model.tmp", "model"]
    live = owned_temp_dir(".model.tmp-", str(tmp_path))  # a save in progress in this (live) process
    write_folder_atomically(tmp_path / "model", lambda folder: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", os.path.basename(live)])


def test_the_backup_of_a_killed_prune_is_removed_by_the_next_one(tmp_path, monkeypatch, caplog):
    import tempfile

    import torch

    from hf_ssgr.pruning.checkpoint import WeightBackup

    _run_killed(KILLED_BACKUP, tmp_path)
    (left,) = list(tmp_path.iterdir())
    assert left.name.startswith("hf_ssgr_backup_")
    (tmp_path / "hf_ssgr_backup_abc123").mkdir()  # an earlier version's: no owner recorded
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    backup = WeightBackup()
    with caplog.at_level("WARNING", logger="hf_ssgr"):
        backup["w"] = torch.zeros(2)
    assert not left.exists()
    assert "hf_ssgr_backup_abc123" in caplog.text and "Delete them once no run uses them" in caplog.text
    backup.close()
    assert [p.name for p in tmp_path.iterdir()] == ["hf_ssgr_backup_abc123"]


def test_the_temporary_rollouts_store_is_removed(model, tok, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / "hf_ssgr_rollouts_999999999@host-of-nobody"
    stale.mkdir()  # another host's: left alone
    _, cal = _calibrate(model, tok, None, rollouts_dir=None, num_samples=1, max_problems=1)
    assert [p.name for p in tmp_path.iterdir()] == [stale.name]
    assert cal.report.counts["rollouts_dir"] is None


# ----------------------------------------------------------------------------------------------------------------
# Minor


def test_metrics_jsonl_does_not_repeat_a_layer_after_a_resume(tmp_path):
    from testing_utils import make_calibration

    from hf_ssgr import OneShotPruner, PruningConfig
    from hf_ssgr.pruning.callbacks import PrunerCallback

    class CrashAfterLogging(PrunerCallback):  # killed after layer 2 was logged, before its checkpoint
        def on_log(self, config, state, control, **kwargs):
            if kwargs["logs"]["layer"] == 2:
                raise KeyboardInterrupt("killed")

    calib = make_calibration(num_rows=2, seq_len=16)
    kwargs = dict(method="wanda", output_dir=str(tmp_path), save_every_n_layers=2)
    crashing = OneShotPruner(PruningConfig(restore_on_error=False, **kwargs), callbacks=[CrashAfterLogging()],
                             progress_bar=False)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        crashing.prune(make_tiny_model("qwen2", num_layers=4), calib)
    (tmp_path / "metrics.jsonl").open("a").write(json.dumps({"note": "not a layer's line"}) + "\n")
    OneShotPruner(PruningConfig(**kwargs), progress_bar=False).prune(
        make_tiny_model("qwen2", num_layers=4), calib, resume_from_checkpoint=True
    )
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [line.get("layer") for line in lines] == [0, 1, None, 2, 3]


@pytest.mark.parametrize("stream", ["true", "false"])
def test_a_model_folder_without_a_tokenizer_gets_none_written(tmp_path, stream, caplog):
    from testing_utils import make_calibration

    from hf_ssgr.commands.cli import main

    make_tiny_model("qwen2", num_layers=1).save_pretrained(tmp_path / "dense")
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"input_ids": r, "prompt_length": 4}) + "\n" for r in make_calibration()))
    with caplog.at_level("WARNING", logger="hf_ssgr"):
        rc = main(["prune", "--model_name_or_path", str(tmp_path / "dense"), "--calibration", str(calib),
                   "--save_dir", str(tmp_path / "pruned"), "--method", "wanda", "--stream", stream])  # fmt: skip
    assert rc == 0
    written = os.listdir(tmp_path / "pruned")
    assert "config.json" in written and not [f for f in written if f.startswith(("tokenizer", "vocab", "special"))]
    assert "holds no tokenizer files" in caplog.text


def test_calibrating_a_model_folder_without_a_tokenizer_is_refused(tmp_path):
    make_tiny_model("qwen2", num_layers=1).save_pretrained(tmp_path / "dense")
    with pytest.raises(ValueError, match="holds no tokenizer files.*tokenizer.save_pretrained"):
        SSGRCalibrator(CalibrationConfig(policy="prompt_only", num_samples=1, source_path=GSM8K)).build(
            str(tmp_path / "dense"), "GSM8K"
        )


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one line that names the problem and the fix


@pytest.mark.parametrize("rows, message", [
    ([{"input_ids": [1, 2, -3, 4] * 4, "prompt_length": 2}], "token id -3 outside the model's vocabulary"),
    ([{"input_ids": [1.5, 2.0, 3, 4] * 4, "prompt_length": 2}], "token id 1.5, not an integer"),
    ([], "holds no rows (it is empty)"),
])  # fmt: skip
def test_bad_calibration_rows_get_one_clear_line(tmp_path, capsys, rows, message):
    from hf_ssgr.commands.cli import main

    make_tiny_model("qwen2", num_layers=1).save_pretrained(tmp_path / "dense")
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = main(["prune", "--model_name_or_path", str(tmp_path / "dense"), "--calibration", str(calib),
               "--save_dir", str(tmp_path / "pruned"), "--method", "wanda"])  # fmt: skip
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("hf-ssgr prune:")]
    assert rc == 2 and message in line and "Traceback" not in err
    assert not (tmp_path / "pruned").exists()


def test_an_empty_saved_dataset_or_problem_file_is_refused_clearly(tmp_path):
    import datasets

    from hf_ssgr.calibration.sources import load_source

    datasets.Dataset.from_dict({"problem": [], "answer": []}).save_to_disk(str(tmp_path / "empty"))
    (tmp_path / "empty.jsonl").write_text("")
    for path in (tmp_path / "empty", tmp_path / "empty.jsonl"):
        with pytest.raises(ValueError, match="holds no rows"):
            load_source("GSM8K", path=str(path))


def test_nan_weights_are_named_at_their_layer_without_float16_advice(tmp_path):
    import torch
    from testing_utils import make_calibration

    from hf_ssgr import OneShotPruner, PruningConfig

    model = make_tiny_model("qwen2", num_layers=3)
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"decoder layer 0: its weight self_attn.q_proj.weight holds NaN") as err:
        OneShotPruner(PruningConfig(method="wanda"), progress_bar=False).prune(model, make_calibration())
    assert "float16" not in str(err.value)


def test_calibrate_names_a_missing_model_path(tmp_path, capsys):
    from hf_ssgr.commands.cli import main

    rc = main(["calibrate", "--model", str(tmp_path / "nope"), "--source", "GSM8K", "--save_dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "Model path not found" in err and "Traceback" not in err
