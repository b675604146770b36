"""Evaluation benchmarks of reasoning models, as lm-evaluation-harness tasks shipped inside the package.

The YAMLs in `hf_ssgr/tasks/` (see `tasks_path()`) define the tasks; this module holds what they call: the data
loaders (Hub by default, any local file instead) and the scoring. The tasks run under stock lm-eval:

    lm_eval --model hf --model_args pretrained=PATH --apply_chat_template \\
        --include_path $(python -m hf_ssgr.evaluation.registry) --tasks ssgr_reasoning

or through `hf_ssgr.evaluate`, whose model class reports exact token counts, finish reasons and generation time.

Scoring follows the papers: zero-shot, chat template, k sampled replies per problem, math-verify on the answer after
`</think>` (a letter for GPQA). A reply whose thinking never closed, or that hit the length limit, is not correct.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import statistics
from dataclasses import dataclass
from typing import Any

from ..calibration.prompts import PROMPT_SUFFIX
from ..verification import strip_math_delimiters
from .perplexity import PERPLEXITY_GROUPS, PERPLEXITY_TASKS
from .scoring import pass_at_k, score_problem

logger = logging.getLogger("hf_ssgr")

__all__ = [
    "Benchmark",
    "BENCHMARKS",
    "TASK_GROUPS",
    "Reply",
    "tasks_path",
    "list_tasks",
    "resolve_tasks",
    "load_benchmark",
    "process_results",
    "GPQA_SUFFIX",
]

GPQA_SUFFIX = "Please reason step by step, and put the letter of your final answer (A, B, C or D) within \\boxed{}."
DEFAULT_MAX_GEN_TOKS = 32768


@dataclass(frozen=True)
class Benchmark:
    """One evaluation task: where its data lives on the Hub and how it is scored.

    `parts` are `(dataset_id, config, split)` triples, concatenated in order (AIME = 2024 + 2025).
    """

    task: str
    title: str
    parts: tuple[tuple[str, str | None, str], ...]
    kind: str = "math"  # "math" (math-verify) or "choice" (a letter)
    license: str = ""
    gated: bool = False
    builder: Any = None  # a function returning the rows, for generated benchmarks (no Hub)

    @property
    def dataset_ids(self) -> list[str]:
        return [p[0] for p in self.parts]


def _tiny_test_rows():
    from ..tiny_reasoner import test_problems

    return [p.to_dict() for p in test_problems(per_level=40)]


BENCHMARKS: dict[str, Benchmark] = {
    b.task: b
    for b in [
        Benchmark("ssgr_gsm8k", "GSM8K", (("openai/gsm8k", "main", "test"),), license="MIT"),
        Benchmark("ssgr_math500", "MATH-500", (("HuggingFaceH4/MATH-500", None, "test"),), license="MIT"),
        Benchmark(
            "ssgr_aime",
            "AIME 2024+2025",
            (("HuggingFaceH4/aime_2024", None, "train"), ("math-ai/aime25", None, "test")),
            license="problems (c) MAA",
        ),
        Benchmark(
            "ssgr_aime24", "AIME 2024", (("HuggingFaceH4/aime_2024", None, "train"),), license="problems (c) MAA"
        ),
        Benchmark("ssgr_aime25", "AIME 2025", (("math-ai/aime25", None, "test"),), license="problems (c) MAA"),
        Benchmark(
            "ssgr_olympiadbench",
            "OlympiadBench",
            (("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),),
            license="Apache-2.0",
        ),
        Benchmark("ssgr_tiny_arith", "Tiny arithmetic (held out)", (), license="Apache-2.0", builder=_tiny_test_rows),
        Benchmark(
            "ssgr_livecodebench",
            "LiveCodeBench (code generation)",
            (("livecodebench/code_generation_lite", "release_v5", "test"),),
            kind="code",
            license="problems (c) LeetCode, AtCoder, Codeforces; see the dataset card",
        ),
        Benchmark(
            "ssgr_gpqa_diamond",
            "GPQA Diamond",
            (("Idavidrein/gpqa", "gpqa_diamond", "train"),),
            kind="choice",
            license="CC-BY-4.0",
            gated=True,
        ),
    ]
}

# The five benchmarks of the SSGR paper. Mirrors tasks/ssgr_reasoning.yaml (a test keeps the two in step).
TASK_GROUPS: dict[str, list[str]] = {
    "ssgr_reasoning": ["ssgr_gsm8k", "ssgr_math500", "ssgr_aime", "ssgr_olympiadbench", "ssgr_gpqa_diamond"],
}


def tasks_path() -> str:
    """The folder of the task YAMLs, for `lm_eval --include_path`."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")


def list_tasks() -> list[str]:
    """Every task and group name `evaluate` takes: the lm-eval benchmarks, then the perplexity tasks."""
    return sorted(BENCHMARKS) + sorted(TASK_GROUPS) + sorted(PERPLEXITY_TASKS) + sorted(PERPLEXITY_GROUPS)


def resolve_tasks(tasks: str | list[str]) -> list[str]:
    """Expand groups into their tasks, keeping order and dropping repeats; unknown names raise with the valid ones."""
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    if not names:
        raise ValueError(f"No task given: choose from {', '.join(list_tasks())}.")
    out: list[str] = []
    for name in names:
        if name in TASK_GROUPS or name in PERPLEXITY_GROUPS:
            leaves = TASK_GROUPS.get(name) or PERPLEXITY_GROUPS[name]
        elif name in BENCHMARKS or name in PERPLEXITY_TASKS:
            leaves = [name]
        else:
            raise ValueError(f"Unknown task {name!r}: valid tasks are {', '.join(list_tasks())}.")
        out.extend(t for t in leaves if t not in out)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Data


def _first(row: dict, names: tuple[str, ...]):
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    return None


def _math_doc(row: dict, idx: int, bench: Benchmark, origin: str) -> dict:
    problem = _first(row, ("problem", "question", "Question", "Problem"))
    answer = _first(row, ("answer", "final_answer", "Answer", "gold"))
    if problem is None or answer is None:
        raise ValueError(
            f"{bench.title} rows from {origin} need a problem column (problem/question) and an answer column "
            f"(answer/final_answer); found {sorted(row)}."
        )
    if isinstance(answer, list):  # OlympiadBench: a list of final answers, each in its own $...$
        answer = ", ".join(strip_math_delimiters(str(a)) for a in answer)
    answer = str(answer)
    if "####" in answer:  # GSM8K: the worked solution ends with "#### N"
        answer = answer.split("####")[-1].strip().replace(",", "")
    answer = strip_math_delimiters(answer)
    context = row.get("context")
    text = f"{context}\n\n{problem}" if context else str(problem)
    pid = _first(row, ("unique_id", "id", "problem_id", "ID"))
    return {
        "problem_id": f"{bench.task}/{pid if pid is not None else idx}",
        "prompt": f"{text}\n{PROMPT_SUFFIX}",
        "problem": str(problem),
        "answer": answer,
        "kind": bench.kind,
        "benchmark": bench.task,
        "level": str(_first(row, ("level", "difficulty")) or ""),
        "subject": str(_first(row, ("subject", "subfield", "type", "Subdomain")) or ""),
        "choices": [],
        "choice_order": [],
    }


_GPQA_COLUMNS = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
_LETTERS = "ABCD"


def _gpqa_doc(row: dict, idx: int, bench: Benchmark, origin: str, seed: int) -> dict:
    """A GPQA doc from a row of `Idavidrein/gpqa` (the options are shuffled with a fixed seed per question), or of a
    derivative file with `question`, `options` (four, already shuffled) and `answer` (a letter, `(B)`, or an index
    into the options), whose order is kept."""
    if all(c in row for c in _GPQA_COLUMNS):
        options = [str(row[c]).strip() for c in _GPQA_COLUMNS[1:]]
        record = row.get("Record ID") or str(idx)
        order = list(range(4))  # order[j] = index in `options` shown as letter j; options[0] is the correct one
        random.Random(f"{seed}:{record}").shuffle(order)
        choices = [options[i] for i in order]
        question = str(row["Question"]).strip()
        answer = _LETTERS[order.index(0)]
        level = str(row.get("Writer's Difficulty Estimate") or "")
        subject = str(row.get("High-level domain") or "")
    elif all(c in row for c in ("question", "options", "answer")):
        choices, answer = _derived_gpqa_options(row, idx, origin)
        record = str(_first(row, ("id", "Record ID", "problem_id")) or idx)
        order = list(range(len(choices)))  # the file's own order: letter j is options[j]
        question = str(row["question"]).strip()
        level = str(_first(row, ("difficulty", "level")) or "")
        subject = str(_first(row, ("domain", "subject", "High-level domain")) or "")
    else:
        raise ValueError(
            f"GPQA rows from {origin} need the columns of Idavidrein/gpqa ({', '.join(_GPQA_COLUMNS)}), or question, "
            "options (a list of the four options in the order shown) and answer (the correct letter A-D, or its index); "
            f"found {sorted(row)}. A file whose question already lists the options needs them split out into 'options'."
        )
    body = "\n".join(f"{_LETTERS[j]}) {c}" for j, c in enumerate(choices))
    return {
        "problem_id": f"{bench.task}/{record}",
        "prompt": f"{question}\n\n{body}\n{GPQA_SUFFIX}",
        "problem": question,
        "answer": answer,
        "kind": "choice",
        "benchmark": bench.task,
        "level": level,
        "subject": subject,
        "choices": choices,
        "choice_order": order,
    }


def _derived_gpqa_options(row: dict, idx: int, origin: str) -> tuple[list[str], str]:
    options = row["options"]
    if isinstance(options, dict):  # {"A": ..., "B": ...}
        options = [options[k] for k in sorted(options)]
    if isinstance(options, str) or not hasattr(options, "__len__"):
        raise ValueError(f"GPQA {origin}, row {idx}: 'options' must be a list of the four options, got {options!r}.")
    options = [str(o).strip() for o in options]
    if len(options) != 4:
        raise ValueError(f"GPQA {origin}, row {idx} has {len(options)} options; GPQA questions have four (A-D).")
    answer = row["answer"]
    if isinstance(answer, (int, float)) and not isinstance(answer, bool) and float(answer).is_integer():
        if not 0 <= int(answer) < 4:
            raise ValueError(f"GPQA {origin}, row {idx}: answer index {answer} is outside 0-3.")
        return options, _LETTERS[int(answer)]
    match = re.fullmatch(r"\s*(?:\\boxed\{)?\s*\(?\s*([A-Da-d])\s*\)?\s*\}?\s*", str(answer))
    if match is None:
        raise ValueError(
            f"GPQA {origin}, row {idx}: answer {answer!r} is not a letter A-D (or an index 0-3) into the options."
        )
    return options, match.group(1).upper()


def _access_hint(bench: Benchmark) -> str:
    local = (
        f"pass a local copy: evaluate(..., data_files={{{bench.task!r}: 'file.jsonl|.parquet|.csv'}}), or with lm_eval "
        f'--metadata \'{{"data_files": {{"{bench.task}": "file.jsonl"}}}}\''
    )
    if bench.gated:
        url = f"https://huggingface.co/datasets/{bench.parts[0][0]}"
        return f"{bench.parts[0][0]} is gated: accept its terms at {url} and log in (`hf auth login` or HF_TOKEN), or {local}"
    return f"Offline or without access, {local}"


def load_benchmark(task: str, data_file: str | list[str] | None = None, seed: int = 0, lcb: dict | None = None):
    """The problems of one task as a `Dataset` of docs: `problem_id`, `prompt` (the user turn), `problem`, `answer`,
    `kind`, `benchmark`, `level`, `subject`, and for GPQA `choices` (in the shown order) and `choice_order`.

    Args:
        task: a task name (see `list_tasks()`).
        data_file: a local copy (jsonl/json/parquet/csv file, a folder of them, or a `save_to_disk` folder; several
            files are concatenated) in the Hub dataset's fields; `None` reads the Hub.
        seed: the seed of GPQA's option shuffle (fixed per question, recorded in `choice_order`).
        lcb: LiveCodeBench's `release_version`, `start_date`, `end_date` (see `load_livecodebench`).
    """
    import datasets

    from ..calibration.sources import read_local

    if task not in BENCHMARKS:
        raise ValueError(f"Unknown task {task!r}: valid tasks are {', '.join(sorted(BENCHMARKS))}.")
    bench = BENCHMARKS[task]
    if bench.kind == "code":  # LiveCodeBench: its own fields, release and date window (see evaluation.livecodebench)
        from .livecodebench import load_livecodebench

        return load_livecodebench(data_file, **(lcb or {}))
    raw: list[tuple[str, Any]] = []
    if data_file is not None:
        for path in [data_file] if isinstance(data_file, (str, os.PathLike)) else list(data_file):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{bench.title}: the local data file {path} does not exist.")
            raw.append((str(path), read_local(str(path))))
    elif bench.builder is not None:
        raw.append((bench.task, bench.builder()))
    else:
        for dataset_id, config, split in bench.parts:
            try:
                ds = datasets.load_dataset(dataset_id, config, split=split)
            except Exception as err:  # noqa: BLE001 - offline, gated, missing: the same advice
                raise RuntimeError(
                    f"Could not load {bench.title} ({dataset_id}{'/' + config if config else ''}, split {split}) "
                    f"from the Hub: {type(err).__name__}: {err}. {_access_hint(bench)}."
                ) from err
            raw.append((dataset_id, ds))
    docs = []
    for origin, ds in raw:
        for row in ds:
            idx = len(docs)
            if bench.kind == "choice":
                docs.append(_gpqa_doc(row, idx, bench, origin, seed))
            else:
                docs.append(_math_doc(row, idx, bench, origin))
    if not docs:
        raise ValueError(f"{bench.title}: no rows were read from {[o for o, _ in raw]}.")
    features = datasets.Features(
        {
            **{
                c: datasets.Value("string")
                for c in ("problem_id", "prompt", "problem", "answer", "kind", "benchmark", "level", "subject")
            },
            "choices": datasets.List(datasets.Value("string")),
            "choice_order": datasets.List(datasets.Value("int64")),
        }
    )
    return datasets.Dataset.from_list(docs, features=features)


# ----------------------------------------------------------------------------------------------------------------
# What the task YAMLs call

# Per-task settings seen when the data was loaded (lm-eval passes its metadata, which holds the model arguments, to
# the loader only): the tokenizer that counts reply tokens under stock backends, and the length limit.
_TASK_CONTEXT: dict[str, dict[str, Any]] = {}
_TOKENIZERS: dict[str, Any] = {}
# the metadata keys that reach LiveCodeBench's grading (hf_ssgr.evaluation.livecodebench.score_code_replies)
SANDBOX_KEYS = ("allow_unsandboxed", "sandbox_workers", "lcb_timeout", "lcb_extraction", "lcb_stdin")


def load_task_dataset(task: str, **metadata):
    """`custom_dataset` of the task YAMLs. Metadata keys read: `data_files` ({task: path}), `gpqa_seed`, and for
    stock lm-eval backends `tokenizer` (else `pretrained`) and `max_gen_toks`."""
    import datasets

    data_files = metadata.get("data_files") or {}
    if isinstance(data_files, str):
        raise ValueError(
            f"data_files must map task names to files, e.g. {{{task!r}: {data_files!r}}}, not a bare path."
        )
    unknown = sorted(set(data_files) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"data_files names unknown tasks {unknown}: valid tasks are {', '.join(sorted(BENCHMARKS))}.")
    lcb_keys = ("release_version", "start_date", "end_date", "prompt_style")
    lcb = {k: metadata[f"lcb_{k}"] for k in lcb_keys if f"lcb_{k}" in metadata}
    docs = load_benchmark(task, data_files.get(task), seed=int(metadata.get("gpqa_seed", 0)), lcb=lcb)
    max_gen_toks = int(metadata.get("max_gen_toks") or DEFAULT_MAX_GEN_TOKS)
    if task == "ssgr_livecodebench":  # a bad grading setting fails here, before any reply is generated
        from .livecodebench import EXTRACTIONS, STDIN_MODES

        for key, allowed in (("lcb_extraction", EXTRACTIONS), ("lcb_stdin", STDIN_MODES)):
            if key in metadata and metadata[key] not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {metadata[key]!r}.")
    _TASK_CONTEXT[task] = {
        "sandbox": {k: metadata[k] for k in SANDBOX_KEYS if k in metadata},
        "tokenizer": metadata.get("tokenizer") or metadata.get("pretrained"),
        "max_gen_toks": _generation_limit(task, metadata.get("pretrained"), max_gen_toks),
    }
    return datasets.DatasetDict({"test": docs})


def _generation_limit(task: str, pretrained, max_gen_toks: int) -> int:
    """The reply length at which a stock backend stops: `max_gen_toks`, unless the model's generation_config.json
    sets `max_new_tokens`, which transformers lets take precedence over lm-eval's `max_length` (with a warning per
    batch). That case is warned about once here, and the smaller limit is the one that marks a reply truncated."""
    if not isinstance(pretrained, (str, os.PathLike)) or not os.path.isfile(
        os.path.join(str(pretrained), "generation_config.json")
    ):
        return max_gen_toks
    from transformers import GenerationConfig

    limit = GenerationConfig.from_pretrained(str(pretrained)).max_new_tokens
    if limit is None or limit == max_gen_toks:
        return max_gen_toks
    logger.warning(
        "%s: %s/generation_config.json sets max_new_tokens=%d, which overrides the task's max_gen_toks=%d under "
        "lm-eval's hf backend (transformers warns once per batch). Replies are cut at %d tokens and counted as "
        "truncated there. Remove max_new_tokens from generation_config.json, or evaluate with hf_ssgr.evaluate.",
        task, pretrained, limit, max_gen_toks, limit,
    )  # fmt: skip
    return min(limit, max_gen_toks)


class Reply(str):
    """A generated reply that knows its length in tokens, why generation stopped and its share of generation time,
    and, for code, its verdict once `GradeCode` has graded it.

    `hf_ssgr.evaluate`'s model class returns these; lm-eval passes them through its filters to `process_results`.
    """

    num_tokens: int
    finish_reason: str | None
    seconds: float
    verdict: Any

    def __new__(
        cls, text: str, num_tokens: int, finish_reason: str | None = None, seconds: float = float("nan"), verdict=None
    ):
        obj = super().__new__(cls, text)
        obj.num_tokens, obj.finish_reason, obj.seconds = int(num_tokens), finish_reason, float(seconds)
        obj.verdict = verdict
        return obj

    def __reduce__(self):
        return (Reply, (str(self), self.num_tokens, self.finish_reason, self.seconds, self.verdict))


class GradeCode:
    """An lm-eval filter (after `take_first_k`) that grades the programs of every code problem of a task at once, so
    the sandbox's workers stay busy across problems (lm-eval calls `process_results` one problem at a time). Each
    reply comes out as a `Reply` carrying its verdict; other problems pass through unchanged."""

    def __init__(self, **kwargs):
        pass

    def apply(self, resps, docs):
        from .livecodebench import grade_replies

        resps = [list(r) for r in resps]  # the filters before may hand on iterators
        code = [i for i, doc in enumerate(docs) if doc.get("kind") == "code"]
        if not code:
            return resps
        stats, problems = {}, []
        for i in code:
            stats[i] = [_reply_stats(docs[i]["benchmark"], r) for r in resps[i]]
            problems.append(([str(r) for r in resps[i]], docs[i]["answer"], [s[1] for s in stats[i]]))
        verdicts = grade_replies(problems, **_TASK_CONTEXT.get("ssgr_livecodebench", {}).get("sandbox", {}))
        for i, graded in zip(code, verdicts):
            resps[i] = [Reply(str(r), *st, verdict=v) for r, st, v in zip(resps[i], stats[i], graded)]
        return resps


def _tokenizer_for(task: str):
    name = _TASK_CONTEXT.get(task, {}).get("tokenizer")
    if name is None:
        raise ValueError(
            f"{task}: response lengths are counted in tokens, but no tokenizer is known. Pass the model as "
            '--model_args pretrained=... (lm-eval forwards it), or --metadata \'{"tokenizer": "..."}\', or '
            "evaluate with hf_ssgr.evaluate."
        )
    if not isinstance(name, str):
        return name
    if name not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[name] = AutoTokenizer.from_pretrained(name)
    return _TOKENIZERS[name]


def _reply_stats(task: str, reply) -> tuple[int, str | None, float]:
    if isinstance(reply, Reply):
        return reply.num_tokens, reply.finish_reason, reply.seconds
    # A stock lm-eval backend: re-encode the text, and call a reply of the limit's length truncated.
    n = len(_tokenizer_for(task)(str(reply), add_special_tokens=False)["input_ids"])
    limit = _TASK_CONTEXT.get(task, {}).get("max_gen_toks", DEFAULT_MAX_GEN_TOKS)
    return n, ("length" if n >= limit else None), float("nan")


def process_results(doc: dict, results: list) -> dict[str, Any]:
    """Per-problem metrics from its k replies: pass@1 (mean over the k), pass@k, lengths, truncation, time."""
    task = doc["benchmark"]
    if len(results) == 1 and isinstance(results[0], (list, tuple)):  # lm-eval: [the k filtered replies]
        results = list(results[0])
    stats = [_reply_stats(task, r) for r in results]
    lengths = [s[0] for s in stats]
    kwargs = {}
    if doc["kind"] == "code":
        graded = [getattr(r, "verdict", None) for r in results]
        kwargs["verdicts"] = graded if all(v is not None for v in graded) else None
    score = _score_code if doc["kind"] == "code" else score_problem
    scores = score(
        [str(r) for r in results],
        doc["answer"],
        kind=doc["kind"],
        lengths=lengths,
        finish_reasons=[s[1] for s in stats],
        **kwargs,
    )
    k = len(results)
    return {
        "pass@1": scores["pass@1"],
        "pass@k": pass_at_k(k, int(scores["correct"]), k),
        "mean_length": scores["mean_length"],
        "median_length": lengths,  # the aggregation takes the median over every reply of the task
        "truncated": scores["truncated"],
        "gen_seconds": math.fsum(s[2] for s in stats),
    }


def _score_code(
    replies: list[str], tests: str, *, kind: str, lengths: list[int], finish_reasons: list, verdicts=None
) -> dict:
    """LiveCodeBench: the k replies' programs graded in the sandbox (in parallel, unless `GradeCode` already graded
    them with every other problem's), scored as `score_problem` does."""
    from .livecodebench import score_code_replies

    options = _TASK_CONTEXT.get("ssgr_livecodebench", {}).get("sandbox", {})
    return score_code_replies(
        replies, tests, lengths=lengths, finish_reasons=finish_reasons, verdicts=verdicts, **options
    )


def median_of_all(items: list[list[int]]) -> float:
    values = [v for per_doc in items for v in per_doc]
    return float(statistics.median(values)) if values else float("nan")


def total(items: list[float]) -> float:
    return math.fsum(items)
