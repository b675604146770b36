"""Calibration policies: one [`Policy`] object each, in a registry (`register_policy`, `get_policy`).

A policy says everything the calibrator needs to know about it:

* where its rows come from (`source_kind`, `generates`): windows of a text corpus, one row per problem without
  generation (`problem_response`), or the model's own rollouts;
* its generation defaults (`num_generations`, `max_new_tokens`);
* for rollouts, which sample of a problem becomes the row (`select`) and what part of it (`row_response`);
* when a problem's fate is decided, so that sampling it can stop early (`is_decided`), and how many more samples a
  decision can need at least (`samples_before_decision`);
* whether rows are collected up to `CalibrationConfig.token_budget` tokens (`stops_at_token_budget`).

Rollout policies work per problem, on the list of that problem's [`VerifiedSample`]s, so selection streams: problems
are visited in a seeded random order and sampling stops once enough rows are selected.

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

A new policy is a subclass of `Policy` (or an instance of an existing class under a new name) and one call:

```python
class LastCorrect(Policy):
    name = "last_correct"
    description = "the last correct response"

    def choose(self, samples, correct_ratio, *, tau, budget, rng):
        correct = [s for s in samples if s.correct]
        return Decision(correct[-1] if correct else None, "selected" if correct else "no_correct", correct_ratio)


register_policy(LastCorrect())
calib = SSGRCalibrator(CalibrationConfig(policy="last_correct")).build(model, "MathR", tokenizer=tok)
```
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..verification import THINK_END

if TYPE_CHECKING:
    from .store import VerifiedSample

logger = logging.getLogger("hf_ssgr")

__all__ = [
    "ENTRY_POINT_GROUP",
    "Policy",
    "Decision",
    "register_policy",
    "unregister_policy",
    "get_policy",
    "find_policy",
    "list_policies",
    "policy_aliases",
    "eq1_pick",
    "correct_ratio",
    "num_correct",
    "first_match",
    "think_end_index",
]

UNLIMITED_BUDGET = 1 << 62


@dataclass
class Decision:
    """The outcome of a policy on one problem: the chosen sample (or `None`) and why.

    Args:
        sample ([`VerifiedSample`], *optional*): the sample that becomes the row; `None` drops the problem.
        reason (`str`): `"selected"`, or the filter that dropped the problem (counted under this name).
        correct_ratio (`float`, *optional*): c = k/n of the problem's samples.
    """

    sample: VerifiedSample | None
    reason: str
    correct_ratio: float | None = None


def correct_ratio(samples: list[VerifiedSample]) -> float:
    """c = k/n: the share of correct samples (of a non-empty list)."""
    return num_correct(samples) / len(samples)


def num_correct(samples: list[VerifiedSample]) -> int:
    """k: the number of correct samples."""
    return sum(bool(s.correct) for s in samples)


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


def first_match(
    samples: list[VerifiedSample], pred: Callable[[VerifiedSample], bool], reason: str, c: float
) -> Decision:
    """The first sample satisfying `pred`, or a drop for `reason`."""
    for s in samples:
        if pred(s):
            return Decision(s, "selected", c)
    return Decision(None, reason, c)


# --------------------------------------------------------------------------------------------------------------------
# The base class


class Policy:
    """A calibration policy. Subclass it, set the class attributes and override the hooks of its kind, then
    `register_policy(MyPolicy())`.

    Attributes:
        name (`str`): the registry name (matched case-insensitively); `CalibrationConfig.policy` and the `policy`
            column of the rows hold it.
        aliases (`tuple[str, ...]`): other names that resolve to this policy.
        description (`str`): one line: what the rows are.
        generates (`bool`, defaults to `True`): rows come from the model's own rollouts (`select`). `False`: from
            the source alone, without loading the model's weights (`problem_response`, or corpus windows when
            `source_kind` is `"text"`).
        source_kind (`str`, defaults to `"problems"`): the kind of source it reads, `"problems"` or `"text"`.
        num_generations (`int`, defaults to `16`) / max_new_tokens (`int`, defaults to `32768`): the defaults of
            `CalibrationConfig.num_generations` and `max_new_tokens` under this policy.
        stops_at_token_budget (`bool`, defaults to `False`): collect rows until `CalibrationConfig.token_budget`
            tokens (or `num_samples` rows); fewer rows than `num_samples` is then expected, not warned about.
        dropped_reason (`str`): the count under which `row_response` / `problem_response` returning `None` is kept.

    Args:
        name / aliases / description (*optional*): set them on the instance instead of the class, to register one
            class under several names (e.g. `FirstCorrect("sgr")` and `FirstCorrect("correct")`).
    """

    name: str = ""
    aliases: tuple[str, ...] = ()
    description: str = ""
    generates: bool = True
    source_kind: str = "problems"
    num_generations: int = 16
    max_new_tokens: int = 32768
    stops_at_token_budget: bool = False
    dropped_reason: str = "dropped"

    def __init__(
        self, name: str | None = None, *, aliases: tuple[str, ...] | None = None, description: str | None = None
    ):
        if name is not None:
            self.name = name
        if aliases is not None:
            self.aliases = tuple(aliases)
        if description is not None:
            self.description = description

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # -- rollout policies -----------------------------------------------------------------------------------------

    def select(
        self,
        samples: list[VerifiedSample],
        *,
        tau: float = 0.75,
        budget: int | None = None,
        rng: random.Random | None = None,
    ) -> Decision:
        """Apply the policy to one problem's samples.

        Args:
            samples (`list[VerifiedSample]`): the problem's samples, in `sample_idx` order.
            tau (`float`, defaults to `0.75`): SSGR's threshold on the correct ratio.
            budget (`int`, *optional*): l' = max_length − l_q, the tokens left for the response; unlimited if `None`.
            rng (`random.Random`, *optional*): for policies that draw at random (seeded `Random(0)` if `None`).
        """
        if not self.generates:
            raise ValueError(f"policy {self.name!r} does not select among rollouts.")
        if not samples:
            return Decision(None, "no_samples")
        return self.choose(
            samples,
            correct_ratio(samples),
            tau=tau,
            budget=budget if budget is not None else UNLIMITED_BUDGET,
            rng=rng if rng is not None else random.Random(0),
        )

    def choose(
        self, samples: list[VerifiedSample], correct_ratio: float, *, tau: float, budget: int, rng: random.Random
    ) -> Decision:
        """The hook of `select`, on a non-empty list of samples whose correct ratio is `correct_ratio`."""
        raise NotImplementedError(f"{type(self).__name__} generates rollouts but does not implement choose().")

    def row_response(self, response_ids: list[int], tokenizer) -> list[int] | None:
        """The part of the selected response that follows the prompt in the row (all of it by default); `None`
        drops the problem (counted under `dropped_reason`)."""
        return response_ids

    def is_decided(self, samples: list[VerifiedSample], n: int, tau: float) -> bool:
        """Whether more samples of this problem could no longer change the decision (the streaming early stop).

        True once all `n` samples are drawn, or when `decided_early` says so.
        """
        return len(samples) >= n or self.decided_early(samples, n, tau)

    def decided_early(self, samples: list[VerifiedSample], n: int, tau: float) -> bool:
        """The hook of `is_decided` for fewer than `n` samples: `False` by default (the decision needs them all)."""
        return False

    def samples_before_decision(self, samples: list[VerifiedSample], n: int, tau: float) -> int:
        """A lower bound on how many more samples must be drawn before `is_decided` can turn true (between 1 and
        the samples left; 0 when all `n` are drawn).

        Drawing fewer than this between two checks only adds generation rounds: e.g. SSGR with n = 16 and τ = 0.75
        can only rule a problem out once it has 13 correct samples.
        """
        left = n - len(samples)
        return max(1, min(self.samples_to_decide(samples, n, tau), left)) if left > 0 else 0

    def samples_to_decide(self, samples: list[VerifiedSample], n: int, tau: float) -> int:
        """The hook of `samples_before_decision`: every sample left by default."""
        return n - len(samples)

    # -- policies without generation ------------------------------------------------------------------------------

    def problem_response(self, problem: dict, tokenizer) -> list[int] | None:
        """For a policy that generates nothing from a problem source: the token ids that follow the prompt in the
        problem's row (`[]` for the prompt alone); `None` drops the problem (counted under `dropped_reason`)."""
        raise ValueError(f"policy {self.name!r} generates rollouts: it builds no row from a problem alone.")


# --------------------------------------------------------------------------------------------------------------------
# Policies without generation


class TextWindows(Policy):
    """Random windows of `max_length` tokens from a text corpus, as SparseGPT and Wanda sample C4."""

    name = "text"
    description = "random windows of max_length tokens from a corpus (no rollouts)"
    generates = False
    source_kind = "text"

    def problem_response(self, problem, tokenizer):
        raise ValueError("policy 'text' reads a text corpus: it builds no row from a problem.")


class PromptOnly(Policy):
    """The templated problem statement alone."""

    name = "prompt_only"
    description = "the problem statement alone (no rollouts)"
    generates = False

    def problem_response(self, problem, tokenizer):
        return []


class Human(Policy):
    """The problem, then its human-written solution as the reply; problems without one are dropped."""

    name = "human"
    aliases = ("mathr",)
    description = "problem + human-written solution (no rollouts)"
    generates = False
    dropped_reason = "no_solution"

    def problem_response(self, problem, tokenizer):
        if not problem["solution"]:
            return None
        return tokenizer(problem["solution"], add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------------------------------------------------
# Rollout policies


class FirstCorrect(Policy):
    """The first correct response (`sgr`, `correct`); decided by the first correct sample."""

    def choose(self, samples, correct_ratio, *, tau, budget, rng):
        return first_match(samples, lambda s: s.correct, "no_correct", correct_ratio)

    def decided_early(self, samples, n, tau):
        return num_correct(samples) > 0

    def samples_to_decide(self, samples, n, tau):
        return 1


class FirstIncorrect(Policy):
    """The first incorrect response; decided by the first incorrect sample."""

    name = "incorrect"
    aliases = ("correctness_false",)
    description = "the first incorrect response"

    def choose(self, samples, correct_ratio, *, tau, budget, rng):
        return first_match(samples, lambda s: not s.correct, "no_incorrect", correct_ratio)

    def decided_early(self, samples, n, tau):
        return len(samples) - num_correct(samples) > 0

    def samples_to_decide(self, samples, n, tau):
        return 1


class RAC(Policy):
    """Prompt + one on-policy chain of thought, whatever its correctness, until a token budget (RAC's T_max = 8192)."""

    name = "rac"
    description = "prompt + on-policy chain of thought, any correctness, until a token budget"
    num_generations = 1
    max_new_tokens = 8192
    stops_at_token_budget = True

    def choose(self, samples, correct_ratio, *, tau, budget, rng):
        return Decision(samples[0], "selected", correct_ratio)

    def decided_early(self, samples, n, tau):
        return len(samples) >= 1

    def samples_to_decide(self, samples, n, tau):
        return 1


class SSGR(Policy):
    """SSGR: problems with c = k/n ≤ τ; among their correct, quality-filtered responses, the Eq. 1 median within the
    budget. Decided once more than τ·n samples are correct (the problem is out); a problem that stays in needs all n.
    """

    name = "ssgr"
    description = "c = k/n ≤ τ, correct, quality-filtered, median length within the budget (Eq. 1)"

    def choose(self, samples, correct_ratio, *, tau, budget, rng):
        if correct_ratio > tau:
            return Decision(None, "too_easy", correct_ratio)
        correct = [s for s in samples if s.correct]
        if not correct:
            return Decision(None, "no_correct", correct_ratio)
        good = [s for s in correct if not s.low_quality]
        if not good:
            return Decision(None, "low_quality", correct_ratio)
        return Decision(good[eq1_pick([len(s.response_ids) for s in good], budget)], "selected", correct_ratio)

    def decided_early(self, samples, n, tau):
        return num_correct(samples) > tau * n

    def samples_to_decide(self, samples, n, tau):
        return int(tau * n) + 1 - num_correct(samples)


class NoThinking(SSGR):
    """The `ssgr` response from `</think>` on: its thinking removed; responses that never close it are dropped."""

    name = "no_thinking"
    aliases = ("sgr_no_thinking",)
    description = "the ssgr response with its thinking removed"
    dropped_reason = "no_think_end"

    def row_response(self, response_ids, tokenizer):
        cut = think_end_index(response_ids, tokenizer)
        return None if cut is None else response_ids[cut:]


class DifficultyBin(Policy):
    """The first correct response of the problems whose correct ratio falls in the bin (`in_bin`)."""

    def in_bin(self, correct_ratio: float) -> bool:
        raise NotImplementedError

    def choose(self, samples, correct_ratio, *, tau, budget, rng):
        if not self.in_bin(correct_ratio):
            return Decision(None, "difficulty", correct_ratio)
        return first_match(samples, lambda s: s.correct, "no_correct", correct_ratio)


class Easy(DifficultyBin):
    """c = 1; one wrong sample puts the problem out."""

    name = "easy"
    aliases = ("difficulty_easy",)
    description = "first correct response of problems with c = 1"

    def in_bin(self, correct_ratio):
        return correct_ratio == 1.0

    def decided_early(self, samples, n, tau):
        return len(samples) - num_correct(samples) > 0

    def samples_to_decide(self, samples, n, tau):
        return 1


class Medium(DifficultyBin):
    """0.5 < c < 1; n/2 or more wrong samples put the problem out (c ≤ 0.5 for sure)."""

    name = "medium"
    aliases = ("difficulty_medium",)
    description = "first correct response of problems with 0.5 < c < 1"

    def in_bin(self, correct_ratio):
        return 0.5 < correct_ratio < 1.0

    def decided_early(self, samples, n, tau):
        return len(samples) - num_correct(samples) >= n / 2

    def samples_to_decide(self, samples, n, tau):
        return -(-n // 2) - (len(samples) - num_correct(samples))


class Hard(DifficultyBin):
    """c ≤ 0.5; more than n/2 correct samples put the problem out."""

    name = "hard"
    aliases = ("difficulty_hard",)
    description = "first correct response of problems with c ≤ 0.5"

    def in_bin(self, correct_ratio):
        return correct_ratio <= 0.5

    def decided_early(self, samples, n, tau):
        return num_correct(samples) > n / 2

    def samples_to_decide(self, samples, n, tau):
        return n // 2 + 1 - num_correct(samples)


class LengthPick(Policy):
    """One of the correct responses, chosen by length (`pick`); the choice needs all n samples."""

    def pick(self, lengths: list[int], budget: int, rng: random.Random) -> int:
        """The index of the chosen response among the correct ones, from their lengths."""
        raise NotImplementedError

    def choose(self, samples, correct_ratio, *, tau, budget, rng):
        correct = [s for s in samples if s.correct]
        if not correct:
            return Decision(None, "no_correct", correct_ratio)
        lengths = [len(s.response_ids) for s in correct]
        return Decision(correct[self.pick(lengths, budget, rng)], "selected", correct_ratio)


class Shortest(LengthPick):
    name = "short"
    aliases = ("length_short",)
    description = "the shortest correct response"

    def pick(self, lengths, budget, rng):
        return min(range(len(lengths)), key=lambda i: lengths[i])


class Median(LengthPick):
    name = "median"
    aliases = ("length_median",)
    description = "the Eq. 1 median correct response"

    def pick(self, lengths, budget, rng):
        return eq1_pick(lengths, budget)


class Longest(LengthPick):
    name = "long"
    aliases = ("length_long",)
    description = "the longest correct response"

    def pick(self, lengths, budget, rng):
        return max(range(len(lengths)), key=lambda i: lengths[i])


class RandomCorrect(LengthPick):
    name = "random"
    aliases = ("length_random",)
    description = "a random correct response"

    def pick(self, lengths, budget, rng):
        return rng.choice(range(len(lengths)))


def think_end_index(response_ids: list[int], tokenizer) -> int | None:
    """Index of the first token whose prefix decodes to text containing `</think>`, minus the tokens of `</think>`
    itself, so that `response_ids[index:]` starts with `</think>`; `None` when the response never closes it. Found by
    bisection on decoded prefixes."""
    if THINK_END not in tokenizer.decode(response_ids, skip_special_tokens=False):
        return None
    lo, hi = 0, len(response_ids)
    while lo < hi:  # smallest prefix containing </think>
        mid = (lo + hi) // 2
        if THINK_END in tokenizer.decode(response_ids[: mid + 1], skip_special_tokens=False):
            hi = mid
        else:
            lo = mid + 1
    end = lo + 1
    start = end - 1
    while start > 0 and THINK_END not in tokenizer.decode(response_ids[start:end], skip_special_tokens=False):
        start -= 1
    return start


# --------------------------------------------------------------------------------------------------------------------
# The registry

_POLICIES: dict[str, Policy] = {}
_ALIASES: dict[str, str] = {}
# Packages make policies known without being imported first through this entry-point group: each entry point loads a
# `Policy` object or subclass (`[hf_ssgr.policies]` `mine = my_package:MyPolicy`), registered on first use.
ENTRY_POINT_GROUP = "hf_ssgr.policies"
_ENTRY_POINTS_LOADED = False


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from ..utils import load_plugins

    def add(loaded) -> None:
        policy = loaded() if isinstance(loaded, type) and issubclass(loaded, Policy) else loaded
        if not isinstance(policy, Policy):
            raise TypeError(f"it loads {type(policy).__name__}, not a Policy object or subclass")
        if policy.name.lower() not in _POLICIES:
            register_policy(policy)

    load_plugins(ENTRY_POINT_GROUP, add)


def register_policy(policy: Policy, *, overwrite: bool = False) -> Policy:
    """Register `policy` under its `name` and `aliases` (matched case-insensitively) and return it.

    Args:
        policy ([`Policy`]): the policy object.
        overwrite (`bool`, defaults to `False`): replace a policy registered under the same name.
    """
    if not isinstance(policy, Policy):
        raise TypeError(f"register_policy takes a Policy object, got {type(policy).__name__}: subclass Policy.")
    if not policy.name:
        raise ValueError(f"{type(policy).__name__} has no name: set `name` on the class or pass Policy(name=...).")
    if policy.source_kind not in ("problems", "text"):
        raise ValueError(f"policy {policy.name!r}: source_kind={policy.source_kind!r} is 'problems' or 'text'.")
    if policy.generates and policy.source_kind != "problems":
        raise ValueError(
            f"policy {policy.name!r} generates rollouts, so it reads problems: set source_kind='problems'."
        )
    key = policy.name.lower()
    replaced = key if overwrite and key in _POLICIES else None

    def taken(name: str) -> bool:
        owner = name if name in _POLICIES else _ALIASES.get(name)
        return owner is not None and owner != replaced

    clashes = [n for n in (key, *(a.lower() for a in policy.aliases)) if taken(n)]
    if clashes:
        raise ValueError(
            f"A policy named {clashes[0]!r} is already registered: pass overwrite=True to replace it, or choose another "
            "name."
        )
    if replaced is not None:
        unregister_policy(replaced)
    _POLICIES[key] = policy
    for alias in policy.aliases:
        _ALIASES[alias.lower()] = key
    return policy


def unregister_policy(name: str) -> Policy:
    """Remove a policy (given by its name or an alias) and its aliases from the registry; return it."""
    policy = get_policy(name)
    key = policy.name.lower()
    del _POLICIES[key]
    for alias in [a for a, target in _ALIASES.items() if target == key]:
        del _ALIASES[alias]
    return policy


def find_policy(name: str) -> Policy | None:
    """The policy registered under `name` or an alias (case-insensitive), or `None`; the `hf_ssgr.policies`
    entry points are loaded the first time a name is not found."""
    key = str(name).lower()
    found = _POLICIES.get(_ALIASES.get(key, key))
    if found is None and not _ENTRY_POINTS_LOADED:
        _load_entry_points()
        found = _POLICIES.get(_ALIASES.get(key, key))
    return found


def get_policy(name: str) -> Policy:
    """The policy registered under `name` or an alias (case-insensitive); an unknown name lists the known ones."""
    policy = find_policy(name)
    if policy is None:
        raise ValueError(
            f"Unknown policy {name!r}: choose one of {', '.join(list_policies())} (aliases: "
            f"{', '.join(policy_aliases())}), or register one with hf_ssgr.calibration.policies.register_policy."
        )
    return policy


def list_policies(generates: bool | None = None) -> list[str]:
    """The names of the registered policies, in registration order; only those that generate rollouts (or only those
    that do not) with `generates=True` (`False`); entry-point plug-ins included."""
    _load_entry_points()
    return [p.name for p in _POLICIES.values() if generates is None or p.generates == generates]


def policy_aliases() -> dict[str, str]:
    """Every alias and the name of the policy it stands for."""
    return {alias: _POLICIES[key].name for alias, key in _ALIASES.items()}


# Built-in policies, in the order of the table above.
for _policy in (
    TextWindows(),
    Human(),
    PromptOnly(),
    FirstCorrect("sgr", description="the first correct response"),
    SSGR(),
    RAC(),
    Easy(),
    Medium(),
    Hard(),
    Shortest(),
    Median(),
    Longest(),
    RandomCorrect(),
    FirstCorrect("correct", aliases=("correctness_true",), description="the first correct response"),
    FirstIncorrect(),
    NoThinking(),
):
    register_policy(_policy)
del _policy
