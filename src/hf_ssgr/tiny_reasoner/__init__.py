"""The embedded tiny reasoning model and its synthetic world: multi-step arithmetic word problems.

`MODEL_PATH` is a Llama-architecture model of about 2.4M parameters trained by `scripts/train_tiny_reasoner.py`
(seeded) to answer the problems below R1-style: it thinks step by step inside `<think> … </think>` and puts the
answer in `\\boxed{}`. It loads with `AutoModelForCausalLM.from_pretrained(MODEL_PATH)` and has an offline
character-level tokenizer with an R1-style chat template, so the whole pipeline runs on any CPU without the Hub.

The problem generator is deterministic (`random.Random(seed)`) and provides:

* training problems with short human-style solutions (the analogue of MathR's human solutions),
* held-out test problems, disjoint from training (a problem's split is fixed by a hash of its text),
* a plain-text corpus of everyday sentences with numbers (the analogue of C4).

Difficulty grows with the number of steps and the size of the numbers: levels 1–5 chain 1, 2, 3, 4 and 5 operations;
operands have one digit up to level 3, up to 19 at level 4 and up to 99 at level 5; intermediate values stay below
100 at levels 1–2, 1000 at levels 3–4 and 10000 at level 5 (multi-digit products are what a tiny model gets wrong).
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass

__all__ = [
    "MODEL_PATH",
    "MOE_MODEL_PATH",
    "LEVELS",
    "Problem",
    "make_problem",
    "split_of",
    "train_problems",
    "test_problems",
    "text_corpus",
    "reasoning_text",
    "varied_reasoning_text",
    "VARIED_MODEL_PATH",
    "build_tokenizer",
    "CHAT_TEMPLATE",
    "WORD_TOKENS",
]

MODEL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model")
# The same world learnt by a mixture of experts (Qwen3-MoE: 8 experts, top 2), `scripts/train_tiny_reasoner.py --arch
# qwen3_moe`.
MOE_MODEL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_moe")
# A second reasoner of the same world whose chains of thought vary between samples as R1's do (restating the problem,
# checking steps, slips caught or not, longer routes, shortcuts): `scripts/train_tiny_reasoner.py --teacher varied`.
VARIED_MODEL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_varied")
LEVELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}  # level -> number of operations
MAX_OPERAND = {1: 9, 2: 9, 3: 9, 4: 19, 5: 99}  # level -> largest operand (and start value)
MAX_VALUE = {1: 99, 2: 99, 3: 999, 4: 999, 5: 9999}  # level -> largest intermediate value
TEST_FRACTION = 0.15
_NAMES = ["Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "June", "Kai", "Lea"]
_THINGS = ["apples", "coins", "books", "cards", "eggs", "pens", "stamps", "shells"]
_VERBS = {"+": "gets {d} more", "-": "gives away {d}", "*": "multiplies them by {d}"}


@dataclass(frozen=True)
class Problem:
    problem: str
    answer: int
    level: int
    steps: tuple[tuple[int, str, int, int], ...]  # (left, op, operand, result)

    @property
    def problem_id(self) -> str:
        return f"tiny/L{self.level}/{hashlib.sha1(self.problem.encode()).hexdigest()[:10]}"

    @property
    def solution(self) -> str:
        """A short human-style worked solution (what a textbook would print)."""
        work = ", ".join(f"{a}{op}{d}={r}" for a, op, d, r in self.steps)
        return f"{work}. The answer is {self.answer}."

    def to_dict(self) -> dict:
        return {
            "problem_id": self.problem_id,
            "problem": self.problem,
            "answer": str(self.answer),
            "solution": self.solution,
            "level": str(self.level),
        }


def make_problem(level: int, rng: random.Random) -> Problem:
    """One problem of `level` (1–5): a start value and a chain of operations, told as a short word problem."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {sorted(LEVELS)} (got {level}).")
    value = rng.randint(1, MAX_OPERAND[level])
    steps = []
    for _ in range(LEVELS[level]):
        options = []
        top = MAX_VALUE[level]
        for d in range(1, MAX_OPERAND[level] + 1):
            if value + d <= top:
                options.append(("+", d))
            if value - d >= 0:
                options.append(("-", d))
            if 2 <= d and value * d <= top and value > 0:
                options.append(("*", d))
        op, d = rng.choice(options)
        result = value + d if op == "+" else value - d if op == "-" else value * d
        steps.append((value, op, d, result))
        value = result
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    actions = ", then ".join(_VERBS[op].format(d=d) for _, op, d, _ in steps)
    text = f"{name} has {steps[0][0]} {thing}, {actions}. How many {thing} now?"
    return Problem(text, value, level, tuple(steps))


def split_of(problem: str) -> str:
    """`"test"` for a fixed ~15% of all possible problem texts (by hash), `"train"` for the rest."""
    h = int(hashlib.sha256(problem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < TEST_FRACTION else "train"


def reasoning_text(p: Problem) -> str:
    """The R1-style reply the model is trained on (after the `<think>` that opens the generation prompt)."""
    lines = "\n".join(f"{a}{op}{d}={r}" for a, op, d, r in p.steps)
    return f"{lines}\n</think>\n\\boxed{{{p.answer}}}"


def _slip(value: int, rng: random.Random) -> int:
    """A plausible wrong result near `value` (off by one or two, or by ten), never `value`, and never negative when
    `value` is not (a chain that carried an earlier slip on may have gone below zero)."""
    while True:
        wrong = value + rng.choice([-2, -1, 1, 2, -10, 10])
        if wrong != value and (wrong >= 0 or value < 0):
            return wrong


def _result_text(a: int, op: str, d: int, r: int, rng: random.Random, long_route: float) -> str:
    """`a op d=r`, or with probability `long_route` a longer route when one exists: partial products for a
    multiplication by a two-digit number or of a two-digit value, tens then units for a two-digit addition or
    subtraction."""
    if rng.random() < long_route:
        if op == "*" and d >= 10:
            t, u = d - d % 10, d % 10
            if u:
                return f"{a}*{d}={a}*{t}+{a}*{u}={a * t}+{a * u}={r}"
        if op == "*" and a >= 10:
            t, u = a - a % 10, a % 10
            if u:
                return f"{a}*{d}={t}*{d}+{u}*{d}={t * d}+{u * d}={r}"
        if op in "+-" and d >= 10 and d % 10:
            t, u = d - d % 10, d % 10
            mid = a + t if op == "+" else a - t
            if mid >= 0:
                return f"{a}{op}{d}={a}{op}{t}{op}{u}={mid}{op}{u}={r}"
    return f"{a}{op}{d}={r}"


def _check_text(a: int, op: str, d: int, r: int) -> str:
    """A verification of `a op d = r` by the inverse operation."""
    if op == "+":
        return f"check: {r}-{d}={a}"
    if op == "-":
        return f"check: {r}+{d}={a}"
    return f"check: {r}/{d}={a}"


def varied_reasoning_text(p: Problem, rng: random.Random) -> tuple[str, bool]:
    """One reply of the stochastic teacher of the varied reasoner, and whether its answer is right (two uncaught slips
    can cancel out: the answer is what a verifier sees).

    Like R1's, its chains of thought differ between samples of one problem: it sometimes restates the problem first,
    checks a step by the inverse operation, takes a longer route (partial products, tens then units), takes a
    shortcut (two additions or subtractions in one line), slips (a result off by one, two or ten) and catches it
    ("wait, 7*8=56"), or, rarely, does not catch the slip and carries the wrong value to a wrong answer. Slips are
    likelier on larger numbers. The probabilities of the optional moves are near one half, so that they survive the
    sharpening of sampling at temperature 0.6.
    """
    lines = []
    if rng.random() < 0.5:
        lines.append(f"start {p.steps[0][0]}, " + " ".join(f"{op}{d}" for _, op, d, _ in p.steps))
    value = p.steps[0][0]
    i = 0
    steps = p.steps
    while i < len(steps):
        _, op, d, _ = steps[i]
        a = value
        if (
            op in "+-"
            and i + 1 < len(steps)
            and steps[i + 1][1] in "+-"
            and rng.random() < 0.4
        ):  # a shortcut: two steps in one line
            op2, d2 = steps[i + 1][1], steps[i + 1][2]
            mid = a + d if op == "+" else a - d
            r = mid + d2 if op2 == "+" else mid - d2
            if mid >= 0 and r >= 0:
                lines.append(f"{a}{op}{d}{op2}{d2}={r}")
                value = r
                i += 2
                continue
        r = a + d if op == "+" else a - d if op == "-" else a * d
        slip_rate = 0.08 if r < 100 else 0.2
        if rng.random() < slip_rate:
            wrong = _slip(r, rng)
            if rng.random() < 0.75:  # caught
                lines.append(f"{a}{op}{d}={wrong} wait, {a}{op}{d}={r}")
            else:  # not caught: the wrong value carries on
                lines.append(f"{a}{op}{d}={wrong}")
                r = wrong
        else:
            lines.append(_result_text(a, op, d, r, rng, long_route=0.5))
            if rng.random() < 0.4:
                lines.append(_check_text(a, op, d, r))
        value = r
        i += 1
    if rng.random() < 0.4:
        lines.append(f"so the answer is {value}")
    return "\n".join(lines) + f"\n</think>\n\\boxed{{{value}}}", value == p.answer


def _draw(split: str, levels, seed: int, per_level: int | None, total: int | None, distinct: bool):
    rng = random.Random(seed)
    levels = list(levels)
    out, seen = [], set()
    counts = dict.fromkeys(levels, 0)
    tries = 0
    want = per_level * len(levels) if per_level is not None else total
    while len(out) < want:
        tries += 1
        if tries > 200 * want + 10000:
            break  # a level has fewer distinct problems of this split than asked (level 1 is small)
        level = levels[len(out) % len(levels)] if per_level is None else rng.choice(levels)
        if per_level is not None and counts[level] >= per_level:
            continue
        p = make_problem(level, rng)
        if split_of(p.problem) != split or (distinct and p.problem in seen):
            continue
        seen.add(p.problem)
        counts[level] += 1
        out.append(p)
    return out


def train_problems(n: int, seed: int = 0, levels=(1, 2, 3, 4, 5)) -> list[Problem]:
    """`n` training-split problems, levels cycled evenly (repeats allowed: level 1 has few distinct problems)."""
    return _draw("train", levels, seed, None, n, distinct=False)


def test_problems(per_level: int = 40, seed: int = 1234, levels=(1, 2, 3, 4, 5)) -> list[Problem]:
    """Distinct held-out problems, `per_level` of each level (fewer for level 1 if its test split is smaller)."""
    return _draw("test", levels, seed, per_level, None, distinct=True)


_SUBJECTS = ["The baker", "A farmer", "My aunt", "The team", "Our class", "The shop", "A driver", "The city"]
_ACTS = ["bought", "sold", "painted", "counted", "packed", "found", "moved", "cleaned"]
_PLACES = ["in the morning", "near the river", "at the market", "after lunch", "on Monday", "before the rain"]
_ENDS = ["It was a long day.", "Everyone was happy.", "Nobody asked why.", "The sun was bright.", "Then they rested."]


def text_corpus(n_docs: int = 2000, seed: int = 7) -> list[str]:
    """Plain everyday text with numbers and no reasoning (the C4 analogue): short paragraphs of 3–6 sentences."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(3, 6)):
            thing = rng.choice(_THINGS)
            sentences.append(
                f"{rng.choice(_SUBJECTS)} {rng.choice(_ACTS)} {rng.randint(2, 99)} {thing} {rng.choice(_PLACES)}."
            )
        sentences.append(rng.choice(_ENDS))
        docs.append(" ".join(sentences))
    return docs


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|user|>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}"
)

# Whole words and phrases as single tokens (a hand-made merge table): prompts stay short, digits stay characters.
WORD_TOKENS = (
    ["Please reason step by step, and put your final answer within \\boxed{}."]
    + [f"{n} has " for n in _NAMES]
    + [f" {t}" for t in _THINGS]
    + ["gets ", " more", "gives away ", "multiplies them by ", ", then ", ". How many", " now?", "\\boxed{"]
)


def build_tokenizer():
    """The tiny model's tokenizer, built offline: characters, a few word tokens, `<think>`/`</think>`, and special
    tokens `<|pad|>`, `<|end|>` (EOS), `<|user|>`, `<|assistant|>`."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>"]
    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    fast.add_tokens(["<think>", "</think>"] + WORD_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 512
    return fast
