"""Selection policies: which response of a problem becomes a calibration row.

Every policy that reads rollouts works per problem, on the list of that problem's samples (dicts with
`response_ids`, `correct`, `finish_reason` and the quality flags), so selection can stream: problems are visited in a
seeded random order and sampling stops once enough rows are selected. `sampling_decided` tells the generator when a
problem's fate is already known, so it can stop sampling that problem early.

| policy | rows are |
|---|---|
| `text` | random windows of `max_length` tokens from a corpus (no rollouts) |
| `human` | problem + human-written solution (no rollouts) |
| `prompt_only` | the problem statement alone (no rollouts) |
| `sgr` | the first correct response |
| `ssgr` | c = k/n ≤ τ, correct, quality-filtered, median length within the budget (Eq. 1) |
| `rac` | prompt + on-policy chain of thought, any correctness, until a token budget |
| `easy` / `medium` / `hard` | first correct response of problems with c = 1 / 0.5 < c < 1 / c ≤ 0.5 |
| `short` / `median` / `long` / `random` | shortest / Eq. 1 median / longest / a random correct response |
| `correct` / `incorrect` | the first correct / the first incorrect response |
| `no_thinking` | the `ssgr` response with its thinking removed |
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "POLICIES",
    "POLICY_ALIASES",
    "GENERATION_POLICIES",
    "canonical_policy",
    "eq1_pick",
    "select_response",
    "sampling_decided",
    "samples_before_decision",
    "Decision",
]

POLICIES = (
    "text", "human", "prompt_only", "sgr", "ssgr", "rac", "easy", "medium", "hard",
    "short", "median", "long", "random", "correct", "incorrect", "no_thinking",
)  # fmt: skip
POLICY_ALIASES = {
    "difficulty_easy": "easy",
    "difficulty_medium": "medium",
    "difficulty_hard": "hard",
    "length_short": "short",
    "length_median": "median",
    "length_long": "long",
    "length_random": "random",
    "correctness_true": "correct",
    "correctness_false": "incorrect",
    "sgr_no_thinking": "no_thinking",
    "mathr": "human",
}
NO_GENERATION_POLICIES = ("text", "human", "prompt_only")
GENERATION_POLICIES = tuple(p for p in POLICIES if p not in NO_GENERATION_POLICIES)


def canonical_policy(policy: str) -> str:
    p = str(policy).lower()
    p = POLICY_ALIASES.get(p, p)
    if p not in POLICIES:
        raise ValueError(
            f"Unknown policy {policy!r}: choose one of {', '.join(POLICIES)} (aliases: {', '.join(POLICY_ALIASES)})."
        )
    return p


def eq1_pick(lengths: list[int], budget: int) -> int:
    """SSGR Eq. 1 on the lengths of the filtered correct responses; returns the index into `lengths`.

    With l_1 ≤ … ≤ l_n' sorted and m = ⌊n'/2⌋ (1-based, at least 1): pick r_m if l_m ≤ budget; else the longest r_i
    with l_i ≤ budget; else the shortest response. Ties keep the original order (stable sort).
    """
    if not lengths:
        raise ValueError("Eq. 1 needs at least one response.")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    m = max(len(order) // 2, 1) - 1
    if lengths[order[m]] <= budget:
        return order[m]
    fitting = [i for i in order if lengths[i] <= budget]
    if fitting:
        return fitting[-1]
    return order[0]


@dataclass
class Decision:
    """The outcome of a policy on one problem: the chosen sample (or `None`) and why."""

    sample: dict | None
    reason: str  # "selected", or the filter that dropped the problem
    correct_ratio: float | None = None


def _ratio(samples: list[dict]) -> float:
    return sum(bool(s["correct"]) for s in samples) / len(samples)


def _good(s: dict) -> bool:
    return bool(s["correct"]) and not (s.get("repetitive") or s.get("no_reasoning") or s.get("wrong_format"))


def select_response(
    policy: str,
    samples: list[dict],
    *,
    tau: float = 0.75,
    budget: int | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """Apply a rollout policy to one problem's samples.

    `budget` is l' = max_length − l_q (tokens left for the response); `None` means unlimited.
    """
    policy = canonical_policy(policy)
    if policy in NO_GENERATION_POLICIES:
        raise ValueError(f"policy {policy!r} does not select among rollouts.")
    if not samples:
        return Decision(None, "no_samples")
    c = _ratio(samples)
    budget = budget if budget is not None else 1 << 62

    def first(pred, reason):
        for s in samples:
            if pred(s):
                return Decision(s, "selected", c)
        return Decision(None, reason, c)

    if policy == "rac":
        return Decision(samples[0], "selected", c)
    if policy in ("sgr", "correct"):
        return first(lambda s: s["correct"], "no_correct")
    if policy == "incorrect":
        return first(lambda s: not s["correct"], "no_incorrect")
    if policy in ("easy", "medium", "hard"):
        in_bin = {"easy": c == 1.0, "medium": 0.5 < c < 1.0, "hard": c <= 0.5}[policy]
        if not in_bin:
            return Decision(None, "difficulty", c)
        return first(lambda s: s["correct"], "no_correct")
    if policy in ("ssgr", "no_thinking"):
        if c > tau:
            return Decision(None, "too_easy", c)
        correct = [s for s in samples if s["correct"]]
        if not correct:
            return Decision(None, "no_correct", c)
        good = [s for s in correct if _good(s)]
        if not good:
            return Decision(None, "low_quality", c)
        return Decision(good[eq1_pick([len(s["response_ids"]) for s in good], budget)], "selected", c)
    # length policies, among correct responses
    correct = [s for s in samples if s["correct"]]
    if not correct:
        return Decision(None, "no_correct", c)
    lengths = [len(s["response_ids"]) for s in correct]
    if policy == "short":
        return Decision(correct[min(range(len(correct)), key=lambda i: lengths[i])], "selected", c)
    if policy == "long":
        return Decision(correct[max(range(len(correct)), key=lambda i: lengths[i])], "selected", c)
    if policy == "median":
        return Decision(correct[eq1_pick(lengths, budget)], "selected", c)
    return Decision((rng or random.Random(0)).choice(correct), "selected", c)


def sampling_decided(policy: str, samples: list[dict], n: int, tau: float) -> bool:
    """Whether more samples of this problem could change the policy's decision (streaming early stop).

    True once the outcome is fixed: for `ssgr`, more than τ·n correct samples put the problem out; for `sgr` and
    `correct`, the first correct sample is chosen; for `incorrect`, the first incorrect one; `rac` takes one sample;
    for `easy`, one wrong sample puts the problem out; for `hard`, more than n/2 correct; for `medium`, n/2 or more
    wrong. A problem that stays in needs all n samples (its correct ratio and, for the length policies and `ssgr`'s
    median, every correct response).
    """
    policy = canonical_policy(policy)
    k = sum(bool(s["correct"]) for s in samples)
    wrong = len(samples) - k
    if len(samples) >= n:
        return True
    if policy in ("ssgr", "no_thinking"):
        return k > tau * n
    if policy in ("sgr", "correct"):
        return k > 0
    if policy == "incorrect":
        return wrong > 0
    if policy == "rac":
        return len(samples) >= 1
    if policy == "easy":
        return wrong > 0
    if policy == "hard":
        return k > n / 2
    if policy == "medium":
        return wrong >= n / 2  # c = k/n ≤ 0.5 for sure
    return False


def samples_before_decision(policy: str, samples: list[dict], n: int, tau: float) -> int:
    """A lower bound on how many more samples must be drawn before `sampling_decided` can turn true.

    Drawing fewer than this between two checks only adds generation rounds: e.g. SSGR with n = 16 and τ = 0.75 can
    only rule a problem out once it has 13 correct samples.
    """
    policy = canonical_policy(policy)
    k = sum(bool(s["correct"]) for s in samples)
    wrong = len(samples) - k
    left = n - len(samples)
    if policy in ("ssgr", "no_thinking"):
        need = int(tau * n) + 1 - k
    elif policy == "hard":
        need = n // 2 + 1 - k
    elif policy == "medium":
        need = -(-n // 2) - wrong
    elif policy in ("sgr", "correct", "incorrect", "rac", "easy"):
        need = 1
    else:
        need = left
    return max(1, min(need, left)) if left > 0 else 0
