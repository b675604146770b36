"""`evaluate()`: the reasoning benchmarks through lm-evaluation-harness.

`evaluate` wraps `lm_eval.simple_evaluate` with the package's tasks (`evaluation/tasks`) and its model class
(`ReasoningLM`, which reports exact token lengths, truncation and generation time). The k samples per problem, the
length limit and the sampling settings of an [`EvalConfig`] are applied to every task as config overrides, so the
shipped YAMLs stay the papers' defaults.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence

from ..distributed import Distributed
from ..utils import check_model_path, check_output, library_versions
from .config import EvalConfig
from .perplexity import PERPLEXITY_TASKS, run_perplexity
from .registry import BENCHMARKS, GradeCode, resolve_tasks, tasks_path
from .report import FILTER, EvalReport, TaskResult, plot_accuracy, plot_length_distributions

logger = logging.getLogger("hf_ssgr")

__all__ = ["evaluate", "EvalReport", "TaskResult", "plot_accuracy", "plot_length_distributions"]


_SETTINGS = tuple(f.name for f in dataclasses.fields(EvalConfig))


def _task_overrides(cfg: EvalConfig, task: str) -> dict:
    """What a task's YAML is overridden with: k repeats and the filter that keeps them (then, for code, the one that
    grades every problem's programs together), and the sampling."""
    steps = [{"function": "take_first_k", "k": cfg.num_samples}]
    if BENCHMARKS.get(task) is not None and BENCHMARKS[task].kind == "code":
        steps.append({"function": GradeCode})
    return {
        "repeats": cfg.num_samples,
        "filter_list": [{"name": FILTER, "filter": steps}],
        "generation_kwargs": {
            "until": [],
            "do_sample": cfg.temperature > 0,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_gen_toks": cfg.max_new_tokens,
        },
    }


def _settings(cfg: EvalConfig) -> dict:
    """The settings a report records."""
    return {
        "num_samples": cfg.num_samples,
        "max_new_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "backend": cfg.backend,
        "limit": cfg.limit,
        "seed": cfg.seed,
        "gpqa_seed": cfg.gpqa_seed,
        "data_files": {t: str(p) for t, p in cfg.data_files.items()},
        "task_metadata": dict(cfg.task_metadata),
        "ppl_seqlen": cfg.ppl_seqlen,
        "ppl_batch_size": cfg.ppl_batch_size,
        "versions": library_versions(),
    }


def evaluate(
    model_or_path,
    tokenizer=None,
    tasks: str | Sequence[str] | None = None,
    num_samples: int | None = None,
    max_new_tokens: int | None = None,
    backend: str | None = None,
    limit: int | float | None = None,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    data_files: Mapping[str, str | list[str]] | None = None,
    gpqa_seed: int | None = None,
    task_metadata: dict | None = None,
    vllm_kwargs: dict | None = None,
    ppl_seqlen: int | None = None,
    ppl_batch_size: int | None = None,
    config: EvalConfig | None = None,
    model_name: str | None = None,
    engine=None,
    output_path: str | None = None,
) -> EvalReport:
    """Evaluate a reasoning model on the package's lm-eval tasks.

    Args:
        model_or_path: a model object (with `tokenizer=`), a local folder, or a Hub id.
        tasks, num_samples, max_new_tokens, backend, limit, temperature, top_p, batch_size, seed, data_files,
            gpqa_seed, task_metadata, vllm_kwargs, ppl_seqlen, ppl_batch_size: the settings of [`EvalConfig`] (see it for their
            defaults and meaning); each one given here overrides the same field of `config`.
        config ([`EvalConfig`], *optional*): all the settings at once.
        model_name: the name the report carries (default: the path, or the model's).
        engine: a ready generation engine (an object with `generate(prompts, num_samples, seed)` returning
            `Sample`s) instead of the backend's.
        output_path: if set, the report is also saved there as JSON (by process 0).

    Under `torchrun` / `accelerate launch` the problems are dealt across the processes (lm-eval's data parallelism;
    each process generates with its own copy of the model, or its own vLLM replica) and every process returns the
    same report. Each task's `gen_seconds` is then the generation wall time summed over the processes, and
    `gen_seconds_per_process` each process's own (their maximum, `gen_wall_seconds`, is the elapsed time).

    Perplexity tasks (`ssgr_wikitext2`, `ssgr_c4`, `ssgr_tiny_text`, `ssgr_tiny_traces`; see
    `hf_ssgr.evaluation.perplexity`) run after the benchmarks, with transformers forward passes (also under
    `backend="vllm"`, which loads the model with transformers for them), and land in `report.perplexity`; `limit`
    keeps their first windows (or replies).
    """
    given = {k: v for k, v in locals().items() if k in _SETTINGS and v is not None}
    cfg = dataclasses.replace(config, **given) if config is not None else EvalConfig(**given)
    if output_path:
        check_output(output_path, "output_path", "file")  # before any reply is generated
    if isinstance(model_or_path, (str, os.PathLike)):
        check_model_path(str(model_or_path))
        model_or_path = str(model_or_path)
    elif tokenizer is None:
        raise ValueError("Pass tokenizer=... with a model object (or pass a local folder / Hub id instead).")
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise ImportError("evaluate() needs lm-evaluation-harness: pip install 'hf-ssgr[eval]'.") from err
    from .lm_eval_model import ReasoningLM

    lm = ReasoningLM(
        model_or_path,
        tokenizer=tokenizer,
        backend=cfg.backend,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        vllm_kwargs=cfg.vllm_kwargs,
        engine=engine,
    )
    names = resolve_tasks(cfg.tasks)
    ppl_tasks = [t for t in names if t in PERPLEXITY_TASKS]
    bench_files = {t: p for t, p in cfg.data_files.items() if t in BENCHMARKS}
    metadata = {
        **cfg.task_metadata,
        "data_files": bench_files,
        "gpqa_seed": cfg.gpqa_seed,
        "max_gen_toks": cfg.max_new_tokens,
    }
    manager = TaskManager(include_path=tasks_path(), include_defaults=False, metadata=metadata)
    # An inline group: lm-eval merges each child's overrides into its registered YAML (a top-level dict would not).
    tasks = [{"task": n, **_task_overrides(cfg, n)} for n in names if n not in ppl_tasks]
    specs = [{"group": "hf_ssgr_evaluate", "task": tasks}]
    results = {"results": {}}
    try:
        if specs[0]["task"]:
            results = lm_eval.simple_evaluate(
                model=lm,
                tasks=specs,
                task_manager=manager,
                limit=cfg.limit,
                apply_chat_template=True,
                log_samples=True,
                bootstrap_iters=0,
                random_seed=cfg.seed,
                numpy_random_seed=cfg.seed,
                torch_random_seed=cfg.seed,
            )
    finally:
        lm.close()
    name = model_name or (model_or_path if isinstance(model_or_path, str) else lm.model_name)
    # Several processes: lm-eval gathered every process's scores on process 0, which shares the report with the rest.
    report = EvalReport.from_lm_eval(results, model=name, settings=_settings(cfg)) if results is not None else None
    dist = Distributed.current()
    per_process = dist.all_gather_object(dict(lm.gen_seconds_by_task))  # every process's generation wall time
    report = dist.all_gather_object(report)[0]
    if report is not None:
        for t, r in report.tasks.items():
            r.gen_seconds_per_process = [p.get(t, 0.0) for p in per_process]
    if ppl_tasks:  # every process scores its share of the windows; all of them get the same numbers
        report.perplexity = run_perplexity(lm.scoring_model(), lm.tokenizer, ppl_tasks, cfg.data_files,
                                           cfg.ppl_seqlen, cfg.ppl_batch_size, cfg.limit, dist)  # fmt: skip
    if output_path and dist.is_main:
        report.save(output_path)
    return report
