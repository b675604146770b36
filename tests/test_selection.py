import random

import pytest

from hf_ssgr.calibration.policies import eq1_pick, get_policy, list_policies
from hf_ssgr.calibration.store import VerifiedSample


def S(length, correct=True, idx=0, **flags):
    return VerifiedSample(sample_idx=idx, response_ids=[1] * length, finish_reason="eos", correct=correct, **flags)


def select_response(policy, samples, **kwargs):
    return get_policy(policy).select(samples, **kwargs)


def sampling_decided(policy, samples, n, tau):
    return get_policy(policy).is_decided(samples, n, tau)


def samples_before_decision(policy, samples, n, tau):
    return get_policy(policy).samples_before_decision(samples, n, tau)


def test_eq1_median_within_budget():
    # sorted lengths 10, 20, 30, 40: n'=4, m=2 -> the 2nd shortest (20) fits the budget
    assert eq1_pick([40, 10, 30, 20], budget=100) == 3


def test_eq1_longest_that_fits():
    # median (20) exceeds the budget 15 -> the longest response within it: 12
    assert eq1_pick([20, 12, 30, 5], budget=15) == 1


def test_eq1_shortest_when_nothing_fits():
    assert eq1_pick([20, 12, 30, 50], budget=5) == 1


def test_eq1_single_and_odd():
    assert eq1_pick([7], budget=1) == 0
    assert eq1_pick([30, 10, 20], budget=100) == 1  # n'=3, m=1 -> the shortest (1-based r_1)
    assert eq1_pick([50, 10, 20, 40, 30], budget=100) == 2  # n'=5, m=2 -> the 2nd shortest (20)


def test_tau_filtering():
    samples = [S(10, True, 0), S(20, True, 1), S(30, True, 2), S(40, False, 3)]  # c = 0.75
    assert select_response("ssgr", samples, tau=0.75).sample is not None
    d = select_response("ssgr", samples, tau=0.5)
    assert d.sample is None and d.reason == "too_easy" and d.correct_ratio == 0.75


def test_ssgr_drops_wrong_and_low_quality_then_takes_the_median():
    samples = [
        S(100, True, 0, repetitive=True),
        S(5, False, 1),
        S(30, True, 2),
        S(10, True, 3, no_reasoning=True),
        S(20, True, 4),
        S(40, True, 5, wrong_format=True),
        S(50, True, 6),
        S(60, False, 7),
    ]
    d = select_response("ssgr", samples + [S(1, False, 8)] * 2, tau=0.75)
    # good correct lengths: 30, 20, 50 -> n'=3, m=1 -> shortest (20)
    assert d.sample.sample_idx == 4
    assert select_response("ssgr", [S(10, True, 0, repetitive=True), S(5, False, 1)]).reason == "low_quality"
    assert select_response("ssgr", [S(10, False)] * 4).reason == "no_correct"


def test_ssgr_budget_comes_from_max_length():
    samples = [S(10, True, 0), S(20, True, 1), S(300, True, 2), S(400, True, 3)] + [S(1, False, 9)] * 4
    assert select_response("ssgr", samples, budget=1000).sample.sample_idx == 1
    assert select_response("ssgr", samples, budget=15).sample.sample_idx == 0


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("sgr", 1), ("correct", 1), ("incorrect", 0), ("rac", 0),
        ("short", 3), ("long", 2), ("median", 3), ("hard", None), ("medium", 1), ("easy", None),
    ],
)  # fmt: skip
def test_every_policy_on_synthetic_rollouts(policy, expected):
    # c = 0.75; correct lengths 30, 90, 10: Eq. 1 with n'=3 takes r_1 (m = ⌊3/2⌋ = 1, 1-based), the shortest
    samples = [S(50, False, 0), S(30, True, 1), S(90, True, 2), S(10, True, 3)]
    d = select_response(policy, samples)
    assert (d.sample.sample_idx if d.sample else None) == expected


def test_difficulty_bins():
    easy = [S(10, True, i) for i in range(4)]
    hard = [S(10, i == 0, i) for i in range(4)]  # c = 0.25
    assert select_response("easy", easy).sample is not None
    assert select_response("hard", hard).sample.sample_idx == 0
    assert select_response("medium", hard).reason == "difficulty"
    assert select_response("hard", easy).reason == "difficulty"


def test_random_length_policy_is_seeded():
    samples = [S(10 * i, True, i) for i in range(1, 9)]
    a = select_response("random", samples, rng=random.Random(3)).sample.sample_idx
    b = select_response("random", samples, rng=random.Random(3)).sample.sample_idx
    assert a == b


def test_aliases_and_unknown_policy():
    assert get_policy("difficulty_hard").name == "hard"
    assert get_policy("correctness_false").name == "incorrect"
    assert get_policy("SSGR").name == "ssgr"
    assert set(list_policies()) >= {"text", "human", "prompt_only", "sgr", "ssgr", "rac", "no_thinking"}
    with pytest.raises(ValueError, match="Unknown policy 'best'.*ssgr"):
        get_policy("best")


def test_sampling_decided_for_streaming():
    n, tau = 16, 0.75
    assert sampling_decided("ssgr", [S(1, True)] * 13, n, tau)  # 13 > 12: out, stop sampling
    assert not sampling_decided("ssgr", [S(1, True)] * 12, n, tau)
    assert sampling_decided("sgr", [S(1, False), S(1, True)], n, tau)
    assert not sampling_decided("sgr", [S(1, False)] * 3, n, tau)
    assert sampling_decided("easy", [S(1, True), S(1, False)], n, tau)
    assert sampling_decided("hard", [S(1, True)] * 9, n, tau)
    assert not sampling_decided("median", [S(1, True)] * 15, n, tau)
    assert sampling_decided("median", [S(1, True)] * 16, n, tau)


def test_samples_before_decision():
    assert samples_before_decision("ssgr", [], 16, 0.75) == 13  # out only with 13 correct
    assert samples_before_decision("ssgr", [S(1, True)] * 10, 16, 0.75) == 3
    assert samples_before_decision("ssgr", [S(1, False)] * 10, 16, 0.75) == 6  # capped by what is left
    assert samples_before_decision("sgr", [], 16, 0.75) == 1
    assert samples_before_decision("median", [S(1, True)] * 4, 16, 0.75) == 12
    assert samples_before_decision("median", [S(1, True)] * 16, 16, 0.75) == 0


def test_policies_without_rollouts_do_not_select():
    for name in ("text", "human", "prompt_only"):
        with pytest.raises(ValueError, match="does not select among rollouts"):
            select_response(name, [S(1)])
    assert select_response("ssgr", []).reason == "no_samples"


def test_difficulty_decisions_and_their_bounds():
    n = 16
    assert samples_before_decision("hard", [S(1, True)] * 5, n, 0.75) == 4  # out with 9 correct
    assert samples_before_decision("medium", [S(1, False)] * 3, n, 0.75) == 5  # out with 8 wrong
    assert sampling_decided("medium", [S(1, False)] * 8, n, 0.75)
    assert not sampling_decided("medium", [S(1, False)] * 7, n, 0.75)
    assert sampling_decided("incorrect", [S(1, True), S(1, False)], n, 0.75)
    assert sampling_decided("rac", [S(1, True)], n, 0.75) and samples_before_decision("rac", [], n, 0.75) == 1


def test_a_policy_plug_in_is_found_through_its_entry_point_by_the_cli(tmp_path, monkeypatch, capsys):
    import datasets
    from testing_utils import install_plugin

    import hf_ssgr.calibration.policies as policies
    from hf_ssgr.commands.cli import main

    source = (
        "from hf_ssgr.calibration.policies import Policy\n\n"
        "class AnswerOnly(Policy):\n"
        "    name = 'answer-only'\n"
        "    description = 'the problem and its gold answer as the reply'\n"
        "    generates = False\n"
        "    def problem_response(self, problem, tokenizer):\n"
        "        return tokenizer(str(problem['answer']), add_special_tokens=False)['input_ids']\n"
    )
    install_plugin(tmp_path, monkeypatch, "hf_ssgr_toy_policy", source, "hf_ssgr.policies",
                   "answer = hf_ssgr_toy_policy:AnswerOnly")  # fmt: skip
    monkeypatch.setattr(policies, "_ENTRY_POINTS_LOADED", False)
    try:
        out = tmp_path / "calib"
        argv = ["calibrate", "--model", "tiny", "--source", "tiny-arith", "--policy", "answer-only", "--num_samples", "3",
                "--save_dir", str(out)]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        ds = datasets.load_from_disk(str(out))
        assert len(ds) == 3 and set(ds["policy"]) == {"answer-only"}
        assert "answer-only" in policies.list_policies()
    finally:
        if policies.find_policy("answer-only") is not None:
            policies.unregister_policy("answer-only")
        import sys

        sys.modules.pop("hf_ssgr_toy_policy", None)
