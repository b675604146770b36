import math

import pytest

from hf_ssgr.evaluation.scoring import extract_choice_letter, pass_at_k, score_problem, summarize_lengths


def reply(answer, think="I reason about it step by step."):
    return f"{think}\n</think>\n\nFinal: \\boxed{{{answer}}}"


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Thinking.</think>\nThe answer is \\boxed{C}", "C"),
        ("Thinking.</think>\n\\boxed{(B)}", "B"),
        ("Thinking.</think>\nAnswer: (D)", "D"),
        ("Thinking.</think>\nthe answer is a", None),  # prose, not a letter
        ("Thinking.</think>\nThe answer is a small value, about 2 eV.", None),
        ("Thinking.</think>\nThe answer is A small value, about 2 eV.", None),
        ("Thinking.</think>\nThe answer is A because the gap is larger.", "A"),
        ("Thinking.</think>\nThe correct answer is **B**.", "B"),
        ("Thinking.</think>\nFinal answer: C", "C"),
        ("Thinking.</think>\n\\boxed{\\text{D}}", "D"),
        ("Thinking.</think>\n\\boxed{\\textbf{D}}", "D"),
        ("Thinking.</think>\n\\boxed{\\text{(D)}}", "D"),
        ("Thinking.</think>\n\\boxed{D) 10^{-4} eV}", "D"),
        ("Thinking.</think>\n\\boxed{(D) 10^{-4} eV}", "D"),
        ("Thinking.</think>\n\\boxed{d}", "D"),
        ("Thinking.</think>\n\\boxed{D. The lifetime\nis shorter\nthan 1 ns}", "D"),
        ("Thinking.</think>\n\\boxed{D: 4}", "D"),
        ("Thinking.</think>\n$\\boxed{B}$", "B"),
        ("Thinking.</think>\n\\boxed{\\text{Option C}}", "C"),
        ("Thinking.</think>\n\\boxed{Dopamine}", None),  # a word that starts with a letter is not a letter
        ("Thinking.</think>\n\\boxed{a small value}", None),
        ("Thinking.</think>\nAfter all that,\nB\n", "B"),
        ("Thinking about (A) and (C).</think>\nI pick (C).", "C"),
        ("Maybe \\boxed{A} ... never closes", None),
        ("Thinking.</think>\nno idea", None),
    ],
)
def test_gpqa_letter_extraction(text, expected):
    assert extract_choice_letter(text) == expected


def test_letter_extraction_rejects_truncated_replies():
    assert extract_choice_letter("x</think>\\boxed{A}", finish_reason="length") is None


def test_score_problem_known_values():
    replies = [reply("72"), reply("71"), "never closes \\boxed{72}", reply("72")]
    out = score_problem(replies, "72", lengths=[10, 20, 30, 40], max_new_tokens=40)
    # the 4th reply hit the 40-token limit: truncated, hence wrong
    assert out["pass@1"] == 0.25 and out["pass@4"] == 1.0 and out["correct"] == 1.0
    assert out["truncated"] == 0.25 and out["mean_length"] == 25.0
    choice = score_problem(["x</think>(B)", "x</think>\\boxed{A}"], "B", kind="choice")
    assert choice["pass@1"] == 0.5


def test_summarize_lengths():
    assert summarize_lengths([1, 2, 3, 10]) == {"mean_length": 4.0, "median_length": 2.5}
    assert math.isnan(summarize_lengths([])["mean_length"])
