"""The claims report (hf_ssgr.claims), equal token budgets, calibration seeds, and the varied reasoner's teacher."""

import json
import os
import random
import statistics

import numpy as np
import pytest
import yaml

from hf_ssgr.calibration.calibrator import cut_to_tokens
from hf_ssgr.claims import claims_markdown, evaluate_claims, parse_claims, per_problem_log_errors
from hf_ssgr.evaluation.report import EvalReport, TaskResult
from hf_ssgr.recipes import RunConfig

TASK = "ssgr_tiny_arith"


def _report(name, per_problem, lengths=None, k=4):
    n = len(per_problem)
    lengths = lengths if lengths is not None else [10] * (n * k)
    r = TaskResult(task=TASK, title="tiny", num_problems=n, num_samples=k, pass_at_1=float(np.mean(per_problem)),
                   pass_at_k=0.0, mean_length=float(np.mean(lengths)), median_length=0.0, truncated=0.0,
                   gen_seconds=1.0, lengths=list(lengths), pass_at_1_per_problem=list(per_problem),
                   problem_ids=[str(i) for i in range(n)])  # fmt: skip
    return EvalReport(model=name, tasks={TASK: r})


# ----------------------------------------------------------------------------------------------------------------
# Parsing


def test_claims_parse_into_links_and_bad_claims_are_refused():
    claims = parse_claims([
        {"id": "1", "claim": "a > b > c", "source": "T1", "order": ["sgr", "human", "text"],
         "pruning": ["sparsegpt-60", "sparsegpt-2of4"]},
        {"id": "13", "claim": "alps > sparsegpt", "source": "T9", "order": ["alps-60", "sparsegpt-60"],
         "calibrations": ["ssgr"]},
        {"id": "7", "claim": "tau", "source": "A", "not_worse": {"best": "t75", "others": ["t25", "t50"]},
         "pruning": ["v"]},
        {"id": "10", "claim": "grows", "source": "R", "grows": ["rac", "text"], "pruning": ["lo", "hi"]},
        {"id": "12", "claim": "recon", "source": "F2", "reconstruction": ["rac", "prompt_only"], "pruning": ["v"]},
    ])  # fmt: skip
    assert [len(c.links) for c in claims] == [4, 1, 2, 1, 2]
    first = claims[0].links[0]
    assert [(t.model, t.sign) for t in first.terms] == [("sgr__sparsegpt-60", 1.0), ("human__sparsegpt-60", -1.0)]
    assert [t.model for t in claims[1].links[0].terms] == ["ssgr__alps-60", "ssgr__sparsegpt-60"]
    grows = claims[3].links[0].terms
    assert [(t.model, t.sign) for t in grows] == [("rac__hi", 1), ("text__hi", -1), ("rac__lo", -1), ("text__lo", 1)]
    decode, prompt = claims[4].links
    assert [(t.model, t.sign, t.region) for t in decode.terms] == [("prompt_only__v", 1.0, "decode"),
                                                                   ("rac__v", -1.0, "decode")]  # fmt: skip
    assert [(t.model, t.region) for t in prompt.terms] == [("rac__v", "prompt"), ("prompt_only__v", "prompt")]
    with pytest.raises(ValueError, match="exactly one of"):
        parse_claims([{"id": "x", "order": ["a", "b"], "better": [["a", "b"]]}])
    with pytest.raises(ValueError, match="unique `id`"):
        parse_claims([{"id": "x", "order": ["a", "b"]}, {"id": "x", "order": ["a", "b"]}])
    with pytest.raises(ValueError, match="unknown keys"):
        parse_claims([{"id": "x", "order": ["a", "b"], "sparsity": 0.5}])
    with pytest.raises(ValueError, match="metric"):
        parse_claims([{"id": "x", "order": ["a", "b"], "metric": "ppl"}])


# ----------------------------------------------------------------------------------------------------------------
# Statistics


def test_claim_effects_are_paired_seed_averaged_differences_with_verdicts():
    rng = np.random.default_rng(0)
    n = 120
    base = rng.uniform(0.2, 0.8, n)
    reports = {"dense": _report("dense", np.clip(base + 0.2, 0, 1))}
    # a is clearly better than b; c equals b up to noise smaller than the problems' spread
    for s in (0, 1, 2):
        reports[f"a.seed{s}__v"] = _report("a", np.clip(base + 0.15 + 0.01 * s, 0, 1))
        reports[f"b.seed{s}__v"] = _report("b", base)
        reports[f"c.seed{s}__v"] = _report("c", np.clip(base + rng.normal(0, 0.05, n), 0, 1))
    claims = parse_claims([
        {"id": "1", "claim": "a > b", "source": "s", "order": ["a", "b"], "pruning": ["v"]},
        {"id": "2", "claim": "b > a", "source": "s", "order": ["b", "a"], "pruning": ["v"]},
        {"id": "3", "claim": "c > b", "source": "s", "order": ["c", "b"], "pruning": ["v"]},
        {"id": "4", "claim": "a > b > c", "source": "s", "order": ["a", "b", "c"], "pruning": ["v"]},
        {"id": "5", "claim": "tau", "source": "s", "not_worse": {"best": "b", "others": ["c"]}, "pruning": ["v"]},
        {"id": "6", "claim": "missing", "source": "s", "order": ["a", "zz"], "pruning": ["v"]},
        {"id": "7", "claim": "dense > b", "source": "s", "better": [["dense", "b__v"]]},
    ])  # fmt: skip
    res = {r.claim.id: r for r in evaluate_claims(claims, reports, [0, 1, 2], TASK, resamples=2000)}
    one = res["1"].links[0]
    a = np.mean([np.clip(base + 0.15 + 0.01 * s, 0, 1) for s in range(3)], axis=0)
    assert one.effect == pytest.approx(float(np.mean(a - base)))
    assert one.per_seed == pytest.approx([float(np.mean(np.clip(base + 0.15 + 0.01 * s, 0, 1) - base))
                                          for s in range(3)])  # fmt: skip
    assert one.low <= one.effect <= one.high and one.low > 0 and one.n_problems == n and one.seeds == 3
    assert res["1"].verdict == "reproduced" and res["2"].verdict == "contradicted"
    assert res["3"].verdict == "no detectable difference"
    assert res["4"].verdict == "partly reproduced"
    assert res["5"].verdict == "reproduced"  # c is not detectably better than b
    assert res["6"].verdict.startswith("not measured") and "zz.seed0__v" in res["6"].missing
    assert res["7"].verdict == "reproduced" and res["7"].links[0].seeds == 3  # b's seeds; dense has one
    text = claims_markdown(list(res.values()), TASK, [0, 1, 2], 2000)
    assert "| 1 | a > b | s |" in text and "**reproduced**" in text and "**contradicted**" in text


def test_interval_widens_when_the_calibration_seeds_disagree():
    """The bootstrap resamples seeds as well as problems: seeds that disagree widen the interval."""
    n = 200
    base = np.full(n, 0.5)
    agree = {"dense": _report("d", base)}
    disagree = {"dense": _report("d", base)}
    for s, shift in enumerate((0.0, 0.1, 0.2)):
        agree[f"a.seed{s}__v"] = _report("a", base + 0.1)
        disagree[f"a.seed{s}__v"] = _report("a", base + shift)
        for r in (agree, disagree):
            r[f"b.seed{s}__v"] = _report("b", base)
    claim = parse_claims([{"id": "1", "claim": "a > b", "source": "s", "order": ["a", "b"], "pruning": ["v"]}])
    (same,) = evaluate_claims(claim, agree, [0, 1, 2], TASK, resamples=2000)
    (diff,) = evaluate_claims(claim, disagree, [0, 1, 2], TASK, resamples=2000)
    assert same.links[0].effect == pytest.approx(diff.links[0].effect) == pytest.approx(0.1)
    assert same.links[0].high - same.links[0].low == pytest.approx(0.0, abs=1e-9)  # no spread at all
    assert diff.links[0].high - diff.links[0].low > 0.05


def test_length_and_difference_in_difference_and_reconstruction_claims():
    n, k = 50, 2
    reports = {"dense": _report("d", [0.5] * n, lengths=[10] * (n * k), k=k)}
    reports["text__hi"] = _report("t", [0.2] * n, lengths=[14, 16] * n, k=k)
    reports["rac__hi"] = _report("r", [0.5] * n, k=k)
    reports["text__lo"] = _report("t", [0.5] * n, k=k)
    reports["rac__lo"] = _report("r", [0.5] * n, k=k)
    errors = {
        "rac__hi": {"problem_ids": ["0", "1"], "prompt_lengths": [2, 2], "errors": [[1, 1, 0.5, 0.5], [1, 1, 0.5, 0.5]]},
        "po__hi": {"problem_ids": ["0", "1"], "prompt_lengths": [2, 2], "errors": [[0.5, 0.5, 1, 1], [0.5, 0.5, 1, 1]]},
    }  # fmt: skip
    claims = parse_claims([
        {"id": "8", "claim": "longer", "source": "s", "better": [["text__hi", "dense"]], "metric": "length"},
        {"id": "10", "claim": "grows", "source": "s", "grows": ["rac", "text"], "pruning": ["lo", "hi"]},
        {"id": "12", "claim": "recon", "source": "s", "reconstruction": ["rac", "po"], "pruning": ["hi"]},
    ])  # fmt: skip
    res = evaluate_claims(claims, reports, None, TASK, errors=errors, resamples=500)
    assert res[0].links[0].effect == pytest.approx(5.0) and res[0].verdict == "reproduced"
    assert res[1].links[0].effect == pytest.approx(0.3) and res[1].verdict == "reproduced"
    decode, prompt = res[2].links
    assert decode.effect == pytest.approx(np.log(2)) and prompt.effect == pytest.approx(np.log(2))
    assert res[2].verdict == "reproduced"
    assert per_problem_log_errors(errors["rac__hi"], "decode") == {"0": pytest.approx(np.log(0.5)),
                                                                   "1": pytest.approx(np.log(0.5))}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Equal token budgets and calibration seeds


def test_cut_to_tokens_is_exact_and_keeps_row_fields_consistent():
    rows = [{"input_ids": list(range(10)), "prompt_length": 4, "response_tokens": 6} for _ in range(5)]
    out = cut_to_tokens(rows, 33)
    assert [len(r["input_ids"]) for r in out] == [10, 10, 10, 3]
    assert out[-1]["prompt_length"] == 3 and out[-1]["response_tokens"] == 0
    assert rows[3]["input_ids"] == list(range(10))  # the input is not modified
    assert sum(len(r["input_ids"]) for r in cut_to_tokens(rows, 1000)) == 50


@pytest.mark.parametrize("policy", ["text", "prompt_only", "human"])
def test_max_tokens_gives_every_static_policy_exactly_that_many_tokens(policy):
    from transformers import AutoTokenizer

    from hf_ssgr.calibration.calibrator import SSGRCalibrator
    from hf_ssgr.calibration.config import CalibrationConfig
    from hf_ssgr.tiny_reasoner import MODEL_PATH

    tok = AutoTokenizer.from_pretrained(MODEL_PATH)
    cfg = CalibrationConfig(policy=policy, num_samples=500, max_length=64, max_tokens=1000)
    cal = SSGRCalibrator(cfg)
    ds = cal.build(None, "tiny-text" if policy == "text" else "tiny-arith", tokenizer=tok)
    assert sum(len(x) for x in ds["input_ids"]) == 1000 == cal.report.tokens
    assert len(ds) < 500  # it stopped at the token cap, not at num_samples
    short = SSGRCalibrator(CalibrationConfig(policy=policy, num_samples=3, max_length=64, max_tokens=1000))
    ds = short.build(None, "tiny-text" if policy == "text" else "tiny-arith", tokenizer=tok)
    assert len(ds) == 3 and sum(len(x) for x in ds["input_ids"]) < 1000  # too few rows: fewer tokens (warned)


def test_recipe_seeds_token_budget_and_per_configuration_policies(tmp_path):
    path = tmp_path / "r.yaml"
    recipe = {
        "model": "tiny", "output_dir": str(tmp_path / "o"), "source": "tiny-arith", "text_source": "tiny-text",
        "policies": ["text", "ssgr", "rac"], "calibration_seeds": [0, 3], "calibration_tokens": 512,
        "prune": [{"method": "wanda", "sparsity": 0.5}, {"method": "sparsegpt", "sparsity": 0.2, "policies": ["rac"]}],
        "tasks": ["ssgr_tiny_arith"],
        "claims": [{"id": "9", "claim": "rac > text", "source": "RAC", "order": ["rac", "text"],
                    "pruning": ["wanda-50"]}],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(recipe))
    cfg = RunConfig.from_yaml(str(path))
    assert [s.name for s in cfg.calibrations] == ["text.seed0", "text.seed3", "ssgr.seed0", "ssgr.seed3",
                                                  "rac.seed0", "rac.seed3"]  # fmt: skip
    assert [s.config.seed for s in cfg.calibrations] == [0, 3, 0, 3, 0, 3]
    assert all(s.config.max_tokens == 512 for s in cfg.calibrations)
    wanda, sgpt = cfg.prune
    assert cfg.applies("ssgr.seed3", wanda) and cfg.applies("rac.seed0", sgpt) and not cfg.applies("ssgr.seed0", sgpt)
    assert cfg.to_dict()["prune"][1]["policies"] == ["rac"]
    assert len(cfg.parsed_claims) == 1
    for bad, match in [
        ({"calibration_seeds": [1, 1]}, "distinct"),
        ({"calibration_tokens": 0}, "positive"),
        ({"prune": [{"method": "wanda", "sparsity": 0.5, "policies": ["hard"]}]}, "not in `policies`"),
        ({"claims": [{"id": "1", "order": ["a"], "better": [["a", "b"]]}]}, "exactly one of"),
    ]:
        path.write_text(yaml.safe_dump({**recipe, **bad}))
        with pytest.raises(ValueError, match=match):
            RunConfig.from_yaml(str(path))


# ----------------------------------------------------------------------------------------------------------------
# The varied reasoner's teacher


def test_varied_teacher_varies_and_is_wrong_exactly_when_a_slip_goes_uncaught():
    import re

    from hf_ssgr.tiny_reasoner import build_tokenizer, test_problems, varied_reasoning_text

    tok = build_tokenizer()
    rng = random.Random(0)
    cvs, wrong = [], 0
    by_level = {}
    for p in test_problems(20):
        lengths = []
        for _ in range(16):
            text, correct = varied_reasoning_text(p, rng)
            lengths.append(len(tok(text)["input_ids"]))
            boxed = int(re.search(r"\\boxed\{(-?\d+)\}", text).group(1))
            assert correct == (boxed == p.answer)
            wrong += not correct
            slips = 0  # written results that are wrong, a corrected slip counting as its correction
            for line in text.split("</think>")[0].strip().split("\n"):
                if line.startswith(("start", "so the answer")):
                    continue
                chain = line.split(" wait, ")[-1].removeprefix("check: ").split("=")
                slips += len({eval(c.replace("/", "//")) for c in chain}) != 1
            if slips == 0:  # a chain without an uncaught slip ends at the answer
                assert correct, text
            else:
                assert slips >= 2 or not correct, text  # one slip carried on gives a wrong answer
        cvs.append(statistics.pstdev(lengths) / statistics.mean(lengths))
        by_level.setdefault(p.level, []).extend(lengths)
    assert statistics.median(cvs) >= 0.25  # replies to one problem differ in length
    means = [statistics.mean(by_level[lv]) for lv in sorted(by_level)]
    assert means == sorted(means)  # and grow with difficulty
    assert 0.02 < wrong / (16 * len(cvs)) < 0.15  # the teacher rarely fails to recover
    assert varied_reasoning_text(test_problems(1)[0], random.Random(5)) == varied_reasoning_text(
        test_problems(1)[0], random.Random(5)
    )


def test_claims_recipe_states_all_thirteen_claims_and_owl():
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "recipes", "claims.yaml")
    with open(path) as f:
        data = yaml.safe_load(f)
    ids = [str(c["id"]) for c in data["claims"]]
    assert [i for i in ids if i.isdigit()] == [str(i) for i in range(1, 14)]
    assert any(i.startswith("OWL") for i in ids)
    cfg = RunConfig.from_yaml(path, output_dir="unused")
    assert len(cfg.calibration_seeds) >= 3 and cfg.calibration_tokens
    names = {s.name.split(".seed")[0] for s in cfg.calibrations}
    variants = {p.short_name for p in cfg.prune}
    for claim in cfg.parsed_claims:  # every model a claim names is built by the recipe
        for link in claim.links:
            for term in link.terms:
                if term.model == "dense":
                    continue
                cal, variant = term.model.split("__")
                assert cal in names and variant in variants, term.model
                assert cfg.applies(cal, next(p for p in cfg.prune if p.short_name == variant)), term.model
    json.dumps(cfg.to_dict(), default=str)


# ----------------------------------------------------------------------------------------------------------------
# End to end


def test_claims_recipe_runs_end_to_end_and_resumes(tmp_path):
    pytest.importorskip("lm_eval")
    import datasets

    from hf_ssgr.recipes import run_recipe

    recipe = {
        "description": "claims test", "model": "tiny", "output_dir": str(tmp_path / "run"),
        "source": "tiny-arith", "text_source": "tiny-text",
        "policies": ["text", "prompt_only", "rac"],
        "calibration_seeds": [0, 1], "calibration_tokens": 300,
        "calibration": {"num_samples": 64, "max_length": 96, "max_new_tokens": 48, "min_thinking_words": 1,
                        "generation_batch_size": 32},
        "prune": [{"method": "wanda", "sparsity": 0.5}, {"method": "sparsegpt", "sparsity": 0.2, "policies": ["rac", "text"]}],
        "tasks": ["ssgr_tiny_arith"], "num_samples": 2, "max_new_tokens": 48, "limit": 6,
        "reconstruction_problems": 3, "claims_resamples": 300,
        "claims": [
            {"id": "9", "claim": "RAC > prompt-only > C4", "source": "RAC", "order": ["rac", "prompt_only", "text"],
             "pruning": ["wanda-50"]},
            {"id": "8", "claim": "longer", "source": "SSGR", "better": [["text", "dense"]], "pruning": ["wanda-50"],
             "metric": "length"},
            {"id": "10", "claim": "grows", "source": "RAC", "grows": ["rac", "text"], "pruning": ["sparsegpt-20", "wanda-50"]},
            {"id": "12", "claim": "recon", "source": "RAC", "reconstruction": ["rac", "prompt_only"], "pruning": ["wanda-50"]},
        ],
    }  # fmt: skip
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = run_recipe(str(path))
    run = tmp_path / "run"
    for name in ("text", "prompt_only", "rac"):
        for s in (0, 1):
            ds = datasets.load_from_disk(str(run / "calibration" / f"{name}.seed{s}"))
            assert sum(len(x) for x in ds["input_ids"]) == 300  # equal token budgets
    assert sorted(os.listdir(run / "pruned" / "rac.seed1")) == ["sparsegpt-20", "wanda-50"]
    assert os.listdir(run / "pruned" / "prompt_only.seed0") == ["wanda-50"]  # restricted to rac and text
    assert len(out["pruned"]) == 3 * 2 + 2 * 2
    for name in ("rac", "prompt_only"):
        errors = json.loads((run / "eval" / f"{name}.seed1__wanda-50.errors.json").read_text())
        assert len(errors["errors"]) == 3 and all(len(e) > p for e, p in zip(errors["errors"], errors["prompt_lengths"]))
    results = {c["id"]: c for c in json.loads((run / "claims.json").read_text())}
    assert set(results) == {"9", "10", "12", "8"}
    for c in results.values():
        assert c["verdict"] in ("reproduced", "partly reproduced", "contradicted", "no detectable difference")
        for link in c["links"]:
            assert link["low"] <= link["effect"] <= link["high"] and link["seeds"] == 2 and len(link["per_seed"]) == 2
    report = (run / "report.md").read_text()
    assert (run / "claims.png").exists()
    assert "## Claims" in report and "| rac__wanda-50 | rac | wanda-50 |" in report  # one row per calibration
    assert "rac.seed0__wanda-50" not in report.split("## Claims")[0]
    steps = json.loads((run / "manifest.json").read_text())["steps"]
    run_recipe(str(path))  # resumes: nothing is recomputed
    assert json.loads((run / "manifest.json").read_text())["steps"] == steps


def test_seed_reports_merge_problem_by_problem():
    from hf_ssgr.recipes import merge_seed_reports

    reports = {
        "a.seed0__v": _report("a0", [1.0, 0.0, 0.5], lengths=[1, 2, 3, 4, 5, 6], k=2),
        "a.seed1__v": _report("a1", [0.0, 0.0, 1.0], lengths=[7, 8, 9, 10, 11, 12], k=2),
        "b__v": _report("b", [0.5, 0.5, 0.5]),
    }
    merged = merge_seed_reports(reports)
    assert set(merged) == {"a__v", "b__v"} and merged["b__v"] is reports["b__v"]
    r = merged["a__v"].tasks[TASK]
    assert r.pass_at_1_per_problem == [0.5, 0.0, 0.75] and r.pass_at_1 == pytest.approx(0.5 * (0.5 + 1 / 3))
    assert r.lengths == list(range(1, 13)) and r.mean_length == pytest.approx(6.5)
    assert merged["a__v"].settings["seeds_merged"] == 2


def test_null_comparisons_are_rarely_called_and_real_ones_are_found():
    """Two calibrations drawn from one distribution: the 95% interval excludes 0 in few of 40 repetitions; a real
    effect of 15 points with the same noise (about 5 standard errors, seeds and problems together) is found in
    nearly all of them."""
    rng = np.random.default_rng(1)
    claim = parse_claims([{"id": "1", "claim": "a > b", "source": "s", "order": ["a", "b"], "pruning": ["v"]}])
    false, found = 0, 0
    for _ in range(40):
        difficulty = rng.uniform(0.1, 0.9, 150)
        for shift, counter in ((0.0, "false"), (0.15, "found")):
            reports = {}
            for s in range(3):
                for cal, mu in (("a", shift), ("b", 0.0)):
                    p = np.clip(difficulty + mu + rng.normal(0, 0.03), 0, 1)  # a seed moves every problem a little
                    reports[f"{cal}.seed{s}__v"] = _report(cal, rng.binomial(4, p) / 4)  # 4 samples per problem
            (res,) = evaluate_claims(claim, reports, [0, 1, 2], TASK, resamples=400)
            if counter == "false":
                false += res.links[0].verdict != "no detectable difference"
            else:
                found += res.links[0].verdict == "better"
    assert false <= 6  # about 5% expected (2 of 40); 6 would be 15%
    assert found >= 38
