import json
import logging
import os
import pathlib

import datasets
import pytest
from testing_utils import ScriptedEngine, make_char_tokenizer, make_tiny_model
from transformers import AutoModelForCausalLM

import hf_ssgr.calibration.calibrator as calibration_module
from hf_ssgr import CalibrationConfig, SSGRCalibrator
from hf_ssgr.calibration.calibrator import CALIBRATION_COLUMNS, CalibrationReport
from hf_ssgr.calibration.engines import environment
from hf_ssgr.calibration.policies import (
    Decision,
    Policy,
    get_policy,
    list_policies,
    register_policy,
    unregister_policy,
)
from hf_ssgr.calibration.prompts import PROMPT_SUFFIX, encode_prompt
from hf_ssgr.calibration.sources import load_source
from hf_ssgr.calibration.store import RolloutStore, VerifiedSample

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
GSM8K = str(FIXTURES / "gsm8k_train_sample.jsonl")
MATH = str(FIXTURES / "math_train_sample.jsonl")
PROBLEMS = load_source("GSM8K", path=GSM8K)
GOLD = dict(zip(PROBLEMS["problem"], PROBLEMS["answer"]))


def build(model, tok, source="GSM8K", **kwargs):
    kwargs.setdefault("source_path", GSM8K if source == "GSM8K" else None)
    cal = SSGRCalibrator(CalibrationConfig(**kwargs))
    return cal.build(model, source, tokenizer=tok), cal


def check_contract(ds, max_length):
    assert ds.column_names == CALIBRATION_COLUMNS
    for row in ds:
        assert 0 < len(row["input_ids"]) <= max_length
        assert 0 <= row["prompt_length"] <= len(row["input_ids"])


# ----------------------------------------------------------------------------------------------------------------
# End to end on a tiny random model with the transformers engine


def test_text_policy_windows(model, tok, tmp_path):
    corpus = tmp_path / "c4.jsonl"
    corpus.write_text(
        "".join(json.dumps({"text": f"Document {i}: " + "lorem ipsum dolor " * 30}) + "\n" for i in range(6))
    )
    ds, cal = build(model, tok, "C4", policy="text", num_samples=5, max_length=64, source_path=str(corpus))
    check_contract(ds, 64)
    assert len(ds) == 5 and set(ds["prompt_length"]) == {0} and all(len(r) == 64 for r in ds["input_ids"])
    assert set(ds["source"]) == {"C4"}


def test_prompt_only_rows_are_templated_prompts(model, tok):
    ds, cal = build(model, tok, policy="prompt_only", num_samples=4, max_length=1024)
    check_contract(ds, 1024)
    for row in ds:
        problem = PROBLEMS[int(row["problem_id"].split("/")[-1])]["problem"]
        expected = encode_prompt(tok, problem)
        assert row["input_ids"] == expected and row["prompt_length"] == len(expected)
        text = tok.decode(expected)
        assert text.endswith("<think>\n") and PROMPT_SUFFIX in text


def test_tokenizer_given_by_path(model, tok, tmp_path):
    tok.save_pretrained(tmp_path / "tok")
    model.save_pretrained(tmp_path / "model")
    expected, _ = build(model, tok, policy="prompt_only", num_samples=3, max_length=1024)
    for model_arg in (model, str(tmp_path / "model")):
        ds, _ = build(model_arg, str(tmp_path / "tok"), policy="prompt_only", num_samples=3, max_length=1024)
        assert ds["input_ids"] == expected["input_ids"]
    with pytest.raises(FileNotFoundError, match="Tokenizer path not found"):
        build(model, str(tmp_path / "missing"), policy="prompt_only", num_samples=3)
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer or a Hub id"):
        build(model, 42, policy="prompt_only", num_samples=3)


def test_rac_on_policy_rollouts(model, tok, tmp_path):
    ds, cal = build(
        model,
        tok,
        policy="rac",
        num_samples=3,
        max_length=1024,
        max_new_tokens=12,
        rollouts_dir=str(tmp_path / "store"),
    )
    check_contract(ds, 1024)
    assert len(ds) == 3 and set(ds["num_generations"]) == {1}
    store = RolloutStore(str(tmp_path / "store"), json.load(open(tmp_path / "store" / "meta.json")))
    for row in ds:
        (sample,) = store.samples(row["problem_id"])
        assert row["input_ids"][row["prompt_length"] :] == sample.response_ids
        assert row["response_tokens"] == len(sample.response_ids) <= 12 + 1
    info = json.loads(ds.info.description)
    assert info["policy"] == "rac" and info["counts"]["responses_generated"] == 3
    assert info["config"]["max_new_tokens"] == 12 and info["config"]["num_generations"] == 1

    again, _ = build(
        model,
        tok,
        policy="rac",
        num_samples=3,
        max_length=1024,
        max_new_tokens=12,
        rollouts_dir=str(tmp_path / "store2"),
    )
    assert again["input_ids"] == ds["input_ids"], "same seed, same calibration set"


def test_human_policy_on_mathr(model, tok):
    ds, _ = build(
        model,
        tok,
        "MathR",
        policy="human",
        num_samples=30,
        max_length=4096,
        source_path={"GSM8K": GSM8K, "MATH": MATH},
    )
    assert len(ds) == 27
    row = ds[0]
    assert tok.decode(row["input_ids"][row["prompt_length"] :]).strip() != ""


# ----------------------------------------------------------------------------------------------------------------
# Selection through the real loop, with scripted generations


def reply(problem, correct, length=1):
    answer = GOLD[problem] if correct else str(int(GOLD[problem]) + 1)
    return "I add the numbers one by one. " * length + f"</think>\nSo \\boxed{{{answer}}}"


@pytest.fixture
def scripted(monkeypatch, tok):
    # Problem index i gets (i % 5) correct samples out of every 4: 0, 1, 2, 3, 4 -> c = 0, .25, .5, .75, 1
    def script(problem, j):
        i = PROBLEMS["problem"].index(problem)
        return reply(problem, j % 4 < (i % 5), length=1 + j), "eos"

    engine = ScriptedEngine(tok, script, PROBLEMS["problem"])
    monkeypatch.setattr(calibration_module, "make_engine", lambda *a, **k: engine)
    return engine


def test_ssgr_selects_hard_correct_median(model, tok, scripted):
    ds, cal = build(
        model, tok, policy="ssgr", num_samples=100, num_generations=4, max_length=4096, samples_per_round=2
    )
    counts = cal.report.counts
    # c = 1 problems (indices 4, 9) are dropped, c = 0 problems (0, 5, 10) have no correct sample
    ids = sorted(int(p.split("/")[-1]) for p in ds["problem_id"])
    assert ids == [1, 2, 3, 6, 7, 8, 11]
    assert counts["too_easy"] == 2 and counts["no_correct"] == 3
    for row in ds:
        i = int(row["problem_id"].split("/")[-1])
        assert row["correct_ratio"] == pytest.approx((i % 5) / 4)
        # correct samples are j < i%5 with lengths 1..k: Eq. 1 takes r_m, m = max(k//2, 1)
        k = i % 5
        m = max(k // 2, 1)
        assert tok.decode(row["input_ids"][row["prompt_length"] :]).count("I add") == m
    assert counts["responses_generated"] == scripted.samples_generated == 12 * 4


def test_streaming_stops_early_and_reports_cost(model, tok, scripted):
    ds, cal = build(model, tok, policy="sgr", num_samples=3, num_generations=16, max_length=4096, samples_per_round=4)
    counts = cal.report.counts
    assert len(ds) == 3
    assert counts["problems_visited"] <= 5
    assert counts["responses_generated"] < 12 * 16
    assert 0 < counts["generated_to_exhaustive_ratio"] < 0.5
    for row in ds:
        assert "\\boxed{" + GOLD[PROBLEMS[int(row["problem_id"].split("/")[-1])]["problem"]] in tok.decode(
            row["input_ids"]
        )


def test_no_thinking_keeps_the_answer_only(model, tok, scripted):
    ds, _ = build(model, tok, policy="no_thinking", num_samples=2, num_generations=4, max_length=4096)
    for row in ds:
        response = tok.decode(row["input_ids"][row["prompt_length"] :])
        assert response.startswith("</think>") and "I add" not in response


def test_store_resume_after_crash(model, tok, scripted, tmp_path):
    kwargs = dict(
        policy="ssgr",
        num_samples=100,
        num_generations=4,
        max_length=4096,
        samples_per_round=2,
        rollouts_dir=str(tmp_path / "store"),
        generation_batch_size=4,
    )
    scripted.fail_after = 3
    with pytest.raises(KeyboardInterrupt):
        build(model, tok, **kwargs)
    # a torn line, as if the process died mid-write
    store_file = tmp_path / "store" / "rollouts.jsonl"
    with open(store_file, "a") as f:
        f.write('{"problem_id": "GSM8K/3", "prompt_ids": [1, 2')
    partial = scripted.samples_generated
    assert partial > 0
    scripted.fail_after = None
    ds, cal = build(model, tok, **kwargs)

    rollouts = RolloutStore(str(tmp_path / "store"), json.load(open(tmp_path / "store" / "meta.json"))).to_dataset()
    keys = list(zip(rollouts["problem_id"], rollouts["sample_idx"]))
    assert len(keys) == len(set(keys)), "no duplicated rollout"
    per_problem = {}
    for pid, _ in keys:
        per_problem[pid] = per_problem.get(pid, 0) + 1
    assert all(v <= 4 for v in per_problem.values())
    # nothing generated twice: the total is what an uninterrupted run needs
    assert scripted.samples_generated == len(keys)
    assert sorted(ds["problem_id"]) == sorted(
        ["GSM8K/1", "GSM8K/2", "GSM8K/3", "GSM8K/6", "GSM8K/7", "GSM8K/8", "GSM8K/11"]
    )


def test_store_refuses_another_generation_config(model, tok, scripted, tmp_path):
    build(model, tok, policy="sgr", num_samples=1, num_generations=4, rollouts_dir=str(tmp_path / "s"))
    with pytest.raises(ValueError, match="another model or generation config.*temperature"):
        build(
            model,
            tok,
            policy="sgr",
            num_samples=1,
            num_generations=4,
            temperature=0.9,
            rollouts_dir=str(tmp_path / "s"),
        )


def test_store_refuses_another_model(tok, scripted, tmp_path):
    a = make_tiny_model("qwen2", vocab_size=128, max_position_embeddings=2048, seed=0)
    b = make_tiny_model("qwen2", vocab_size=128, max_position_embeddings=2048, seed=1)
    build(a, tok, policy="sgr", num_samples=1, num_generations=4, rollouts_dir=str(tmp_path / "s"))
    with pytest.raises(ValueError, match="another model.*model_fingerprint"):
        build(b, tok, policy="sgr", num_samples=1, num_generations=4, rollouts_dir=str(tmp_path / "s"))


def test_quality_reasons_are_counted(model, tok, monkeypatch):
    replies = [
        "</think>\\boxed{72}",
        "Reasoning about the clips in detail.</think> seventy-two",
        " ".join(["again and again"] * 40) + "</think>\\boxed{72}",
        "I add 48 and 24 to get it.</think>\\boxed{72}",
    ]
    engine = ScriptedEngine(tok, lambda problem, j: (replies[j % 4], "eos"), PROBLEMS["problem"])
    monkeypatch.setattr(calibration_module, "make_engine", lambda *a, **k: engine)
    ds, cal = build(model, tok, policy="ssgr", num_samples=1, num_generations=4, max_problems=1, tau=1.0)
    counts = cal.report.counts
    assert counts["responses_no_reasoning"] >= 1 and counts["responses_wrong_format"] >= 1
    assert counts["responses_repetitive"] >= 1


def test_too_few_problems_warns_and_returns_what_was_selected(model, tok, scripted, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_ssgr"):
        ds, cal = build(model, tok, policy="easy", num_samples=50, num_generations=4)
    assert len(ds) == 2  # problems 4 and 9 are always right
    assert "Only 2 of the 50 requested" in caplog.text


def test_off_policy_rollouts_from_another_model(tok, tmp_path, monkeypatch):
    other = tmp_path / "other"
    make_tiny_model("llama", vocab_size=128, max_position_embeddings=2048, seed=5).save_pretrained(other)
    tok.save_pretrained(other)
    target = make_tiny_model("qwen2", vocab_size=128, max_position_embeddings=2048)
    ds, cal = build(target, tok, policy="rac", num_samples=2, max_new_tokens=8, rollout_model=str(other))
    assert set(ds["model"]) == {"other"}  # the folder's name: the Dataset may be published, its local path not
    assert cal.report.rollout_model == "other"


# ----------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(policy="best"), "Unknown policy"),
        (dict(tau=0.0), r"outside \(0, 1\]"),
        (dict(tau=1.5), r"outside \(0, 1\]"),
        (dict(engine="tgi"), "Unknown engine"),
        (dict(num_samples=0), "num_samples=0 must be >= 1"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CalibrationConfig(**kwargs)


def test_rac_and_ssgr_defaults():
    assert (CalibrationConfig(policy="rac").num_generations, CalibrationConfig(policy="rac").max_new_tokens) == (
        1,
        8192,
    )
    assert (CalibrationConfig().num_generations, CalibrationConfig().max_new_tokens, CalibrationConfig().tau) == (
        16,
        32768,
        0.75,
    )


def test_unknown_source_and_missing_template(model, tok):
    with pytest.raises(ValueError, match="Unknown source 'MathQ'"):
        SSGRCalibrator(CalibrationConfig(policy="prompt_only")).build(model, "MathQ", tokenizer=tok)
    plain = make_char_tokenizer(chat_template=None)
    with pytest.raises(ValueError, match="no chat template"):
        build(model, plain, policy="prompt_only", num_samples=1)
    with pytest.raises(ValueError, match="no answer column"):
        SSGRCalibrator(CalibrationConfig(policy="prompt_only")).build(
            model, datasets.Dataset.from_dict({"problem": ["x"]}), tokenizer=tok
        )


def test_mixed_round_sizes_generate_nothing_extra(model, tok, scripted, tmp_path):
    """A resumed store leaves problems at different stages: each is sampled exactly as much as it needs."""
    kwargs = dict(policy="ssgr", num_samples=100, num_generations=16, max_length=4096, samples_per_round=4,
                  rollouts_dir=str(tmp_path / "store"))  # fmt: skip
    scripted.fail_after = 1
    with pytest.raises(KeyboardInterrupt):
        build(model, tok, generation_batch_size=4, **kwargs)  # one problem per wave: it gets 13 samples, then a crash
    scripted.fail_after = None
    first = scripted.samples_generated
    assert first == 13
    ds, cal = build(model, tok, generation_batch_size=64, **kwargs)  # one wave holds it next to fresh problems
    assert cal.report.counts["responses_generated_this_run"] == scripted.samples_generated - first
    assert cal.report.counts["responses_generated"] == scripted.samples_generated  # the total, the resumed ones too
    rollouts = RolloutStore(str(tmp_path / "store"), json.load(open(tmp_path / "store" / "meta.json"))).to_dataset()
    assert len(rollouts) == scripted.samples_generated
    per_problem = {}
    for pid in rollouts["problem_id"]:
        per_problem[pid] = per_problem.get(pid, 0) + 1
    assert max(per_problem.values()) <= 16


# ----------------------------------------------------------------------------------------------------------------
# Policies registered from outside the package


class LastCorrect(Policy):
    """A toy rollout policy: the last correct response, with its own generation defaults."""

    name = "toy_last_correct"
    description = "the last correct response"
    num_generations = 3
    max_new_tokens = 64

    def choose(self, samples, correct_ratio, *, tau, budget, rng):
        correct = [s for s in samples if s.correct]
        if not correct:
            return Decision(None, "no_correct", correct_ratio)
        return Decision(correct[-1], "selected", correct_ratio)


class AnswerOnly(Policy):
    """A toy policy without generation: the prompt, then the gold answer boxed."""

    name = "toy_answer_only"
    aliases = ("toy_gold",)
    generates = False
    dropped_reason = "no_answer"

    def problem_response(self, problem, tokenizer):
        if not problem["answer"]:
            return None
        return tokenizer(f"</think>\\boxed{{{problem['answer']}}}", add_special_tokens=False)["input_ids"]


@pytest.fixture
def toy_policies():
    registered = [register_policy(LastCorrect()), register_policy(AnswerOnly())]
    yield registered
    for policy in registered:
        unregister_policy(policy.name)


def test_a_registered_policy_calibrates_with_its_own_defaults(model, tok, scripted, toy_policies):
    from hf_ssgr.hub.metadata import calibration_summary

    config = CalibrationConfig(policy="TOY_LAST_CORRECT", num_samples=100, max_length=4096, source_path=GSM8K)
    assert (config.policy, config.num_generations, config.max_new_tokens) == ("toy_last_correct", 3, 64)
    cal = SSGRCalibrator(config)
    ds = cal.build(model, "GSM8K", tokenizer=tok)
    # problem i has i % 5 correct samples of every 4 (samples j < i % 5), of length 1 + j: of 3, the last correct one
    ids = sorted(int(p.split("/")[-1]) for p in ds["problem_id"])
    assert ids == [i for i in range(12) if i % 5]
    for row in ds:
        i = int(row["problem_id"].split("/")[-1])
        assert tok.decode(row["input_ids"][row["prompt_length"] :]).count("I add") == min(i % 5, 3)
        assert row["num_generations"] == 3
    assert set(ds["policy"]) == {"toy_last_correct"}
    counts = cal.report.counts
    assert counts["no_correct"] == 3 and counts["selected"] == 9
    assert counts["responses_generated"] == scripted.samples_generated == 12 * 3  # the default: all n samples
    assert calibration_summary(ds)["generation"]["num_generations"] == 3  # the card asks the registry


def test_a_registered_policy_without_generation(model, tok, toy_policies):
    from hf_ssgr.hub.metadata import calibration_summary

    ds, cal = build(model, tok, policy="toy_gold", num_samples=4, max_length=1024)
    assert set(ds["policy"]) == {"toy_answer_only"} and len(ds) == 4
    for row in ds:
        gold = PROBLEMS[int(row["problem_id"].split("/")[-1])]["answer"]
        assert tok.decode(row["input_ids"][row["prompt_length"] :]) == f"</think>\\boxed{{{gold}}}"
        assert row["response_tokens"] == len(row["input_ids"]) - row["prompt_length"]
    assert cal.report.counts == {"problems_visited": 4, "selected": 4}
    assert "generation" not in calibration_summary(ds)
    assert "toy_answer_only" in list_policies(generates=False) and "toy_last_correct" in list_policies(generates=True)


def test_the_policy_registry_refuses_what_it_cannot_use(toy_policies):
    with pytest.raises(ValueError, match="Unknown policy 'best': choose one of text, human, .*ssgr.*toy_last_correct"):
        get_policy("best")
    with pytest.raises(ValueError, match="Unknown policy 'best'.*register_policy"):
        CalibrationConfig(policy="best")
    with pytest.raises(ValueError, match="'toy_last_correct' is already registered: pass overwrite=True"):
        register_policy(LastCorrect())
    with pytest.raises(ValueError, match="'toy_gold' is already registered"):
        register_policy(Policy("another", aliases=("toy_gold",)))
    with pytest.raises(ValueError, match="has no name"):
        register_policy(Policy())
    with pytest.raises(TypeError, match="takes a Policy object"):
        register_policy("ssgr")
    with pytest.raises(ValueError, match="reads problems"):
        register_policy(type("TextRollouts", (Policy,), {"name": "text_rollouts", "source_kind": "text"})())
    replacement = register_policy(LastCorrect(description="replaced"), overwrite=True)
    assert get_policy("toy_last_correct") is replacement


def test_every_builtin_policy_says_what_it_needs():
    assert list_policies(generates=False) == ["text", "human", "prompt_only"]
    assert get_policy("text").source_kind == "text"
    rac = get_policy("rac")
    assert (rac.num_generations, rac.max_new_tokens, rac.stops_at_token_budget) == (1, 8192, True)
    for name in list_policies():
        policy = get_policy(name)
        assert policy.description and policy.name == name
        assert not policy.stops_at_token_budget or name == "rac"


# ----------------------------------------------------------------------------------------------------------------
# Typed records, byte for byte the formats of earlier versions

V1 = FIXTURES / "formats_v1"


def test_calibration_report_is_the_dataset_description(model, tok):
    ds, cal = build(model, tok, policy="prompt_only", num_samples=2, max_length=1024)
    assert isinstance(cal.report, CalibrationReport)
    assert ds.info.description == cal.report.to_json()
    assert CalibrationReport.from_json(ds.info.description) == cal.report
    earlier = datasets.load_from_disk(str(V1 / "calibration"))
    report = CalibrationReport.from_json(earlier.info.description)
    assert report.to_json() == earlier.info.description  # an earlier description reads and writes back unchanged
    assert report.policy == "ssgr" and report.rows == len(earlier)
    with pytest.raises(ValueError, match="Not a calibration report"):
        CalibrationReport.from_json('{"rows": 3}')


def test_verified_samples_read_and_write_the_stored_lines_unchanged():
    for line in (V1 / "rollouts" / "rollouts.jsonl").read_text().splitlines():
        rec = json.loads(line)
        samples = [VerifiedSample.from_dict(s) for s in rec["samples"]]
        assert json.dumps([s.to_dict() for s in samples]) == json.dumps(rec["samples"])
    old = VerifiedSample.from_dict({"sample_idx": 0, "response_ids": [1], "correct": True})
    assert old.finish_reason is None and not old.low_quality
    with pytest.raises(ValueError, match="lacks \\['correct'\\]"):
        VerifiedSample.from_dict({"sample_idx": 0, "response_ids": [1]})


def test_environment_sets_then_restores_the_variables(monkeypatch):
    monkeypatch.setenv("HF_SSGR_TEST_KEPT", "before")
    monkeypatch.delenv("HF_SSGR_TEST_NEW", raising=False)
    monkeypatch.delenv("HF_SSGR_TEST_INSIDE", raising=False)
    with environment({"HF_SSGR_TEST_KEPT": "during", "HF_SSGR_TEST_NEW": "1"}):
        assert os.environ["HF_SSGR_TEST_KEPT"] == "during" and os.environ["HF_SSGR_TEST_NEW"] == "1"
        os.environ["HF_SSGR_TEST_INSIDE"] = "x"
    assert os.environ["HF_SSGR_TEST_KEPT"] == "before"
    assert "HF_SSGR_TEST_NEW" not in os.environ and "HF_SSGR_TEST_INSIDE" not in os.environ
    with pytest.raises(RuntimeError), environment({"HF_SSGR_TEST_NEW": "2"}):
        raise RuntimeError
    assert "HF_SSGR_TEST_NEW" not in os.environ


def test_a_damaged_line_in_the_middle_of_the_store_drops_only_itself(tmp_path, caplog):
    meta = {"model": "m", "seed": 0}
    store = RolloutStore(str(tmp_path), meta)
    for p in range(6):
        sample = VerifiedSample(sample_idx=0, response_ids=[p, 2], finish_reason="eos", correct=p % 2 == 0)
        store.append(f"P/{p}", [1, 2, 3], [sample])
    path = tmp_path / "rollouts.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][:20] + b"\x00garbage\n"  # line 3: a damaged write that still ends its line
    lines[4] = b'{"problem_id": "P/4"}\n'  # line 5: valid JSON but not a record
    path.write_bytes(b"".join(lines) + b'{"problem_id": "P/9", "sam')  # and a torn tail
    with caplog.at_level(logging.WARNING, logger="hf_ssgr"):
        again = RolloutStore(str(tmp_path), meta)
    assert sorted(p for p in (f"P/{i}" for i in range(10)) if again.get(p)) == ["P/0", "P/1", "P/3", "P/5"]
    assert again.samples("P/5")[0].response_ids == [5, 2]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "Skipped 2 damaged line(s)" in messages and "line 3, 5" in messages and "4 other lines" in messages
    assert "Dropped a torn line at the end" in messages
    assert path.read_bytes().endswith(b"\n")  # the torn tail only is cut: appends start on a clean line
    assert len(path.read_bytes().splitlines()) == 6
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_ssgr"):
        again.refresh()
    assert not caplog.records  # warned once


def test_store_accepts_the_same_model_at_another_path(tok, scripted, tmp_path):
    a = make_tiny_model("qwen2", vocab_size=128, max_position_embeddings=2048, seed=0)
    for where in ("first", "moved"):
        a.save_pretrained(tmp_path / where)
    kwargs = dict(policy="sgr", num_samples=2, num_generations=4, rollouts_dir=str(tmp_path / "s"))
    first = AutoModelForCausalLM.from_pretrained(tmp_path / "first")
    build(first, tok, **kwargs)
    generated = scripted.samples_generated
    moved = AutoModelForCausalLM.from_pretrained(tmp_path / "moved")
    assert moved.config._name_or_path != first.config._name_or_path
    build(moved, tok, **kwargs)
    assert scripted.samples_generated == generated  # every rollout reused, nothing regenerated
    meta = json.load(open(tmp_path / "s" / "meta.json"))
    assert meta["model"] == "first"  # the store still says which model made it, by its folder's name only
