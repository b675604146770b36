"""Problem sources and text corpora: a registry, extensible with `register_source`.

Every source loads either from the Hub (its default dataset id) or from a local path (a `.jsonl`/`.json`/`.parquet`
file, a `save_to_disk` folder, or a folder of such files), so everything works offline.

Problem sources normalise to a `Dataset` with columns `problem_id`, `problem`, `answer` (the gold final answer),
`solution` (the human-written solution, `""` when there is none), `source` and `level`. Text corpora normalise to
`text` and `source`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..verification import extract_boxed

__all__ = [
    "SourceSpec",
    "register_source",
    "unregister_source",
    "get_source",
    "find_source",
    "list_sources",
    "load_source",
    "load_problems",
    "load_texts",
    "read_local",
    "PROBLEM_COLUMNS",
]

PROBLEM_COLUMNS = ["problem_id", "problem", "answer", "solution", "source", "level"]
_PROBLEM_ALIASES = ("problem", "question", "prompt", "Problem", "Question")
_ANSWER_ALIASES = ("answer", "final_answer", "gold", "target", "Answer")
_SOLUTION_ALIASES = ("solution", "reasoning", "explanation", "Solution")


@dataclass
class SourceSpec:
    """How to load one source.

    Args:
        name: registry name (matched case-insensitively).
        kind: `"problems"` or `"text"`.
        dataset_id / config_names / split / data_files: arguments of `datasets.load_dataset` for the Hub copy; several
            `config_names` are concatenated (MATH's 7 subjects).
        problem_column / answer_column / solution_column / text_column: columns of the raw rows.
        answer_fn: `row -> gold answer` when the answer is embedded (GSM8K's `#### N`, MATH's last `\\boxed{}`).
        solution_fn: `row -> human solution` (GSM8K strips the `#### N` line and calculator annotations).
        components: for composite sources (MathR = GSM8K + MATH), the names of the parts.
        streaming: read the Hub copy as a stream (huge corpora such as DCLM); `max_rows` bounds what is read.
        license: licence of the data, for dataset cards.
        loader: a function returning the raw rows (a `Dataset`) without the Hub, for generated sources.
    """

    name: str
    kind: str = "problems"
    dataset_id: str | None = None
    config_names: list[str | None] = field(default_factory=lambda: [None])
    split: str = "train"
    data_files: str | list[str] | None = None
    problem_column: str | None = None
    answer_column: str | None = None
    solution_column: str | None = None
    text_column: str = "text"
    answer_fn: Callable[[dict], str] | None = None
    solution_fn: Callable[[dict], str] | None = None
    level_column: str | None = None
    components: list[str] = field(default_factory=list)
    streaming: bool = False
    max_rows: int | None = None
    license: str | None = None
    description: str = ""
    loader: Callable[[], Any] | None = None  # builds the raw rows locally instead of reading the Hub


_REGISTRY: dict[str, SourceSpec] = {}


def register_source(name: str, *, kind: str = "problems", overwrite: bool = False, **kwargs) -> SourceSpec:
    """Register a source under `name` (see [`SourceSpec`] for the arguments) and return its spec."""
    if kind not in ("problems", "text"):
        raise ValueError(f"kind={kind!r}: a source is either 'problems' or 'text'.")
    key = name.lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"A source named {name!r} is already registered: pass overwrite=True to replace it.")
    spec = SourceSpec(name=name, kind=kind, **kwargs)
    _REGISTRY[key] = spec
    return spec


def unregister_source(name: str) -> SourceSpec:
    """Remove the source registered under `name` (case-insensitive) and return its spec."""
    spec = get_source(name)
    del _REGISTRY[str(name).lower()]
    return spec


def list_sources(kind: str | None = None) -> list[str]:
    """The names of the registered sources, all or only those of one `kind` (`"problems"` or `"text"`)."""
    return [s.name for s in _REGISTRY.values() if kind is None or s.kind == kind]


def find_source(name: str) -> SourceSpec | None:
    """The spec registered under `name` (case-insensitive), or `None`."""
    return _REGISTRY.get(str(name).lower())


def get_source(name: str) -> SourceSpec:
    """The spec registered under `name` (case-insensitive); an unknown name lists the known ones."""
    spec = find_source(name)
    if spec is None:
        raise ValueError(
            f"Unknown source {name!r}: known sources are {', '.join(list_sources())}; or pass a datasets.Dataset, or "
            "the path of a local .jsonl/.json/.parquet file or save_to_disk folder."
        )
    return spec


# ----------------------------------------------------------------------------------------------------------------
# Built-in sources


def _gsm8k_answer(row: dict) -> str:
    return row["answer"].split("####")[-1].strip().replace(",", "")


def _gsm8k_solution(row: dict) -> str:
    body = row["answer"].split("####")[0]
    return re.sub(r"<<[^>]*>>", "", body).strip()


def _boxed_answer(row: dict) -> str:
    return extract_boxed(row["solution"]) or ""


MATH_SUBJECTS = [
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
]

register_source(
    "GSM8K",
    dataset_id="openai/gsm8k",
    config_names=["main"],
    split="train",
    problem_column="question",
    answer_fn=_gsm8k_answer,
    solution_fn=_gsm8k_solution,
    license="MIT",
    description="Grade-school math word problems (train split); gold answer after '####'.",
)
register_source(
    "MATH",
    dataset_id="EleutherAI/hendrycks_math",
    config_names=list(MATH_SUBJECTS),
    split="train",
    problem_column="problem",
    solution_column="solution",
    answer_fn=_boxed_answer,
    level_column="level",
    license="MIT",
    description="Competition math (train split, 7 subjects); gold answer = last \\boxed{} of the solution.",
)
register_source("MathR", components=["GSM8K", "MATH"], license="MIT", description="GSM8K train + MATH train.")
register_source(
    "OpenR1-Math",
    dataset_id="open-r1/OpenR1-Math-220k",
    config_names=["default"],
    split="train",
    problem_column="problem",
    answer_column="answer",
    solution_column="solution",
    license="Apache-2.0",
    description="OpenR1-Math-220k problems (RAC's prompt source).",
)
register_source(
    "C4",
    kind="text",
    dataset_id="allenai/c4",
    data_files="en/c4-train.00000-of-01024.json.gz",
    split="train",
    license="ODC-BY",
    description="The C4 en shard c4-train.00000-of-01024 used by SparseGPT and Wanda.",
)
register_source(
    "Wikipedia",
    kind="text",
    dataset_id="Salesforce/wikitext",
    config_names=["wikitext-2-raw-v1"],
    split="train",
    license="CC-BY-SA-3.0",
    description="WikiText-2 raw (train).",
)
register_source(
    "DCLM",
    kind="text",
    dataset_id="mlfoundations/dclm-baseline-1.0",
    split="train",
    streaming=True,
    max_rows=20000,
    license="CC-BY-4.0",
    description="DCLM-baseline 1.0 (first rows of the stream).",
)


def _tiny_problems():
    import datasets

    from ..tiny_reasoner import train_problems

    rows, seen = [], set()
    for p in train_problems(4000, seed=11):
        if p.problem not in seen:
            seen.add(p.problem)
            rows.append(p.to_dict())
    return datasets.Dataset.from_list(rows)


def _tiny_text():
    import datasets

    from ..tiny_reasoner import text_corpus

    return datasets.Dataset.from_dict({"text": text_corpus(2000, seed=7)})


register_source(
    "tiny-arith",
    loader=_tiny_problems,
    license="Apache-2.0",
    description="Generated arithmetic word problems (training split) with short human-style solutions, for the "
    "embedded tiny reasoner (the MathR analogue).",
)
register_source(
    "tiny-text",
    kind="text",
    loader=_tiny_text,
    license="Apache-2.0",
    description="Generated everyday text with numbers and no reasoning (the C4 analogue of the tiny world).",
)

# ----------------------------------------------------------------------------------------------------------------
# Loading


def read_local(path: str):
    """Read a local `.jsonl`/`.json`/`.parquet`/`.csv` file, a folder of such files, or a `save_to_disk` folder, as
    one `datasets.Dataset` (raw rows, not normalised)."""
    import datasets

    from ..utils import recover_folder

    if not os.path.exists(path):
        recover_folder(path)  # a save_to_disk folder hidden by a save killed between its two renames
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file or folder: {path}")
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "dataset_info.json")) or os.path.exists(os.path.join(path, "state.json")):
            return load_nonempty(lambda: datasets.load_from_disk(path), path)
        files = sorted(
            os.path.join(path, f)
            for f in os.listdir(path)
            if f.endswith((".jsonl", ".json", ".parquet", ".json.gz", ".csv"))
        )
        if not files:
            raise ValueError(f"{path} holds no .jsonl/.json/.parquet/.csv file and is not a save_to_disk folder.")
        path_list = files
    else:
        path_list = [path]
    suffix = path_list[0].rsplit(".", 1)[-1]
    builder = {"parquet": "parquet", "csv": "csv"}.get(suffix, "json")
    return load_nonempty(lambda: datasets.load_dataset(builder, data_files=path_list, split="train"), path)


def load_nonempty(load, path: str):
    """`load()` (a `datasets` reader of `path`), refusing a file or saved Dataset without rows with an error that says
    so: `datasets` fails on one with `IndexError` or `StopIteration`, or returns zero rows."""
    try:
        ds = load()
    except (IndexError, StopIteration) as err:
        raise ValueError(f"{path} holds no rows (it is empty): pass a file or saved Dataset with data.") from err
    except ValueError as err:
        if "corresponds to no data" not in str(err):
            raise
        raise ValueError(f"{path} holds no rows (it is empty): pass a file or saved Dataset with data.") from err
    if len(ds) == 0:
        raise ValueError(f"{path} holds no rows (it is empty): pass a file or saved Dataset with data.")
    return ds


def _load_hub(spec: SourceSpec):
    import datasets

    parts = []
    for config in spec.config_names:
        try:
            ds = datasets.load_dataset(
                spec.dataset_id, config, split=spec.split, data_files=spec.data_files, streaming=spec.streaming
            )
        except Exception as err:  # noqa: BLE001 - offline, gated, missing: all need the same advice
            raise RuntimeError(
                f"Could not load {spec.name} ({spec.dataset_id}{'/' + config if config else ''}, split {spec.split}) "
                f"from the Hub: {type(err).__name__}: {err}. Offline or without access, download it once and pass "
                f"the local copy: load_source({spec.name!r}, path='...jsonl|parquet|folder')."
            ) from err
        if spec.streaming:
            rows = list(ds.take(spec.max_rows)) if spec.max_rows else list(ds)
            ds = datasets.Dataset.from_list(rows)
        parts.append((config, ds))
    return parts


def _pick(columns: list[str], preferred: str | None, aliases: tuple[str, ...], what: str, required: bool, where: str):
    if preferred:
        if preferred not in columns:
            if required:
                raise ValueError(f"{where}: no {what} column {preferred!r} (columns: {columns}).")
            return None
        return preferred
    for a in aliases:
        if a in columns:
            return a
    if required:
        raise ValueError(
            f"{where}: no {what} column (looked for {list(aliases)}; columns: {columns}). Rename it or register the "
            "source with register_source(..., problem_column=..., answer_column=...)."
        )
    return None


def _normalize_problems(ds, spec: SourceSpec, config: str | None, where: str):
    import datasets

    columns = ds.column_names
    problem_col = _pick(columns, spec.problem_column, _PROBLEM_ALIASES, "problem", True, where)
    answer_col = None if spec.answer_fn else _pick(columns, spec.answer_column, _ANSWER_ALIASES, "answer", True, where)
    solution_col = (
        None if spec.solution_fn else _pick(columns, spec.solution_column, _SOLUTION_ALIASES, "solution", False, where)
    )
    level_col = spec.level_column if spec.level_column in columns else ("level" if "level" in columns else None)
    id_col = next((c for c in ("problem_id", "unique_id", "id") if c in columns), None)
    prefix = f"{spec.name}/{config}" if config and len(spec.config_names) > 1 else spec.name

    def convert(row, idx):
        answer = spec.answer_fn(row) if spec.answer_fn else row[answer_col]
        if isinstance(answer, list):  # OlympiadBench's final_answer is a list
            answer = answer[0] if len(answer) == 1 else ", ".join(map(str, answer))
        solution = spec.solution_fn(row) if spec.solution_fn else (row[solution_col] if solution_col else "")
        if spec.answer_fn is None and isinstance(answer, str) and "####" in answer:  # a GSM8K-format file
            solution = solution or _gsm8k_solution({"answer": answer})
            answer = _gsm8k_answer({"answer": answer})
        return {
            "problem_id": f"{prefix}/{row[id_col]}" if id_col else f"{prefix}/{idx}",
            "problem": str(row[problem_col]),
            "answer": "" if answer is None else str(answer),
            "solution": "" if solution is None else str(solution),
            "source": spec.name,
            "level": "" if level_col is None or row[level_col] is None else str(row[level_col]),
        }

    features = datasets.Features({c: datasets.Value("string") for c in PROBLEM_COLUMNS})
    return ds.map(convert, with_indices=True, remove_columns=columns, features=features, desc=f"Normalising {prefix}")


def _normalize_texts(ds, spec: SourceSpec, where: str):
    column = spec.text_column if spec.text_column in ds.column_names else None
    if column is None:
        raise ValueError(f"{where}: no text column {spec.text_column!r} (columns: {ds.column_names}).")
    ds = ds.select_columns([column])
    if column != "text":
        ds = ds.rename_column(column, "text")
    return ds.map(lambda r: {"source": spec.name}, desc=f"Normalising {spec.name}")


def load_source(source: Any, path: str | dict[str, str] | None = None, kind: str | None = None):
    """Load a registered source (by name), a local file/folder, or a user `Dataset`, normalised.

    Args:
        source: a registry name (`"MathR"`, `"GSM8K"`, `"MATH"`, `"OpenR1-Math"`, `"C4"`, `"Wikipedia"`, `"DCLM"`, or
            one added with `register_source`), a `datasets.Dataset`, or a local path.
        path: a local copy to read instead of the Hub. For composite sources (MathR), a mapping from component name
            to path, e.g. `{"GSM8K": "gsm8k.jsonl", "MATH": "math/"}`.
        kind: for a user Dataset or path, `"problems"` (default) or `"text"`.
    """
    import datasets

    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        if isinstance(source, datasets.DatasetDict):
            raise ValueError("Pass one split of the DatasetDict (e.g. dataset['train']), not the whole dict.")
        spec = SourceSpec(name="user", kind=kind or ("text" if source.column_names == ["text"] else "problems"))
        return _normalize(source, spec, None, "the given Dataset")
    if isinstance(source, (str, os.PathLike)) and str(source).lower() not in _REGISTRY and os.path.exists(source):
        name = os.path.splitext(os.path.basename(str(source).rstrip("/")))[0]
        raw = read_local(str(source))
        spec = SourceSpec(name=name, kind=kind or ("text" if raw.column_names == ["text"] else "problems"))
        return _normalize(raw, spec, None, str(source))
    spec = get_source(source)
    if spec.components:
        paths = path if isinstance(path, dict) else {}
        if path is not None and not isinstance(path, dict):
            raise ValueError(
                f"{spec.name} is made of {spec.components}: pass path as a mapping such as "
                f"{{{', '.join(repr(c) + ': ...' for c in spec.components)}}}."
            )
        return datasets.concatenate_datasets([load_source(c, paths.get(c)) for c in spec.components])
    if path is not None:
        if isinstance(path, dict):
            raise ValueError(f"{spec.name} is a single source: pass path as a string.")
        return _normalize(read_local(str(path)), spec, None, str(path))
    if spec.loader is not None:
        return _normalize(spec.loader(), spec, None, spec.name)
    parts = [_normalize(ds, spec, config, f"{spec.dataset_id}/{config}") for config, ds in _load_hub(spec)]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _normalize(ds, spec: SourceSpec, config, where):
    if spec.kind == "text":
        return _normalize_texts(ds, spec, where)
    return _normalize_problems(ds, spec, config, where)


def load_problems(source: Any, path=None):
    """`load_source` for problem sources; refuses text corpora."""
    if isinstance(source, str) and str(source).lower() in _REGISTRY and get_source(source).kind != "problems":
        raise ValueError(f"{source} is a text corpus, not a problem source: use it with policy='text'.")
    return load_source(source, path, kind="problems")


def load_texts(source: Any, path=None):
    """`load_source` for text corpora."""
    if isinstance(source, str) and str(source).lower() in _REGISTRY and get_source(source).kind != "text":
        raise ValueError(f"{source} is a problem source, not a text corpus.")
    return load_source(source, path, kind="text")
