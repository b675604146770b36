"""Answer extraction, equivalence checking and the quality filters of SSGR.

* The final answer of an R1-style reply is what follows `</think>`; its last `\\boxed{...}` is the answer. A reply
  that never closes its thinking, or that hit the length limit, is not correct (by default).
* Equivalence uses math-verify (`parse` + `verify`). Its time-outs use `signal.alarm`, so it is called on the main
  thread; elsewhere the time-out is disabled rather than crashing.
* Quality filters, each a named reason: `repetitive` (n-gram repetition), `no_reasoning` (empty or trivially short
  thinking), `wrong_format` (no boxed answer).

`accuracy_reward(completions, solution, **kwargs)` has TRL's reward signature, so the verifier plugs into GRPO.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass

__all__ = [
    "THINK_END",
    "extract_boxed",
    "split_thinking",
    "extract_answer",
    "normalize_gold",
    "is_equivalent",
    "quality_flags",
    "QualityConfig",
    "VerifiedReply",
    "verify_reply",
    "accuracy_reward",
]

THINK_START = "<think>"
THINK_END = "</think>"


def extract_boxed(text: str, last: bool = True) -> str | None:
    """Content of the last (or first) `\\boxed{...}` / `\\fbox{...}` in `text`, with nested braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    for start in reversed(starts) if last else starts:
        depth, i = 1, start
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            return text[start : i - 1].strip()
    return None


def split_thinking(text: str) -> tuple[str | None, str]:
    """Split a reply into (thinking, answer part). Thinking is `None` when `</think>` never appears.

    The generation prompt opens `<think>`, so a reply usually starts inside the thinking; a leading `<think>` is
    dropped if the model repeated it.
    """
    if THINK_END not in text:
        return None, ""
    thinking, _, answer = text.partition(THINK_END)
    thinking = thinking.split(THINK_START, 1)[-1] if THINK_START in thinking else thinking
    return thinking.strip(), answer


def extract_answer(text: str, finish_reason: str | None = None, require_think_end: bool = True) -> str | None:
    """The last boxed answer after `</think>`; `None` if the thinking never closed, the reply was truncated
    (`finish_reason == "length"`) or there is no boxed answer."""
    if finish_reason == "length":
        return None
    if THINK_END in text:
        _, answer_part = split_thinking(text)
    elif require_think_end:
        return None
    else:
        answer_part = text
    return extract_boxed(answer_part)


_GSM8K_NUMBER = re.compile(r"^-?[\d,]*\.?\d+$")


def normalize_gold(answer: str) -> str:
    """Gold answers as math-verify likes them: GSM8K numbers lose thousands separators, `$` and trailing units."""
    a = str(answer).strip()
    a = a.replace("\\$", "").replace("$", "").strip()
    if _GSM8K_NUMBER.match(a.replace(" ", "")):
        return a.replace(",", "").replace(" ", "")
    m = re.match(r"^(-?[\d,]*\.?\d+)\s*[a-zA-Z%]+\.?$", a)  # "18 dollars", "5 cm"
    if m:
        return m.group(1).replace(",", "")
    return a


def _wrap(expr: str) -> str:
    return expr if "\\boxed" in expr or expr.startswith("$") else f"${expr}$"


def is_equivalent(prediction: str | None, gold: str, timeout_seconds: int = 5) -> bool:
    """Whether `prediction` (the boxed content) and `gold` are mathematically equivalent, via math-verify."""
    if prediction is None or str(prediction).strip() == "":
        return False
    try:
        from math_verify import parse, verify
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("Answer verification needs math-verify: pip install 'hf-ssgr[math]'.") from err
    pred = normalize_gold(prediction)
    gold_n = normalize_gold(gold)
    if pred == gold_n:
        return True
    on_main = threading.current_thread() is threading.main_thread()
    kwargs = {} if on_main else {"parsing_timeout": None}
    try:
        gold_parsed = parse(_wrap(gold_n), **kwargs)
        pred_parsed = parse(_wrap(pred), **kwargs)
        if not gold_parsed or not pred_parsed:
            return False
        vkwargs = {"timeout_seconds": timeout_seconds} if on_main else {"timeout_seconds": None}
        return bool(verify(gold_parsed, pred_parsed, **vkwargs))
    except Exception:  # noqa: BLE001 - math-verify raises many kinds of errors on odd inputs; those are not equal
        return False


@dataclass
class QualityConfig:
    """Thresholds of the quality filters.

    Args:
        ngram (`int`, defaults to `20`): n-gram size, in whitespace words, of the repetition test.
        max_repeat_ratio (`float`, defaults to `0.3`): a reply is `repetitive` when more than this fraction of its
            n-grams are repeats of an earlier n-gram.
        min_thinking_words (`int`, defaults to `3`): thinking shorter than this is `no_reasoning`.
    """

    ngram: int = 20
    max_repeat_ratio: float = 0.3
    min_thinking_words: int = 3


def repetition_ratio(text: str, n: int) -> float:
    words = text.split()
    if len(words) < n + 1:
        return 0.0
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    total = len(words) - n + 1
    return sum(c - 1 for c in grams.values()) / total


def quality_flags(text: str, quality: QualityConfig | None = None) -> dict[str, bool]:
    """The SSGR quality filters for one reply: `repetitive`, `no_reasoning`, `wrong_format`."""
    q = quality or QualityConfig()
    thinking, answer_part = split_thinking(text)
    return {
        "repetitive": repetition_ratio(text, q.ngram) > q.max_repeat_ratio,
        "no_reasoning": thinking is None or len(thinking.split()) < q.min_thinking_words,
        "wrong_format": extract_boxed(answer_part if thinking is not None else text) is None,
    }


@dataclass
class VerifiedReply:
    extracted_answer: str | None
    correct: bool
    repetitive: bool
    no_reasoning: bool
    wrong_format: bool

    @property
    def low_quality(self) -> bool:
        return self.repetitive or self.no_reasoning or self.wrong_format


def verify_reply(
    text: str,
    gold: str,
    finish_reason: str | None = None,
    require_think_end: bool = True,
    quality: QualityConfig | None = None,
) -> VerifiedReply:
    answer = extract_answer(text, finish_reason, require_think_end)
    flags = quality_flags(text, quality)
    return VerifiedReply(answer, is_equivalent(answer, gold) if answer is not None else False, **flags)


def accuracy_reward(completions: list, solution: list[str], **kwargs) -> list[float | None]:
    """TRL-style reward: 1.0 when the boxed answer after `</think>` matches `solution`, else 0.0.

    `completions` are strings or conversational lists (`[{"role": "assistant", "content": ...}]`).
    """
    rewards = []
    for completion, gold in zip(completions, solution):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        rewards.append(1.0 if verify_reply(text, gold).correct else 0.0)
    return rewards
