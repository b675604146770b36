"""Perplexity: the papers' non-overlapping windows and the traces protocol against a direct computation, the C4 cut,
`evaluate()` with perplexity next to pass@1, reports, and `ReasoningLM` scoring as lm-eval's `hf` model does."""

import gzip
import json
import math

import pytest
import torch
import torch.nn.functional as F
from testing_utils import make_char_tokenizer, make_tiny_model

from hf_ssgr.evaluation.config import EvalConfig
from hf_ssgr.evaluation.perplexity import (
    PERPLEXITY_TASKS,
    load_perplexity_text,
    perplexity,
    resolve_seqlen,
    window_nll,
)
from hf_ssgr.evaluation.registry import resolve_tasks
from hf_ssgr.evaluation.report import EvalReport

DOCS = [f"Line {i}: the cat sat on mat number {i * 7 % 13}." if i % 4 else "" for i in range(60)]


def _model_and_tok(context: int = 256):
    tok = make_char_tokenizer()
    model = make_tiny_model("llama", vocab_size=len(tok), max_position_embeddings=context, seed=3)
    model.eval()
    return model, tok


def _jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def _direct_window_ppl(model, ids: list[int], seqlen: int) -> tuple[float, list[float]]:
    """The references' loop: window w = ids[w*seqlen:(w+1)*seqlen], mean cross-entropy of its last seqlen-1 tokens,
    ppl = exp(sum_w loss_w * seqlen / (windows * seqlen))."""
    losses = []
    for w in range(len(ids) // seqlen):
        x = torch.tensor(ids[w * seqlen : (w + 1) * seqlen])[None]
        with torch.no_grad():
            logits = model(x).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        losses.append(float(-logp.gather(-1, x[0, 1:, None]).mean()))
    return math.exp(sum(loss * seqlen for loss in losses) / (len(losses) * seqlen)), losses


def test_wikitext_windows_match_a_direct_computation_and_do_not_overlap(tmp_path):
    model, tok = _model_and_tok()
    path = _jsonl(tmp_path / "wiki.jsonl", [{"text": d} for d in DOCS])
    text = load_perplexity_text("ssgr_wikitext2", path)
    assert text == "\n\n".join(DOCS)  # the raw rows, blank ones included, joined with "\n\n"
    ids = tok(text)["input_ids"]
    seqlen = 48
    seen = []
    record = lambda module, args, kwargs: seen.extend(kwargs["input_ids"].tolist())  # noqa: E731
    hook = model.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        res = perplexity(model, tok, "ssgr_wikitext2", data_file=path, seqlen=seqlen, batch_size=3)
    finally:
        hook.remove()
    windows = len(ids) // seqlen
    assert res.num_sequences == windows and res.seqlen == seqlen
    assert res.dropped_tokens == len(ids) - windows * seqlen > 0  # the tail is dropped, and counted
    assert res.num_tokens == windows * (seqlen - 1)
    # every window once, in order, back to back: exactly the first windows*seqlen tokens
    assert [t for w in seen for t in w] == ids[: windows * seqlen]
    assert all(len(w) == seqlen for w in seen)
    expected, losses = _direct_window_ppl(model, ids, seqlen)
    assert res.perplexity == pytest.approx(expected, rel=1e-5)
    assert res.nll == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert 1 < res.perplexity < 2 * len(tok)  # a random model: near the vocabulary size, not 1, not huge


def test_limit_keeps_the_first_windows_and_batching_changes_nothing(tmp_path):
    model, tok = _model_and_tok()
    path = _jsonl(tmp_path / "wiki.jsonl", [{"text": d} for d in DOCS])
    ids = tok(load_perplexity_text("ssgr_wikitext2", path))["input_ids"]
    one = perplexity(model, tok, "ssgr_wikitext2", data_file=path, seqlen=32, limit=3)
    assert one.num_sequences == 3 and one.protocol.endswith(f"limited to the first 3 of {len(ids) // 32} windows")
    assert one.perplexity == pytest.approx(_direct_window_ppl(model, ids[: 3 * 32], 32)[0], rel=1e-5)
    a = perplexity(model, tok, "ssgr_wikitext2", data_file=path, seqlen=32, batch_size=1)
    b = perplexity(model, tok, "ssgr_wikitext2", data_file=path, seqlen=32, batch_size=5)
    assert a.perplexity == pytest.approx(b.perplexity, rel=1e-5) and a.num_sequences == b.num_sequences


def test_c4_takes_the_first_1100_documents_joined_by_spaces_and_256_windows(tmp_path):
    model, tok = _model_and_tok()
    docs = [f"doc{i} words" for i in range(1200)]
    path = tmp_path / "c4-validation.00000-of-00008.json.gz"
    with gzip.open(path, "wt") as f:
        for d in docs:
            f.write(json.dumps({"text": d, "url": "u", "timestamp": "t"}) + "\n")
    text = load_perplexity_text("ssgr_c4", str(path))
    assert text == " ".join(docs[:1100])
    seqlen = 8
    res = perplexity(model, tok, "ssgr_c4", data_file=str(path), seqlen=seqlen, batch_size=64)
    assert len(tok(text)["input_ids"]) > 256 * seqlen  # the cut, not the text, ends the stream
    assert res.num_sequences == 256 and res.dropped_tokens == 0
    ids = tok(text)["input_ids"][: 256 * seqlen]
    assert res.perplexity == pytest.approx(_direct_window_ppl(model, ids, seqlen)[0], rel=1e-5)
    assert "first 1100 documents" in res.protocol and "first 256 x seqlen tokens" in res.protocol


def test_traces_score_the_reply_after_its_prompt(tmp_path):
    from hf_ssgr.calibration.prompts import encode_prompt

    model, tok = _model_and_tok()
    rows = [
        {"problem": "What is 2+3?", "response": "2+3=5\n</think>\n\\boxed{5}"},
        {"problem": "What is 7*6?", "response": "7*6=42\n</think>\n\\boxed{42}", "finished": False},
        {"problem": "What is 9-4?", "response": "9-4=5 so\n</think>\n\\boxed{5}"},
    ]
    path = _jsonl(tmp_path / "traces.jsonl", rows)
    total, count = 0.0, 0
    for r in rows:
        prompt = encode_prompt(tok, r["problem"])
        reply = tok(r["response"], add_special_tokens=False)["input_ids"]
        reply += [tok.eos_token_id] if r.get("finished", True) else []  # a cut reply has no end to predict
        x = torch.tensor(prompt + reply)[None]
        with torch.no_grad():
            logits = model(x).logits[0].float()
        total += float(F.cross_entropy(logits[len(prompt) - 1 : -1], x[0, len(prompt) :], reduction="sum"))
        count += len(reply)
    for bs in (1, 2):
        res = perplexity(model, tok, "ssgr_tiny_traces", data_file=path, batch_size=bs)
        assert res.num_sequences == 3 and res.num_tokens == count and res.seqlen is None
        assert res.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)


def test_window_length_rules():
    model, _ = _model_and_tok(context=256)
    assert resolve_seqlen(model, None) == 256  # min(2048, context length)
    assert resolve_seqlen(make_tiny_model("llama", max_position_embeddings=4096), None) == 2048
    assert resolve_seqlen(model, None, default=64) == 64  # a task's own default (ssgr_tiny_text)
    assert resolve_seqlen(model, 100) == 100
    with pytest.raises(ValueError, match="longer than the model's context length"):
        resolve_seqlen(model, 512)
    with pytest.raises(ValueError, match="ppl_seqlen"):
        EvalConfig(tasks=["ssgr_wikitext2"], ppl_seqlen=1)
    with pytest.raises(ValueError, match="fewer than one window"):
        window_nll(model, [1, 2, 3], seqlen=8)


def test_task_names_groups_and_local_files_are_accepted():
    import hf_ssgr

    assert hf_ssgr.perplexity is perplexity and hf_ssgr.PerplexityResult.__name__ == "PerplexityResult"
    assert resolve_tasks(["ssgr_tiny_arith", "ssgr_perplexity"]) == ["ssgr_tiny_arith", "ssgr_wikitext2", "ssgr_c4"]
    cfg = EvalConfig(tasks="ssgr_tiny_perplexity", data_files={"ssgr_wikitext2": "w.jsonl"})
    assert resolve_tasks(cfg.tasks) == ["ssgr_tiny_text", "ssgr_tiny_traces"]
    with pytest.raises(ValueError, match="valid tasks are .*ssgr_wikitext2"):
        EvalConfig(tasks=["wikitext3"])
    assert PERPLEXITY_TASKS["ssgr_c4"].hub_data_files == "en/c4-validation.00000-of-00008.json.gz"


def test_an_offline_hub_corpus_says_how_to_pass_a_local_file():
    model, tok = _model_and_tok()
    with pytest.raises(RuntimeError, match="data_files=.*ssgr_wikitext2"):
        perplexity(model, tok, "ssgr_wikitext2")


# ----------------------------------------------------------------------------------------------------------------
# evaluate() and reports


def _gsm_file(tmp_path):
    rows = [{"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"} for i in range(3)]
    return _jsonl(tmp_path / "gsm.jsonl", rows)


def test_evaluate_runs_perplexity_next_to_pass_at_1_and_keeps_it_apart(tmp_path):
    from hf_ssgr.evaluation.evaluate import evaluate

    model, tok = _model_and_tok()
    wiki = _jsonl(tmp_path / "wiki.jsonl", [{"text": d} for d in DOCS])
    out = tmp_path / "eval.json"
    report = evaluate(
        model, tok, tasks=["ssgr_gsm8k", "ssgr_wikitext2"], num_samples=1, max_new_tokens=4, ppl_seqlen=64,
        data_files={"ssgr_gsm8k": _gsm_file(tmp_path), "ssgr_wikitext2": wiki}, output_path=str(out),
    )  # fmt: skip
    assert list(report.tasks) == ["ssgr_gsm8k"] and list(report.perplexity) == ["ssgr_wikitext2"]
    ids = tok(load_perplexity_text("ssgr_wikitext2", wiki))["input_ids"]
    expected = _direct_window_ppl(model, ids, 64)[0]
    assert report.perplexity["ssgr_wikitext2"].perplexity == pytest.approx(expected, rel=1e-5)
    # never averaged with pass@1, no recovery from it
    assert report.average_pass_at_1 == report["ssgr_gsm8k"].pass_at_1
    assert set(report.recovery(report)) == {"ssgr_gsm8k", "average"}
    table = report.table(baseline=report)
    assert "perplexity ↓" in table and "ratio to baseline" in table and "1.000x" in table
    assert report.settings["ppl_seqlen"] == 64
    loaded = EvalReport.load(str(out))
    assert loaded.perplexity == report.perplexity
    assert loaded.to_dict() == json.loads(json.dumps(report.to_dict()))
    # a report written before perplexity existed still loads
    old = report.to_dict()
    old.pop("perplexity")
    assert EvalReport.from_dict(old).perplexity == {}


def test_evaluate_with_perplexity_only_and_the_cli(tmp_path, capsys):
    from hf_ssgr.commands.evaluate import main

    model, tok = _model_and_tok()
    path = str(tmp_path / "m")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    wiki = _jsonl(tmp_path / "wiki.jsonl", [{"text": d} for d in DOCS])
    out = tmp_path / "ppl.json"
    assert main(["--model", path, "--tasks", "ssgr_wikitext2", "--ppl_seqlen", "32", "--limit", "4",
                 "--data_files", json.dumps({"ssgr_wikitext2": wiki}), "--output", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "WikiText-2" in printed and "perplexity ↓" in printed and "pass@1" not in printed
    rep = EvalReport.load(str(out))
    assert rep.tasks == {} and rep.perplexity["ssgr_wikitext2"].num_sequences == 4


def test_tiny_tasks_on_the_embedded_reasoner():
    """The quickstart's perplexity: the embedded model's held-out text and its own greedy traces."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ssgr.tiny_reasoner import MODEL_PATH

    model, tok = AutoModelForCausalLM.from_pretrained(MODEL_PATH), AutoTokenizer.from_pretrained(MODEL_PATH)
    text = perplexity(model, tok, "ssgr_tiny_text")
    traces = perplexity(model, tok, "ssgr_tiny_traces")
    assert text.seqlen == 64 and text.num_sequences > 250
    assert traces.num_sequences == 200  # 40 held-out problems per level
    # its own greedy replies are near-certain to it; plain text (10% of its training) is not
    assert 1.0 < traces.perplexity < 1.2 < 3 < text.perplexity < 20
    noisy = AutoModelForCausalLM.from_pretrained(MODEL_PATH)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert perplexity(noisy, tok, "ssgr_tiny_traces").perplexity > traces.perplexity


# ----------------------------------------------------------------------------------------------------------------
# ReasoningLM as an lm-eval scorer


def test_reasoning_lm_scores_like_lm_evals_hf_model():
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from hf_ssgr.evaluation.lm_eval_model import ReasoningLM

    model, tok = _model_and_tok(context=64)
    ours = ReasoningLM(model, tokenizer=tok, batch_size=4)
    ref = HFLM(pretrained=model, tokenizer=tok, batch_size=4)
    texts = ["short text", " ".join(DOCS)[:300], "x" * 130]  # several windows of 64 for the last two
    rolling = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    mine, theirs = ours.loglikelihood_rolling(rolling), ref.loglikelihood_rolling(rolling)
    assert mine == pytest.approx(theirs, rel=1e-4)
    # direct: the first window conditions on the prefix token, each later one on the token before it
    ids = tok.encode(texts[2])
    seq = [ours.prefix_token_id] + ids
    total = 0.0
    for start in range(0, len(ids), 64):
        ctx = seq[start : start + 64 + 1][:-1] if start == 0 else seq[start : start + 64]
        x = torch.tensor(ctx)[None]
        with torch.no_grad():
            logp = torch.log_softmax(model(x).logits[0].float(), -1)
        target = ids[start : start + 64]
        total += float(logp[-len(target) :].gather(-1, torch.tensor(target)[:, None]).sum())
    assert mine[2] == pytest.approx(total, rel=1e-4)
    pairs = [Instance("loglikelihood", {}, ("The cat", " sat"), 0), Instance("loglikelihood", {}, ("", "mat"), 1)]
    for (a, ga), (b, gb) in zip(ours.loglikelihood(pairs), ref.loglikelihood(pairs)):
        assert a == pytest.approx(b, rel=1e-4) and ga == gb


def test_run_report_shows_perplexity_beside_pass_at_1_and_out_of_the_average(tmp_path):
    from hf_ssgr.evaluation.perplexity import PerplexityResult
    from hf_ssgr.evaluation.report import TaskResult
    from hf_ssgr.recipes import RunConfig, _Run

    def report(name, acc, ppl):
        tasks = {"ssgr_tiny_arith": TaskResult("ssgr_tiny_arith", "Tiny arithmetic (held out)", 4, 2, acc, acc, 30.0,
                                               30.0, 0.0, 1.0, [30] * 8, [acc] * 4, ["1"] * 4, list("abcd"))}  # fmt: skip
        res = {t: PerplexityResult(t, PERPLEXITY_TASKS[t].title, v, math.log(v), 100, 10, 64, 0, "windows of 64")
               for t, v in zip(["ssgr_tiny_text", "ssgr_tiny_traces"], ppl)}  # fmt: skip
        return EvalReport(name, tasks, {"num_samples": 2}, res)

    cfg = RunConfig(model="tiny", output_dir=str(tmp_path), source="tiny-arith", text_source="tiny-text",
                    policies=["text"], tasks=["ssgr_tiny_arith", "ssgr_tiny_perplexity"])  # fmt: skip
    run = _Run(cfg)
    path = tmp_path / "report.md"
    run._write_report(report("dense", 0.75, [6.5, 1.02]), {"text__wanda-50": report("p", 0.5, [9.25, 1.5])}, str(path))
    text = path.read_text()
    head = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert head.endswith("| avg pass@1 (SE) | recovery | Tiny text ppl ↓ | Tiny traces (held out) ppl ↓ |")
    row = next(line for line in text.splitlines() if line.startswith("| text__wanda-50 |"))
    assert row.endswith("| 66.7% | 9.250 | 1.500 |")  # recovery from pass@1 only; the perplexities as measured
    assert "| dense | – | – |" in text and "| 6.500 | 1.020 |" in text
    assert "Tiny text perplexity (lower is better; not in the average or the recovery): windows of 64." in text


def test_model_card_shows_perplexity_apart_and_in_the_model_index(tmp_path):
    from huggingface_hub import ModelCard

    from hf_ssgr.evaluation.perplexity import PerplexityResult
    from hf_ssgr.hub.cards import model_card

    def report(name, ppl):
        res = {"ssgr_wikitext2": PerplexityResult("ssgr_wikitext2", "WikiText-2", ppl, math.log(ppl), 287_000, 140,
                                                  2048, 1000, PERPLEXITY_TASKS["ssgr_wikitext2"].protocol(2048))}  # fmt: skip
        return EvalReport(name, {}, {"num_samples": 4}, res)

    card = model_card({"base_model": "org/dense", "method": "wanda"}, report("pruned", 7.26), report("dense", 5.47))
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    results = loaded.data.eval_results
    assert [(r.metric_type, r.metric_value, r.dataset_type, r.dataset_config) for r in results] == [
        ("perplexity", 7.26, "Salesforce/wikitext", "wikitext-2-raw-v1")
    ]
    body = loaded.text
    assert "### Perplexity" in body and "| WikiText-2 | 5.470 | 7.260 | 1.327x | 287000 |" in body
    assert "non-overlapping windows of 2048 tokens" in body
    head = next(line for line in body.splitlines() if line.startswith("| corpus |"))
    assert "recovery" not in head and "pass@1" not in head


def test_stock_lm_eval_wikitext_task_runs_with_hf_ssgr_as_with_hf(tmp_path):
    """`lm_eval --model hf-ssgr --tasks wikitext` (lm-eval's own task, on a local file here) gives `hf`'s numbers."""
    import os

    import lm_eval
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    import hf_ssgr.evaluation.lm_eval_model  # noqa: F401 - registers hf-ssgr

    model, tok = _model_and_tok(context=64)
    path = str(tmp_path / "m")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    page = " = Title = \n The cat sat on the mat , and 3 @.@ 5 dogs ran . \n" * 4
    wiki = _jsonl(tmp_path / "wiki.jsonl", [{"page": page.replace("cat", f"cat {i}")} for i in range(3)])
    local = {"dataset_path": "json", "dataset_name": None,
             "dataset_kwargs": {"data_files": {s: wiki for s in ("train", "validation", "test")}}}  # fmt: skip
    folder = os.path.join(os.path.dirname(lm_eval.tasks.__file__), "wikitext")
    results = {}
    for name, args in (("hf-ssgr", {}), ("hf", {"device": "cpu", "dtype": "float32"})):
        out = lm_eval.simple_evaluate(
            model=name, model_args={"pretrained": path, **args},
            tasks=[{"group": "local", "task": [{"task": "wikitext", **local}]}],
            task_manager=TaskManager(include_path=folder, include_defaults=False), bootstrap_iters=0,
        )  # fmt: skip
        results[name] = out["results"]["wikitext"]
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert results["hf-ssgr"][metric] == pytest.approx(results["hf"][metric], rel=1e-4)
    assert 1 < results["hf-ssgr"]["byte_perplexity,none"] < 1000


def test_windows_dealt_across_processes_add_up_to_one_process():
    """Under torchrun each process scores windows rank, rank + world, ...; the gathered sums are one process's."""

    class Dist:
        def __init__(self, rank, others):
            self.rank, self.world_size, self.others, self.sent = rank, 2, others, None

        def all_gather_object(self, obj):
            self.sent = obj
            return [obj, *self.others] if self.rank == 0 else [*self.others, obj]

    model, tok = _model_and_tok()
    ids = tok("\n\n".join(DOCS))["input_ids"]
    single = window_nll(model, ids, 40, batch_size=2)
    second = Dist(1, [0.0])
    window_nll(model, ids, 40, batch_size=2, dist=second)  # its own share only reaches the gather
    first = Dist(0, [second.sent])
    both = window_nll(model, ids, 40, batch_size=3, dist=first)
    assert both[1:] == single[1:]  # scored tokens, windows, dropped tail
    assert both[0] == pytest.approx(single[0], rel=1e-6)
    assert 0 < second.sent < single[0] and first.sent + second.sent == pytest.approx(single[0], rel=1e-6)
