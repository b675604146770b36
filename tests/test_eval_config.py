"""`EvalConfig`: the settings of an evaluation in one typed object, taken by `evaluate()` (arguments override it)."""

import json

import pytest
from testing_utils import ScriptedEngine, make_char_tokenizer, make_tiny_model

from hf_ssgr import EvalConfig, evaluate


def _setup(tmp_path):
    probs = [("What is 2 + 3?", "5"), ("What is 7 * 6?", "42")]
    path = tmp_path / "gsm.jsonl"
    path.write_text("".join(json.dumps({"question": q, "answer": f"Compute it.\n#### {a}"}) + "\n" for q, a in probs))
    tok = make_char_tokenizer()
    gold = dict(probs)

    def script(problem, j):  # sample j is correct when j is even
        answer = gold[problem] if j % 2 == 0 else "0"
        return f"Let me think.</think>The answer is \\boxed{{{answer}}}.", "eos"

    return str(path), tok, lambda: ScriptedEngine(tok, script, list(gold))


def test_evaluate_takes_a_config_and_arguments_override_it(tmp_path):
    path, tok, engine = _setup(tmp_path)
    model = make_tiny_model("qwen2", vocab_size=len(tok))
    config = EvalConfig(tasks=["ssgr_gsm8k"], num_samples=2, max_new_tokens=64, data_files={"ssgr_gsm8k": path})
    by_config = evaluate(model, tok, config=config, engine=engine())
    by_arguments = evaluate(model, tok, tasks=["ssgr_gsm8k"], num_samples=2, max_new_tokens=64,
                            data_files={"ssgr_gsm8k": path}, engine=engine())  # fmt: skip
    assert by_config.to_dict()["tasks"]["ssgr_gsm8k"]["pass_at_1"] == 0.5
    a, b = (r.to_dict()["tasks"]["ssgr_gsm8k"] for r in (by_config, by_arguments))
    timings = {"gen_seconds", "gen_wall_seconds", "gen_seconds_per_process"}
    assert {k: v for k, v in a.items() if k not in timings} == {k: v for k, v in b.items() if k not in timings}
    assert by_config["ssgr_gsm8k"].lengths == by_arguments["ssgr_gsm8k"].lengths
    assert {k: v for k, v in by_config.settings.items() if k != "versions"} == {
        k: v for k, v in by_arguments.settings.items() if k != "versions"
    }
    overridden = evaluate(model, tok, config=config, num_samples=3, engine=engine())
    assert overridden["ssgr_gsm8k"].num_samples == 3 and config.num_samples == 2  # the config is left alone
    assert overridden["ssgr_gsm8k"].pass_at_1 == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_samples=0), "num_samples must be an integer >= 1"),
        (dict(max_new_tokens=0), "max_new_tokens must be an integer >= 1"),
        (dict(backend="tgi"), "backend='tgi': choose 'hf'"),
        (dict(tasks=["gsm8k_typo"]), "Unknown task 'gsm8k_typo': valid tasks are"),
        (dict(data_files={"gsm": "x.jsonl"}), "data_files names unknown tasks"),
        (dict(limit=-1), "limit=-1 must be"),
        (dict(task_metadata={"lcb_start": "2024-01-01"}), r"task_metadata has unknown keys \['lcb_start'\]"),
    ],
)
def test_bad_settings_are_refused_before_anything_loads(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvalConfig(**kwargs)


def test_config_round_trip_and_comma_separated_tasks():
    config = EvalConfig(tasks="ssgr_gsm8k, ssgr_math500", limit=50.0)
    assert config.tasks == ["ssgr_gsm8k", "ssgr_math500"] and config.limit == 50 and isinstance(config.limit, int)
    assert EvalConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"Unknown EvalConfig field\(s\) \['num_sample'\]"):
        EvalConfig.from_dict({"num_sample": 4})
