"""Evaluation: the shipped lm-eval tasks, `evaluate()`, `EvalReport`, plots, and the reconstruction-error analysis."""

import json
import logging
import math
import os
import statistics

import datasets
import numpy as np
import pytest
import torch
import yaml
from testing_utils import ScriptedEngine, make_char_tokenizer, make_tiny_model, require_module

from hf_ssgr.evaluation.registry import (
    BENCHMARKS,
    TASK_GROUPS,
    Reply,
    load_benchmark,
    process_results,
    resolve_tasks,
    tasks_path,
)

pytestmark = require_module("lm_eval")

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
LOCAL = {
    "ssgr_gsm8k": os.path.join(FIXTURES, "gsm8k_test_sample.jsonl"),
    "ssgr_math500": os.path.join(FIXTURES, "math500_sample.jsonl"),
    "ssgr_aime": [os.path.join(FIXTURES, "aime24_sample.jsonl"), os.path.join(FIXTURES, "aime25_sample.jsonl")],
    "ssgr_aime24": os.path.join(FIXTURES, "aime24_sample.jsonl"),
    "ssgr_aime25": os.path.join(FIXTURES, "aime25_sample.jsonl"),
    "ssgr_olympiadbench": os.path.join(FIXTURES, "olympiadbench_sample.jsonl"),
    "ssgr_gpqa_diamond": os.path.join(FIXTURES, "gpqa_synthetic.jsonl"),
}


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------------------------------------------
# Tasks and data


@pytest.mark.parametrize("task", sorted(t for t in BENCHMARKS if BENCHMARKS[t].parts and BENCHMARKS[t].kind != "code"))
def test_every_task_loads_from_a_local_file(task):
    docs = load_benchmark(task, LOCAL[task])
    files = LOCAL[task] if isinstance(LOCAL[task], list) else [LOCAL[task]]
    assert len(docs) == sum(len(rows(f)) for f in files)
    assert len(set(docs["problem_id"])) == len(docs)
    for d in docs:
        assert d["benchmark"] == task and d["answer"] and d["problem"] in d["prompt"]
        assert "\\boxed{}" in d["prompt"]


def test_gpqa_file_in_the_question_options_answer_layout_keeps_its_order(tmp_path):
    """Derivative GPQA files (question, options, answer letter, already shuffled) load as they are."""
    raw = rows(LOCAL["ssgr_gpqa_diamond"])
    derived = []
    for i, row in enumerate(raw):
        options = [
            row["Incorrect Answer 1"],
            row["Correct Answer"],
            row["Incorrect Answer 2"],
            row["Incorrect Answer 3"],
        ]
        options = options[i:] + options[:i]  # the correct option at another place in every row
        index = options.index(row["Correct Answer"])
        # the answer as a letter, a letter in parentheses, or an index into the options
        derived.append(
            {
                "question": row["Question"],
                "options": options,
                "answer": ["ABCD"[index], f"({'ABCD'[index]})", index][i % 3],
            }
        )
    path = tmp_path / "gpqa_derived.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in derived))
    docs = load_benchmark("ssgr_gpqa_diamond", str(path))
    assert len(docs) == len(raw)
    for i, (doc, row) in enumerate(zip(docs, derived)):
        assert doc["choices"] == row["options"]  # the file's order, not reshuffled
        assert doc["choice_order"] == [0, 1, 2, 3]
        assert doc["choices"]["ABCD".index(doc["answer"])] == raw[i]["Correct Answer"]
        assert doc["prompt"].startswith(row["question"].strip())
        assert "\n".join(f"{'ABCD'[j]}) {o}" for j, o in enumerate(row["options"])) in doc["prompt"]
        assert doc["problem_id"] == f"ssgr_gpqa_diamond/{i}"
    # a letter outside the options, or an options list of another size, is refused with the row named
    bad = dict(derived[0], answer="E")
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match="row 0.*answer 'E'.*A-D"):
        load_benchmark("ssgr_gpqa_diamond", str(tmp_path / "bad.jsonl"))
    bad = dict(derived[0], options=derived[0]["options"][:3])
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match="row 0 has 3 options"):
        load_benchmark("ssgr_gpqa_diamond", str(tmp_path / "bad.jsonl"))


def test_gold_answers_are_normalised():
    gsm = load_benchmark("ssgr_gsm8k", LOCAL["ssgr_gsm8k"])
    raw = rows(LOCAL["ssgr_gsm8k"])
    assert gsm[0]["answer"] == raw[0]["answer"].split("####")[-1].strip().replace(",", "")
    oly = load_benchmark("ssgr_olympiadbench", LOCAL["ssgr_olympiadbench"])
    assert oly[0]["answer"] == rows(LOCAL["ssgr_olympiadbench"])[0]["final_answer"][0].strip("$")


def test_gold_delimiters_and_trailing_full_stop_are_removed(tmp_path):
    path = tmp_path / "golds.jsonl"
    golds = ["$(-\\infty, 0) \\cup\\{1\\}$.", "\\(\\frac{1}{2}\\)", "$5$."]
    path.write_text("".join(json.dumps({"problem": f"p{i}", "answer": g}) + "\n" for i, g in enumerate(golds)))
    oly = tmp_path / "oly.jsonl"
    oly.write_text(json.dumps({"question": "q", "final_answer": ["$6764$", "$10945$"]}) + "\n")
    docs = datasets.concatenate_datasets(
        [load_benchmark("ssgr_math500", str(path)), load_benchmark("ssgr_olympiadbench", str(oly))]
    )
    assert docs["answer"] == ["(-\\infty, 0) \\cup\\{1\\}", "\\frac{1}{2}", "5", "6764, 10945"]
    right = ["\\{1\\}\\cup(-\\infty,0)", "0.5", "5", "10945, 6764"]
    wrong = ["(-\\infty, 0]", "2", "6", "676410945"]
    for doc, r, w in zip(docs, right, wrong):
        doc = dict(doc, benchmark="ssgr_math500")
        scores = process_results(doc, [[Reply(f"ok</think>\\boxed{{{r}}}", 5), Reply(f"ok</think>\\boxed{{{w}}}", 5)]])
        assert scores["pass@1"] == 0.5, (doc["answer"], r, w)


def test_gpqa_options_shuffled_by_a_fixed_seed_and_recorded(tmp_path):
    raw = rows(LOCAL["ssgr_gpqa_diamond"])
    a = load_benchmark("ssgr_gpqa_diamond", LOCAL["ssgr_gpqa_diamond"], seed=0)
    b = load_benchmark("ssgr_gpqa_diamond", LOCAL["ssgr_gpqa_diamond"], seed=0)
    assert a.to_list() == b.to_list()  # deterministic
    for doc, row in zip(a, raw):
        letter = doc["answer"]
        assert doc["choices"]["ABCD".index(letter)] == row["Correct Answer"]
        assert sorted(doc["choice_order"]) == [0, 1, 2, 3]
        assert f"{letter}) {row['Correct Answer']}" in doc["prompt"]
    orders = {
        tuple(d["choice_order"])
        for s in range(6)
        for d in load_benchmark("ssgr_gpqa_diamond", LOCAL["ssgr_gpqa_diamond"], seed=s)
    }
    assert len(orders) > 1  # the seed changes the shuffle
    # the same rows as the gated dataset's CSV
    import pandas as pd

    pd.DataFrame(raw).to_csv(tmp_path / "gpqa.csv", index=False)
    assert load_benchmark("ssgr_gpqa_diamond", str(tmp_path / "gpqa.csv")).to_list() == a.to_list()


def test_group_yaml_matches_and_lm_eval_indexes_every_task():
    from lm_eval.tasks import TaskManager

    with open(os.path.join(tasks_path(), "ssgr_reasoning.yaml")) as f:
        group = yaml.safe_load(f)
    assert group["task"] == TASK_GROUPS["ssgr_reasoning"]
    manager = TaskManager(include_path=tasks_path(), include_defaults=False)
    assert set(manager.all_tasks) == set(BENCHMARKS) | set(TASK_GROUPS)
    assert resolve_tasks(["ssgr_reasoning", "ssgr_aime25", "ssgr_gsm8k"]) == TASK_GROUPS["ssgr_reasoning"] + [
        "ssgr_aime25"
    ]


# ----------------------------------------------------------------------------------------------------------------
# A fake model with canned R1-style replies: every metric is known exactly


def _problems_file(tmp_path):
    probs = [("What is 2 + 3?", "5"), ("What is 7 * 6?", "42"), ("What is 10 - 4?", "6")]
    path = tmp_path / "gsm.jsonl"
    with open(path, "w") as f:
        for q, a in probs:
            f.write(json.dumps({"question": q, "answer": f"Compute it.\n#### {a}"}) + "\n")
    return str(path), probs


def test_fake_model_canned_replies_give_known_metrics(tmp_path):
    from hf_ssgr.evaluation.evaluate import evaluate

    tok = make_char_tokenizer()
    gsm_path, probs = _problems_file(tmp_path)
    gpqa = load_benchmark("ssgr_gpqa_diamond", LOCAL["ssgr_gpqa_diamond"])
    gold = {q: a for q, a in probs} | {d["problem"]: d["answer"] for d in gpqa}
    ok = lambda a: (f"Let me add.</think>The answer is \\boxed{{{a}}}.", "eos")  # noqa: E731
    scripts = {
        # per problem: the k=4 replies; expected correctness in the comment
        "What is 2 + 3?": lambda a: [ok(a), ok(a), ok("4"), (f"Long thinking</think>\\boxed{{{a}}}", "length")],  # 2/4
        "What is 7 * 6?": lambda a: [(f"No close \\boxed{{{a}}}", "eos"), ok(a), ok("41"), ok("x")],  # 1/4
        "What is 10 - 4?": lambda a: [ok("7")] * 4,  # 0/4
    }
    wrong = {"A": "B", "B": "C", "C": "D", "D": "A"}
    for i, d in enumerate(gpqa):  # GPQA: 3/4, 4/4, 0/4
        good = (f"Hmm.</think>The answer is \\boxed{{{d['answer']}}}", "eos")
        bad = (f"Hmm.</think>The answer is \\boxed{{{wrong[d['answer']]}}}", "eos")
        scripts[d["problem"]] = [
            lambda a, g=good, b=bad: [g, g, g, b],
            lambda a, g=good: [g] * 4,
            lambda a, b=bad: [b] * 4,
        ][i]

    def script(problem, j):
        return scripts[problem](gold[problem])[j]

    engine = ScriptedEngine(tok, script, list(scripts))
    model = make_tiny_model("qwen2", vocab_size=len(tok))
    report = evaluate(
        model,
        tok,
        tasks=["ssgr_gsm8k", "ssgr_gpqa_diamond"],
        num_samples=4,
        max_new_tokens=64,
        data_files={"ssgr_gsm8k": gsm_path, "ssgr_gpqa_diamond": LOCAL["ssgr_gpqa_diamond"]},
        engine=engine,
    )
    assert engine.samples_generated == 4 * (3 + 3)  # each prompt sampled once with n=4
    gsm, gp = report["ssgr_gsm8k"], report["ssgr_gpqa_diamond"]
    assert gsm.num_problems == 3 and gsm.num_samples == 4
    assert gsm.pass_at_1 == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
    assert gsm.problem_ids == ["0", "1", "2"] and gsm.pass_at_1_per_problem == [0.5, 0.25, 0.0]
    assert gsm.pass_at_1_se == pytest.approx(statistics.stdev([0.5, 0.25, 0.0]) / math.sqrt(3))
    assert gsm.pass_at_k == pytest.approx(2 / 3)
    assert gsm.truncated == pytest.approx(1 / 12)
    expected_lengths = []
    for q, a in probs:
        for text, finish in scripts[q](a):
            expected_lengths.append(len(tok(text, add_special_tokens=False)["input_ids"]) + (finish == "eos"))
    assert sorted(gsm.lengths) == sorted(expected_lengths)
    assert gsm.mean_length == pytest.approx(statistics.fmean(expected_lengths))
    assert gsm.median_length == pytest.approx(statistics.median(expected_lengths))
    assert gsm.gen_seconds > 0
    # one process: its generation wall time is the task's (the replies' shares add up to it)
    assert gsm.gen_seconds_per_process == [pytest.approx(gsm.gen_seconds, rel=1e-9)]
    assert gsm.gen_wall_seconds == gsm.gen_seconds_per_process[0]
    assert gp.pass_at_1 == pytest.approx((3 / 4 + 1 + 0) / 3)
    assert gp.pass_at_k == pytest.approx(2 / 3)
    assert gp.truncated == 0
    assert report.settings["num_samples"] == 4


def test_process_results_with_a_stock_backend_counts_tokens_with_the_tokenizer(tmp_path):
    """Stock lm-eval backends return plain strings: lengths come from re-encoding with the task's tokenizer."""
    from hf_ssgr.evaluation import registry as benchmarks

    tok = make_char_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    benchmarks.load_task_dataset(
        "ssgr_math500",
        data_files={"ssgr_math500": LOCAL["ssgr_math500"]},
        pretrained=str(tmp_path / "tok"),
        max_gen_toks=30,
    )
    doc = load_benchmark("ssgr_math500", LOCAL["ssgr_math500"])[0]
    good = f"ok</think>\\boxed{{{doc['answer']}}}"
    long = "x" * 30
    out = process_results(doc, [[good, long]])
    n_good = len(tok(good, add_special_tokens=False)["input_ids"])
    assert n_good < 30 and out["median_length"] == [n_good, 30]
    assert out["pass@1"] == 0.5 and out["truncated"] == 0.5
    assert math.isnan(out["gen_seconds"])


# ----------------------------------------------------------------------------------------------------------------
# A tiny random model through the real lm-eval path


def _saved_tiny(tmp_path):
    tok = make_char_tokenizer()
    model = make_tiny_model("qwen2", vocab_size=len(tok), max_position_embeddings=1024)
    model.generation_config.eos_token_id = tok.eos_token_id
    path = str(tmp_path / "tiny")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_tiny_model_through_evaluate_and_report_files(tmp_path):
    from hf_ssgr.evaluation.evaluate import EvalReport, evaluate, plot_accuracy, plot_length_distributions

    path = _saved_tiny(tmp_path)
    report = evaluate(
        path,
        tasks=["ssgr_aime25", "ssgr_math500"],
        num_samples=2,
        max_new_tokens=6,
        limit=2,
        data_files={t: LOCAL[t] for t in ("ssgr_aime25", "ssgr_math500")},
        output_path=str(tmp_path / "eval.json"),
    )
    assert list(report.tasks) == ["ssgr_aime25", "ssgr_math500"]
    for r in report.tasks.values():
        assert r.num_problems == 2 and r.num_samples == 2 and len(r.lengths) == 4
        assert all(1 <= n <= 6 for n in r.lengths)
        assert r.truncated == pytest.approx(sum(n == 6 for n in r.lengths) / 4)  # random weights rarely emit EOS
        assert r.pass_at_1 == 0.0  # random weights never close </think> and box the answer within 6 tokens
    loaded = EvalReport.load(str(tmp_path / "eval.json"))
    assert loaded.to_dict() == json.loads(json.dumps(report.to_dict()))
    assert "AIME 2025" in report.table() and "recovery" in report.table(baseline=loaded)
    imread = __import__("matplotlib.image").image.imread
    for fn, name in ((plot_accuracy, "acc.png"), (plot_length_distributions, "len.png")):
        out = fn({"dense": report, "copy": loaded}, str(tmp_path / name))
        img = imread(out)
        assert img.ndim == 3 and img.shape[0] > 100
        # twenty models: the figure grows wider with them (a bar or a box each) instead of crowding one axis
        many = fn({f"model {i}": loaded for i in range(20)}, str(tmp_path / f"many_{name}"))
        assert imread(many).shape[0] * imread(many).shape[1] > 1.3 * img.shape[0] * img.shape[1]


def test_stock_lm_eval_hf_backend_runs_the_shipped_tasks(tmp_path):
    """What a user runs with `lm_eval --model hf --include_path <tasks_path()> --tasks ssgr_gsm8k`."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    path = _saved_tiny(tmp_path)
    metadata = {"pretrained": path, "data_files": {"ssgr_gsm8k": LOCAL["ssgr_gsm8k"]}, "max_gen_toks": 5}
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": path, "device": "cpu", "dtype": "float32"},
        tasks=["ssgr_gsm8k"],
        task_manager=TaskManager(include_path=tasks_path(), include_defaults=False, metadata=metadata),
        limit=2,
        apply_chat_template=True,
        gen_kwargs={"max_gen_toks": 5},
        bootstrap_iters=0,
    )
    res = out["results"]["ssgr_gsm8k"]
    assert res["pass@1,k_samples"] == 0.0
    assert 0 < res["mean_length,k_samples"] <= 5
    samples = out["samples"]["ssgr_gsm8k"]
    assert len(samples) == 2 and all(len(s["filtered_resps"][0]) == 4 for s in samples)  # k = 4 by default


def _stock_lm_eval(path, task, limit, **metadata):
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": path, "device": "cpu", "dtype": "float32"},
        tasks=[task],
        task_manager=TaskManager(
            include_path=tasks_path(), include_defaults=False, metadata={"pretrained": path, **metadata}
        ),
        limit=limit,
        apply_chat_template=True,
        bootstrap_iters=0,
    )


def test_stock_lm_eval_on_the_embedded_reasoner_prints_no_generation_warnings():
    """`lm_eval --model hf --tasks ssgr_tiny_arith`: no max_new_tokens / max_length warning per batch."""
    import transformers

    from hf_ssgr.tiny_reasoner import MODEL_PATH

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    transformers_logger = transformers.logging.get_logger("transformers")
    transformers_logger.addHandler(handler)
    try:
        out = _stock_lm_eval(MODEL_PATH, "ssgr_tiny_arith", limit=3)
    finally:
        transformers_logger.removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert not [m for m in messages if "max_new_tokens" in m or "max_length" in m], messages[:3]
    assert out["results"]["ssgr_tiny_arith"]["pass@1,k_samples"] > 0  # the trained model solves some


def test_a_generation_config_limit_below_max_gen_toks_is_warned_and_counted_as_truncation(tmp_path, caplog):
    from transformers import GenerationConfig

    from hf_ssgr.evaluation.registry import load_task_dataset

    path = _saved_tiny(tmp_path)
    GenerationConfig(max_new_tokens=3, eos_token_id=1).save_pretrained(path)
    with caplog.at_level(logging.WARNING, logger="hf_ssgr"):
        load_task_dataset(
            "ssgr_gsm8k", pretrained=path, data_files={"ssgr_gsm8k": LOCAL["ssgr_gsm8k"]}, max_gen_toks=50
        )
    assert "sets max_new_tokens=3, which overrides the task's max_gen_toks=50" in caplog.text
    doc = load_benchmark("ssgr_gsm8k", LOCAL["ssgr_gsm8k"])[0]
    assert process_results(doc, [["abc"]])["truncated"] == 1.0  # three tokens: cut by max_new_tokens


def test_report_recovery_and_json_round_trip(tmp_path):
    from hf_ssgr.evaluation.evaluate import EvalReport, TaskResult

    def rep(name, accs):
        tasks = {
            t: TaskResult(t, BENCHMARKS[t].title, 10, 4, a, min(1.0, 2 * a), 100.0, 90.0, 0.1, 1.0, [90, 100, 110])
            for t, a in accs.items()
        }
        return EvalReport(name, tasks, {"num_samples": 4})

    dense = rep("dense", {"ssgr_gsm8k": 0.8, "ssgr_math500": 0.5})
    pruned = rep("pruned", {"ssgr_gsm8k": 0.6, "ssgr_math500": 0.5})
    rec = pruned.recovery(dense)
    assert rec["ssgr_gsm8k"] == pytest.approx(75.0) and rec["ssgr_math500"] == pytest.approx(100.0)
    assert rec["average"] == pytest.approx(100 * 0.55 / 0.65)
    table = pruned.table(baseline=dense)
    assert "75.0%" in table and "84.6%" in table
    pruned.save(str(tmp_path / "r.json"))
    assert EvalReport.load(str(tmp_path / "r.json")) == pruned
    with pytest.raises(ValueError, match="No task in common"):
        pruned.recovery(rep("other", {"ssgr_aime": 0.1}))


# ----------------------------------------------------------------------------------------------------------------
# Reconstruction-error analysis


def test_reconstruction_errors_against_per_prefix_forwards(tmp_path):
    from hf_ssgr.calibration.prompts import encode_prompt
    from hf_ssgr.evaluation.analysis import plot_error_ratio_heatmap, reconstruction_errors

    tok = make_char_tokenizer()
    dense = make_tiny_model("llama", vocab_size=len(tok), seed=0)
    a = make_tiny_model("llama", vocab_size=len(tok), seed=0)
    b = make_tiny_model("llama", vocab_size=len(tok), seed=0)
    with torch.no_grad():
        a.model.layers[1].mlp.down_proj.weight.mul_(0.9)  # small damage
        b.model.layers[0].self_attn.o_proj.weight.mul_(0.0)  # large damage
    problems = ["What is 1 + 1?", "Name a prime."]
    res = reconstruction_errors(dense, a, b, tok, problems, max_new_tokens=5, labels=("mild", "heavy"))
    for i, p in enumerate(problems):
        prompt = encode_prompt(tok, p)
        assert res.prompt_lengths[i] == len(prompt)
        expect = dense.generate(
            torch.tensor([prompt]),
            do_sample=False,
            max_new_tokens=5,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )[0].tolist()
        assert res.sequences[i] == expect  # the dense model's greedy rollout
        seq = res.sequences[i]
        # by hand: each prefix's last-token state, one forward per prefix
        for t in range(len(seq)):
            ids = torch.tensor([seq[: t + 1]])
            with torch.no_grad():
                h = {
                    m: net(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
                    for m, net in (("d", dense), ("a", a), ("b", b))
                }
            ea = torch.linalg.vector_norm(h["a"] - h["d"]).item()
            eb = torch.linalg.vector_norm(h["b"] - h["d"]).item()
            assert res.errors_a[i][t] == pytest.approx(ea, rel=1e-4, abs=1e-5)
            assert res.errors_b[i][t] == pytest.approx(eb, rel=1e-4, abs=1e-5)
            assert res.ratios[i][t] == pytest.approx(ea / eb, rel=1e-3)
    assert np.nanmean(np.concatenate(res.ratios)) < 1  # the mild damage reconstructs better everywhere
    s = res.summary()
    assert s["decode_error_mild"] < s["decode_error_heavy"]
    out = plot_error_ratio_heatmap(res, str(tmp_path / "heat.png"))
    assert __import__("matplotlib.image").image.imread(out).shape[0] > 100


# ----------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_errors(tmp_path):
    from hf_ssgr.evaluation.evaluate import evaluate

    tok = make_char_tokenizer()
    model = make_tiny_model("qwen2", vocab_size=len(tok))
    with pytest.raises(ValueError, match="valid tasks are .*ssgr_gsm8k.*ssgr_reasoning"):
        evaluate(model, tok, tasks=["gsm8k_typo"])
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        evaluate(model, tok, tasks=["ssgr_gsm8k"], num_samples=0)
    with pytest.raises(FileNotFoundError, match="Model path not found"):
        evaluate(str(tmp_path / "missing"), tasks=["ssgr_gsm8k"])
    with pytest.raises(ValueError, match="data_files names unknown tasks"):
        evaluate(model, tok, tasks=["ssgr_gsm8k"], data_files={"gsm": "x.jsonl"})
    # GPQA is gated and the Hub is offline: the error says how to get access or pass a local file
    with pytest.raises(
        RuntimeError, match=r"gated: accept its terms at https://huggingface.co/datasets/Idavidrein/gpqa.*data_files"
    ):
        load_benchmark("ssgr_gpqa_diamond")
    with pytest.raises(RuntimeError, match="Offline or without access, pass a local copy"):
        load_benchmark("ssgr_math500")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_benchmark("ssgr_math500", str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="need the columns of Idavidrein/gpqa.*or question, options .*and answer"):
        load_benchmark("ssgr_gpqa_diamond", LOCAL["ssgr_math500"])


def test_generation_wall_time_per_process_in_table_and_json_and_old_reports_load(tmp_path):
    from hf_ssgr.evaluation.report import EvalReport

    task = dict(task="ssgr_math500", title="MATH-500", num_problems=2, num_samples=1, pass_at_1=0.5, pass_at_k=0.5,
                mean_length=10.0, median_length=10.0, truncated=0.0, gen_seconds=30.0)  # fmt: skip
    old = EvalReport.from_dict({"model": "m", "tasks": {"ssgr_math500": task}})  # saved before per-process times
    assert old["ssgr_math500"].gen_seconds_per_process == []
    assert old["ssgr_math500"].gen_wall_seconds == 30.0
    assert "| gen s |" in old.table() and "| 30.0 |" in old.table()
    per_process = {**task, "gen_seconds_per_process": [12.0, 18.0]}
    two = EvalReport.from_dict({"model": "m", "tasks": {"ssgr_math500": per_process}})
    assert two["ssgr_math500"].gen_wall_seconds == 18.0
    assert "gen s (per process)" in two.table() and "| 30.0 (12.0 + 18.0) |" in two.table()
    saved = json.loads(open(two.save(str(tmp_path / "r.json"))).read())["tasks"]["ssgr_math500"]
    assert saved["gen_seconds_per_process"] == [12.0, 18.0] and saved["gen_wall_seconds"] == 18.0
    assert EvalReport.load(str(tmp_path / "r.json")).to_dict() == two.to_dict()
