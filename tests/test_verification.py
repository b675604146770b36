import json
import pathlib

import pytest

from hf_ssgr.verification import (
    accuracy_reward,
    extract_answer,
    extract_boxed,
    is_equivalent,
    normalize_gold,
    quality_flags,
    verify_reply,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def rows(name):
    return [json.loads(line) for line in open(FIXTURES / name, encoding="utf-8")]


def r1_reply(answer: str) -> str:
    return f"Let me work through this carefully step by step.\n</think>\n\nThe answer is \\boxed{{{answer}}}."


def test_extract_boxed_nested_and_last():
    assert extract_boxed(r"\boxed{1} then \boxed{\frac{a}{b+\sqrt{2}}}") == r"\frac{a}{b+\sqrt{2}}"
    assert extract_boxed(r"\boxed{1} then \boxed{2}", last=False) == "1"
    assert extract_boxed(r"\fbox{7}") == "7"
    assert extract_boxed("no box") is None
    assert extract_boxed(r"\boxed{unclosed") is None


def test_answer_comes_after_think_end():
    text = "thinking about \\boxed{3} ... </think> final \\boxed{4}"
    assert extract_answer(text) == "4"
    assert extract_answer("never closes \\boxed{4}") is None
    assert extract_answer("never closes \\boxed{4}", require_think_end=False) == "4"
    assert extract_answer("ok </think> \\boxed{4}", finish_reason="length") is None
    assert extract_answer("ok </think> no box") is None


@pytest.mark.parametrize("name", ["gsm8k_train_sample.jsonl", "gsm8k_test_sample.jsonl"])
def test_gsm8k_gold_answers_verify(name):
    for row in rows(name):
        gold = row["answer"].split("####")[-1].strip()
        assert verify_reply(r1_reply(gold), gold).correct, gold
        assert not verify_reply(r1_reply(str(int(gold.replace(",", "")) + 1)), gold).correct, gold


@pytest.mark.parametrize(
    "name, field",
    [
        ("math500_sample.jsonl", "answer"),
        ("aime24_sample.jsonl", "answer"),
        ("aime25_sample.jsonl", "answer"),
        ("olympiadbench_sample.jsonl", "final_answer"),
    ],
)
def test_competition_gold_answers_verify(name, field):
    for row in rows(name):
        gold = row[field][0] if isinstance(row[field], list) else str(row[field])
        gold = gold.strip("$")
        assert verify_reply(r1_reply(gold), gold).correct, gold
    # A MATH solution's own last \boxed{} equals the dataset's answer field.
    if name == "math500_sample.jsonl":
        for row in rows(name):
            assert is_equivalent(extract_boxed(row["solution"]), row["answer"]), row["unique_id"]


def test_gsm8k_numbers_with_commas_and_units():
    assert normalize_gold("1,000") == "1000"
    assert normalize_gold("$18") == "18"
    assert normalize_gold("18 dollars") == "18"
    assert is_equivalent("1,000", "1000")
    assert is_equivalent("\\$18", "18")
    assert is_equivalent("18 \\text{ dollars}", "18")
    assert is_equivalent("0.5", "\\frac{1}{2}")
    assert not is_equivalent("19", "18")
    assert not is_equivalent(None, "18")


def test_quality_flags():
    good = "First add 3 and 4 to get 7, then double it.\n</think>\n\\boxed{14}"
    assert quality_flags(good) == {"repetitive": False, "no_reasoning": False, "wrong_format": False}
    assert quality_flags("</think>\\boxed{14}")["no_reasoning"]
    assert quality_flags("some real reasoning here\n</think>\nfourteen")["wrong_format"]
    loop = " ".join(["wait let me recompute the sum again"] * 40) + "</think>\\boxed{1}"
    assert quality_flags(loop)["repetitive"]
    reply = verify_reply(loop, "1")
    assert reply.correct and reply.low_quality


def test_accuracy_reward_has_trl_signature():
    completions = [[{"role": "assistant", "content": r1_reply("72")}], r1_reply("71")]
    assert accuracy_reward(completions, solution=["72", "72"]) == [1.0, 0.0]
