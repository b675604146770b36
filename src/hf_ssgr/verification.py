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

import functools
import re
import threading
from collections import Counter
from dataclasses import dataclass

__all__ = [
    "THINK_END",
    "extract_boxed",
    "split_thinking",
    "extract_answer",
    "final_boxes",
    "reply_is_correct",
    "normalize_gold",
    "strip_math_delimiters",
    "UNIT_WORDS",
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
    boxes = _boxes(text)
    return boxes[-1 if last else 0][2].strip() if boxes else None


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


def _answer_part(text: str, finish_reason: str | None, require_think_end: bool) -> str | None:
    if finish_reason == "length":
        return None
    if THINK_END in text:
        return split_thinking(text)[1]
    return None if require_think_end else text


def extract_answer(text: str, finish_reason: str | None = None, require_think_end: bool = True) -> str | None:
    """The last boxed answer after `</think>`; `None` if the thinking never closed, the reply was truncated
    (`finish_reason == "length"`) or there is no boxed answer."""
    part = _answer_part(text, finish_reason, require_think_end)
    return None if part is None else extract_boxed(part)


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """Every `\\boxed{...}` / `\\fbox{...}` of `text` as (start, end, content), nested braces balanced."""
    found = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found.append((m.start(), i, text[m.end() : i - 1]))
    return found


# What may stand between the boxes of one final answer: `\boxed{1}, \boxed{2} and \boxed{3}`, `\(\boxed{1}\) or
# \(\boxed{2}\)`, `\boxed{1} \quad \text{and} \quad \boxed{2}`.
_BOX_JOIN = re.compile(
    r"^(?:\s|,|;|&|~|\$|\\[()\[\],;!]|\\q?quad|\\text\s*\{\s*(?:and|or|,)?\s*\}|\band\b|\bor\b)*$"
)


def final_boxes(text: str, finish_reason: str | None = None, require_think_end: bool = True) -> list[str]:
    """The boxed answers of a reply's final answer, in order: the last box after `</think>` and the boxes before it
    that only separators join to it (commas, `and`, `or`, `\\quad`, math delimiters), as in
    `\\boxed{-2} and \\boxed{1}`. Empty where `extract_answer` gives `None`."""
    part = _answer_part(text, finish_reason, require_think_end)
    boxes = _boxes(part) if part is not None else []
    if not boxes:
        return []
    run = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if not _BOX_JOIN.match(part[box[1] : run[0][0]]):
            break
        run.insert(0, box)
    return [content for _, _, content in run]


def _top_level_items(answer: str) -> list[str]:
    """The items of a list or set answer (`1, 2, 3`, `\\{1,2,3\\}`, `(1,2),(2,1)`, `1 and 2`); one item for
    anything else (a number, an interval, a single tuple)."""
    a = strip_math_delimiters(answer)
    for left, right in (("\\{", "\\}"), ("{", "}")):
        if a.startswith(left) and a.endswith(right):
            a = a[len(left) : -len(right)]
            break
    items, depth, start = [], 0, 0
    for i, ch in enumerate(a):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(a[start:i])
            start = i + 1
    items.append(a[start:])
    if len(items) == 1:
        items = re.split(r"\s+(?:and|\\text\{\s*and\s*\})\s+", a)
    return [i.strip() for i in items if i.strip()]


def _multi_valued(gold: str) -> bool:
    if len(_boxes(gold)) > 1:
        return True
    inner = extract_boxed(gold) if "\\boxed" in gold else gold
    return len(_top_level_items(inner or "")) > 1


def reply_is_correct(
    text: str, gold: str, finish_reason: str | None = None, require_think_end: bool = True
) -> tuple[str | None, bool]:
    """(the extracted answer, whether the reply is correct). The answer is the last box of the final answer, compared
    with `is_equivalent`; where the gold is a list or set and the final answer boxes its items one at a time
    (`\\boxed{1}, \\boxed{2} and \\boxed{3}` against `\\{1,2,3\\}`), those boxes taken together are compared too."""
    answer = extract_answer(text, finish_reason, require_think_end)
    if answer is None:
        return None, False
    if is_equivalent(answer, gold):
        return answer, True
    boxes = final_boxes(text, finish_reason, require_think_end)
    if len(boxes) > 1 and _multi_valued(gold):
        joined = ", ".join(strip_math_delimiters(b) for b in boxes)
        if is_equivalent(joined, gold):
            return joined, True
    return answer, False


# A single number whose comma groups are exactly three digits ("1,000", "1,234,567.5"): the commas are thousands
# separators. Anything else with commas ("1, 3, 5", "5,15") is a list and keeps them.
_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")  # a leading 0 group ("0,111") is a decimal comma
_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
# Unit words stripped after a number ("18 dollars", "5 cm"): words only, never a single letter, which may be a
# variable ("2n", "3m"). Matched case-insensitively, singular or plural.
UNIT_WORDS = (
    "dollar", "cent", "euro", "pound", "percent", "degree", "radian",
    "mm", "cm", "km", "meter", "metre", "inch", "inches", "foot", "feet", "ft", "yard", "yd", "mile", "mi",
    "mg", "kg", "gram", "ounce", "oz", "lb", "lbs", "ton", "tonne", "liter", "litre", "ml", "gallon", "quart", "pint",
    "second", "sec", "secs", "minute", "min", "mins", "hour", "hr", "hrs", "day", "week", "month", "year",
    "mph", "kph", "unit", "square unit", "sq unit", "cubic unit", "square feet", "square meter", "square inch",
    "square inches", "square cm", "square mile",
)  # fmt: skip
_UNIT_ALTERNATIVES = "|".join(re.escape(u).replace("\\ ", r"\s+") for u in sorted(UNIT_WORDS, key=len, reverse=True))
_UNIT_WORD = rf"(?:{_UNIT_ALTERNATIVES})(?:e?s)?"
# "18 dollars", "5cm", "\frac12 km^2": a known unit word at the end, after a number, a closing brace or a space.
# "18 \text{ eggs}", "3 \mbox{cm}^2": any words in a text box at the end after a number or a brace (a variable is
# never in a text box). "%" and "°" after a number.
_UNIT_TEXT = re.compile(
    r"(?<=[\d}])\s*\\(?:text|mbox|mathrm|textrm|textbf|textnormal|textit|textsf)\s*\{\s*[A-Za-z][A-Za-z\s.]*\}"
    r"(?:\^\{?[23]\}?)?\.?$"
)
_UNIT_PLAIN = re.compile(rf"(?<=[\d}}\s])\s*{_UNIT_WORD}(?:\^\{{?[23]\}}?)?\.?$", flags=re.IGNORECASE)
_UNIT_SIGN = re.compile(rf"^({_NUMBER})\s*(?:\\?%|°|\^\{{?\\circ\}}?)$")
# math-verify without its own unit rule, whose list has single letters (m, g, d, o) and so drops variables: "3m" would
# equal 3. Units are stripped by `normalize_gold` instead, from words only.
_NORMALIZATION = dict(basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all", equations=False)


def _strip_units(a: str) -> str:
    for pattern in (_UNIT_TEXT, _UNIT_PLAIN):
        stripped = pattern.sub("", a).strip()
        if stripped and stripped != a:
            return stripped
    m = _UNIT_SIGN.match(a)
    return m.group(1) if m else a


_DELIMITERS = [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")]


def strip_math_delimiters(answer: str) -> str:
    """Value-neutral clean-up: surrounding spaces, a trailing full stop, math delimiters (`$…$`, `\\(…\\)`, `\\[…\\]`,
    also one pair per list element as in `$a$, $b$`), and a full stop inside them (`$x$.`)."""
    a = str(answer).strip()
    while True:
        before = a
        a = a.strip()
        if a.endswith(".") and not a.endswith("..."):
            a = a[:-1].rstrip()
        for left, right in _DELIMITERS:
            if len(a) > len(left) + len(right) and a.startswith(left) and a.endswith(right):
                inner = a[len(left) : len(a) - len(right)]
                if left == "$" and "$" in inner.replace("\\$", ""):  # "$a$, $b$": one pair per element
                    continue
                a = inner
        if a == before:
            break
    # `$a$, $b$` (OlympiadBench lists): the inner dollars are delimiters too, `\$` (a currency sign) stays
    return re.sub(r"(?<!\\)\$", "", a).strip() if re.search(r"(?<!\\)\$", a) else a


def normalize_gold(answer: str) -> str:
    """An answer (gold or prediction) as math-verify likes it.

    Delimiters and a trailing full stop go (`$x$.` -> `x`), as do `\\$` and `\\!`; `{,}` becomes `,`. Commas are
    removed only from a single number whose groups are exactly three digits (`1,000`, `10,\\!080`), so lists such as
    `1, 3, 5` stay lists. A trailing unit word after a number goes (`18 dollars` -> `18`); a single letter never does
    (`2n` is kept). The same rules apply to golds and predictions.
    """
    a = strip_math_delimiters(answer)
    # `10,\!080`: a thin negative space after the comma marks a thousands separator in MATH; `20{,}000` likewise.
    a = re.sub(r",\s*\\!\s*", ",", a).replace("{,}", ",").replace("\\$", "").replace("\\!", "").strip()
    if _THOUSANDS.match(a):
        return a.replace(",", "")
    return _strip_units(a)


@functools.lru_cache(maxsize=1)
def _extraction_config():
    from latex2sympy2_extended.math_normalization import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return (LatexExtractionConfig(normalization_config=NormalizationConfig(**_NORMALIZATION)), ExprExtractionConfig())


def _wrap(expr: str) -> str:
    return expr if "\\boxed" in expr or expr.startswith("$") else f"${expr}$"


def is_equivalent(prediction: str | None, gold: str, timeout_seconds: int = 5) -> bool:
    """Whether `prediction` (the boxed content) and `gold` are mathematically equivalent, via math-verify.

    Both go through `normalize_gold`. Only answers that differ by spaces, delimiters or a trailing full stop are
    taken as equal without math-verify: every other rule of the normalisation could change a value, so its output is
    always compared by math-verify.
    """
    if prediction is None or str(prediction).strip() == "":
        return False
    try:
        from math_verify import parse, verify
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("Answer verification needs math-verify: pip install 'hf-ssgr[math]'.") from err
    if strip_math_delimiters(prediction) == strip_math_delimiters(gold):
        return True
    pred = normalize_gold(prediction)
    gold_n = normalize_gold(gold)
    on_main = threading.current_thread() is threading.main_thread()
    kwargs = {} if on_main else {"parsing_timeout": None}
    try:
        gold_parsed = parse(_wrap(gold_n), extraction_config=_extraction_config(), **kwargs)
        pred_parsed = parse(_wrap(pred), extraction_config=_extraction_config(), **kwargs)
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
    answer, correct = reply_is_correct(text, gold, finish_reason, require_think_end)
    return VerifiedReply(answer, correct, **quality_flags(text, quality))


def accuracy_reward(completions: list, solution: list[str], **kwargs) -> list[float | None]:
    """TRL-style reward: 1.0 when the boxed answer after `</think>` matches `solution`, else 0.0.

    `completions` are strings or conversational lists (`[{"role": "assistant", "content": ...}]`).
    """
    rewards = []
    for completion, gold in zip(completions, solution):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        rewards.append(1.0 if verify_reply(text, gold).correct else 0.0)
    return rewards
