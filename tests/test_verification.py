import json
import pathlib

import pytest

from hf_ssgr.verification import (
    accuracy_reward,
    extract_answer,
    extract_boxed,
    final_boxes,
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


# ----------------------------------------------------------------------------------------------------------------
# Lists, units, delimiters: what the normalisation may and may not do to a value


@pytest.mark.parametrize(
    "gold, prediction",
    [
        ("1, 3, 5", "5, 3, 1"),  # a set in another order
        ("1, 3, 5", "\\{1,3,5\\}"),  # the same set, as a set
        ("1,-2", "-2, 1"),  # MATH-500: "find all integers n"
        ("3, 5, 7", "7,5,3"),
        ("$6764$,$10945$", "6764, 10945"),  # OlympiadBench: one $...$ per element
        ("2400, 1350, 864", "2400,1350,864"),
        ("10,\\!080", "10080"),  # thousands separators, MATH style
        ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
        ("\\$32,\\!348", "32348"),
        ("58,500", "58500"),
        ("1,000", "1000"),
        ("20{,}000", "20000"),
    ],
)
def test_lists_and_thousands_separators_accept_true_equivalents(gold, prediction):
    assert is_equivalent(prediction, gold), (gold, prediction)


@pytest.mark.parametrize(
    "gold, prediction",
    [
        ("1, 3, 5", "135"),  # a list is not the number its digits spell
        ("1,3,9,11", "13911"),
        ("$6764$,$10945$", "676410945"),
        ("5,15", "515"),
        ("2400, 1350, 864", "24001350864"),
        ("-5,7", "-57"),
    ],
)
def test_lists_do_not_collapse_into_one_number(gold, prediction):
    assert not is_equivalent(prediction, gold), (gold, prediction)
    assert not is_equivalent(gold, prediction), (prediction, gold)


def test_thousands_rule_only_for_groups_of_three_digits():
    assert normalize_gold("1,000") == "1000"
    assert normalize_gold("1,234,567.5") == "1234567.5"
    assert normalize_gold("1, 3, 5") == "1, 3, 5"
    assert normalize_gold("5,15") == "5,15"
    assert normalize_gold("1,0000") == "1,0000"


@pytest.mark.parametrize("number, variable", [("2", "n"), ("2", "k"), ("3", "m"), ("5", "x"), ("4", "s")])
def test_unit_rule_never_drops_a_variable(number, variable):
    gold = f"{number}{variable}"
    assert normalize_gold(gold) == gold
    assert not is_equivalent(number, gold)
    assert not is_equivalent(gold, number)
    assert is_equivalent(f"{variable} \\cdot {number}", gold)


@pytest.mark.parametrize(
    "prediction, gold",
    [("18 dollars", "18"), ("5 cm", "5"), ("12 inches", "12"), ("3 hours", "3"), ("45 degrees", "45"), ("7 km.", "7")],
)
def test_known_unit_words_are_stripped(prediction, gold):
    assert is_equivalent(prediction, gold)
    assert not is_equivalent(prediction.replace(gold, str(int(gold) + 1), 1), gold)


def test_gold_with_trailing_period_and_dollar_delimiters():
    gold = "$(-\\infty, 0) \\cup\\{1\\}$."
    assert is_equivalent("(-\\infty,0)\\cup\\{1\\}", gold)
    assert is_equivalent("\\{1\\} \\cup (-\\infty, 0)", gold)
    assert not is_equivalent("(-\\infty, 0)", gold)
    assert not is_equivalent("0", gold)
    assert is_equivalent("5", "5.")
    assert is_equivalent("\\frac{1}{2}", "\\(\\frac12\\)")


def test_no_shortcut_through_a_value_changing_normalisation(monkeypatch):
    """Equal normalised strings are not taken as equal without math-verify when the normalisation changed a value."""
    import math_verify

    calls = []
    real = math_verify.verify

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(math_verify, "verify", spy)
    assert is_equivalent("18 dollars", "18")
    assert calls, "a unit-stripped answer went through the string shortcut"
    calls.clear()
    assert is_equivalent("  \\frac{1}{2} ", "$\\frac{1}{2}$")  # only delimiters and spaces differ
    assert not calls


def test_every_list_gold_of_the_fixtures_accepts_itself_reordered():
    checked = 0
    for name, field in [("math500_sample.jsonl", "answer"), ("olympiadbench_sample.jsonl", "final_answer")]:
        for row in rows(name):
            gold = row[field][0] if isinstance(row[field], list) else str(row[field])
            assert is_equivalent(gold, gold)
            checked += 1
    assert checked == 19


@pytest.mark.parametrize(
    "prediction",
    ["18 \\text{ eggs}", "18\\text{ dollars}", "18 \\mbox{cm}^2", "18 \\text{ square units}", "18 \\text{ km}."],
)
def test_words_in_a_text_box_after_a_number_are_units(prediction):
    assert is_equivalent(prediction, "18")
    assert not is_equivalent(prediction, "19")
    assert normalize_gold("\\text{Evelyn}") == "\\text{Evelyn}"  # a text answer alone is kept


# ----------------------------------------------------------------------------------------------------------------
# Answers boxed one at a time, decimal commas, units in bold or normal text


@pytest.mark.parametrize(
    "reply, gold",
    [
        ("ok</think>The answers are \\boxed{1}, \\boxed{2} and \\boxed{3}.", "\\{1,2,3\\}"),
        ("ok</think>\\(\\boxed{1}\\) and \\(\\boxed{-2}\\).", "$\\boxed{-2,1}$."),
        ("ok</think>\\[ \\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}. \\]", "-2, 1"),
        ("ok</think>\\[\n\\boxed{(1, 2)}, \\boxed{(2, 1)}, \\boxed{(-1, -20)}\n\\]", "(1,2),(2,1),(-1,-20)"),
        ("ok</think>First \\boxed{5}. So: \\boxed{3} or \\boxed{1}", "\\{1, 3\\}"),  # only the final run counts
    ],
)
def test_answers_boxed_one_at_a_time_match_a_list_gold(reply, gold):
    assert verify_reply(reply, gold).correct


@pytest.mark.parametrize(
    "reply, gold",
    [
        ("ok</think>\\boxed{1}, \\boxed{2}", "1"),  # a single-valued gold: the last box is the answer
        ("ok</think>\\boxed{1} and \\boxed{2}", "1, 2, 3"),  # some of the items only
        ("ok</think>\\boxed{1}. Then we check. Finally \\boxed{2}", "1, 2"),  # text between: not one answer
        ("\\boxed{1} and \\boxed{2}", "1, 2"),  # thinking never closed
    ],
)
def test_boxes_are_not_joined_otherwise(reply, gold):
    assert not verify_reply(reply, gold).correct


def test_single_valued_golds_keep_the_last_box():
    assert verify_reply("ok</think>\\boxed{1}, \\boxed{2}", "2").correct
    assert final_boxes("ok</think>\\boxed{1}, \\boxed{2} and \\(\\boxed{3}\\)") == ["1", "2", "3"]
    assert final_boxes("ok</think>no box") == [] and final_boxes("\\boxed{1}") == []


def test_a_leading_zero_group_is_a_decimal_comma():
    assert normalize_gold("0,111") != "111"
    assert is_equivalent("0.111", "0,111") and not is_equivalent("111", "0,111")
    assert normalize_gold("1,000") == "1000" and normalize_gold("12,345,678") == "12345678"


@pytest.mark.parametrize(
    "prediction, gold",
    [("\\frac{1}{3} \\textbf{ meters}", "1/3"), ("125\\textnormal{ miles}", "125"), ("7 \\textit{cm}", "7")],
)
def test_units_in_bold_or_normal_text_are_stripped(prediction, gold):
    assert normalize_gold(prediction) != prediction and is_equivalent(prediction, gold)
