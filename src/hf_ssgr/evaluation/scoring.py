"""Scoring of sampled reasoning replies: pass@1 over k samples, pass@k, response lengths and truncation.

These are the per-problem metrics the evaluation tasks report. A reply counts as correct only if its thinking is
closed (`</think>`), it did not hit the length limit, and its final answer matches: math answers through
math-verify (`hf_ssgr.verification`), multiple-choice answers (GPQA) through `extract_choice_letter`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence

from ..verification import THINK_END, extract_boxed, reply_is_correct, split_thinking

__all__ = ["pass_at_k", "extract_choice_letter", "score_problem", "problem_metrics", "summarize_lengths"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 − C(n−c, k)/C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k}).")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mathsf|texttt|bf|rm)\s*\{([^{}]*)\}")
# Inside \boxed{}: a letter alone (any case), "(D)", or "D) / D. / D: " followed by the option's text.
_BOXED_LETTER = [
    re.compile(r"\(?\s*([A-Da-d])\s*\)?\s*[.:]?"),
    re.compile(r"\(\s*([A-D])\s*\)\s*.+", flags=re.S),
    re.compile(r"([A-D])\s*[.):]\s*.+", flags=re.S),
    re.compile(r"(?i:option|choice)\s*\(?([A-D])\)?\s*[.:]?"),
]
# "A" is also an English article: a capital A followed by a lower-case word continues a sentence ("The answer is A
# small value") unless the word is a connective.
_NOT_A_SENTENCE = r"(?![A-Za-z0-9])(?!\s+(?!(?:because|since|as|which|for|and|but|so|with)\b)[a-z])"
_LETTER_PATTERNS = [
    # "The answer is C", "Answer: (C)", "final answer: **C**", "the correct option is C"
    re.compile(rf"(?i:answer|option|choice)\s*(?:(?i:is)\s*)?[:：]?\s*\**\s*\(?([A-D])\)?\**{_NOT_A_SENTENCE}"),
    re.compile(r"^\s*\**\s*\(?([A-D])\)?\s*\**\s*[.)]?\s*$", flags=re.M),  # a line that is only a letter
    re.compile(r"\(([A-D])\)"),
]


def _boxed_letter(boxed: str) -> str | None:
    content = boxed
    while True:
        unwrapped = _TEXT_WRAPPER.sub(r"\1", content)
        if unwrapped == content:
            break
        content = unwrapped
    content = content.replace("$", "").strip().strip("*").strip()
    for pattern in _BOXED_LETTER:
        m = pattern.fullmatch(content)
        if m:
            return m.group(1).upper()
    return None


def extract_choice_letter(text: str, finish_reason: str | None = None, require_think_end: bool = True) -> str | None:
    """The chosen option letter (A–D) of a multiple-choice reply, read after `</think>`.

    Tried in order: the last `\\boxed{}` if it holds a letter (`\\boxed{C}`, `\\boxed{(c)}`, `\\boxed{\\text{C}}`,
    `\\boxed{C) text}`, `\\boxed{C. text}`, `\\boxed{Option C}`); then, in the prose, the last "answer is C" /
    "Answer: (C)" / "final answer: **C**"; a line that is only a letter; the last "(C)". Outside a box a letter is
    a capital standing alone, so prose such as "the answer is a small value" or "The answer is A small value" is
    not read as A. `None` when the thinking never closed, the reply was truncated, or no letter is found.
    """
    if finish_reason == "length":
        return None
    if THINK_END in text:
        _, text = split_thinking(text)
    elif require_think_end:
        return None
    boxed = extract_boxed(text)
    if boxed is not None:
        letter = _boxed_letter(boxed)
        if letter is not None:
            return letter
    for pattern in _LETTER_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return matches[-1]
    return None


def _is_correct(reply: str, gold: str, kind: str, finish_reason: str | None) -> bool:
    if kind == "choice":
        return extract_choice_letter(reply, finish_reason) == gold.strip().upper()
    return reply_is_correct(reply, gold, finish_reason)[1]


def score_problem(
    replies: Sequence[str],
    gold: str,
    *,
    kind: str = "math",
    lengths: Sequence[int] | None = None,
    max_new_tokens: int | None = None,
    finish_reasons: Sequence[str | None] | None = None,
) -> dict[str, float]:
    """Metrics of one problem from its k sampled replies.

    Args:
        replies: the k replies (text after the generation prompt).
        gold: the gold answer (a math expression, or a letter for `kind="choice"`).
        lengths: response lengths in tokens; with `max_new_tokens`, a reply of that length counts as truncated.
        finish_reasons: `"length"` marks a truncated reply explicitly (it then is not correct).

    Returns `pass@1` (mean correctness over the k replies: the papers' avg pass@1), `pass@k` (any correct),
    `correct` (count), `mean_length` and `truncated` (fraction), each a float.
    """
    if not replies:
        raise ValueError("score_problem needs at least one reply.")
    k = len(replies)
    reasons = list(finish_reasons) if finish_reasons is not None else [None] * k
    if lengths is not None and max_new_tokens is not None:
        reasons = ["length" if (r == "length" or n >= max_new_tokens) else r for r, n in zip(reasons, lengths)]
    return problem_metrics([_is_correct(r, gold, kind, f) for r, f in zip(replies, reasons)], reasons, lengths)


def problem_metrics(
    correct: Sequence[bool], finish_reasons: Sequence[str | None], lengths: Sequence[int] | None = None
) -> dict[str, float]:
    """The metrics of one problem from its k replies' verdicts: `pass@1`, `pass@k`, `correct`, `truncated` (the share
    of replies whose finish reason is `"length"`) and, with `lengths`, `mean_length`."""
    k, c = len(correct), sum(bool(x) for x in correct)
    out = {
        "pass@1": c / k,
        f"pass@{k}": pass_at_k(k, c, k),
        "correct": float(c),
        "truncated": sum(r == "length" for r in finish_reasons) / k,
    }
    if lengths is not None:
        out["mean_length"] = float(statistics.fmean(lengths))
    return out


def summarize_lengths(lengths: Sequence[int]) -> dict[str, float]:
    """Mean and median response length (tokens) over every sampled reply of a benchmark."""
    if not lengths:
        return {"mean_length": float("nan"), "median_length": float("nan")}
    return {"mean_length": float(statistics.fmean(lengths)), "median_length": float(statistics.median(lengths))}
