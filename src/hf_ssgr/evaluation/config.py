"""`EvalConfig`: what an evaluation measures and how it samples, shared by `evaluate()`, recipes and the CLI."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EvalConfig", "BACKENDS"]

BACKENDS = ("hf", "vllm")
# the metadata keys the package's tasks read beyond the fields of EvalConfig (see registry.load_task_dataset)
TASK_METADATA_KEYS = (
    "lcb_release_version",
    "lcb_start_date",
    "lcb_end_date",
    "lcb_prompt_style",
    "lcb_timeout",
    "lcb_extraction",
    "lcb_stdin",
    "sandbox_workers",
    "allow_unsandboxed",
)


@dataclass
class EvalConfig:
    r"""
    Configuration of [`evaluate`]. Every field has a command-line flag (`hf-ssgr evaluate --num_samples 16`).

    tasks (`list[str]`, *optional*, defaults to `["ssgr_reasoning"]`):
        Task or group names (see `hf-ssgr tasks-path` and `hf_ssgr.evaluation.registry.list_tasks()`);
        `ssgr_reasoning` is the SSGR paper's five benchmarks.
    num_samples (`int`, *optional*, defaults to `4`):
        k, the sampled replies per problem; pass@1 is their mean correctness.
    max_new_tokens (`int`, *optional*, defaults to `32768`):
        The length limit of a reply; a reply that reaches it is truncated and not correct.
    backend (`str`, *optional*, defaults to `"hf"`):
        `"hf"` (transformers `generate`) or `"vllm"`.
    limit (`float`, *optional*):
        Evaluate only the first `limit` problems of each task (an integer), or a fraction of them.
    temperature (`float`, *optional*, defaults to `0.6`), top_p (`float`, *optional*, defaults to `0.95`):
        Sampling settings (the papers'); `temperature=0` is greedy.
    batch_size (`int`, *optional*, defaults to `16`):
        Prompts per `generate` call with the transformers backend.
    seed (`int`, *optional*, defaults to `0`):
        Seed of the samples and of lm-eval's random state.
    data_files (`dict[str, str]`, *optional*):
        Local copies of task data, `{task: path}`, instead of the Hub.
    gpqa_seed (`int`, *optional*, defaults to `0`):
        Seed of GPQA's option shuffle (fixed per question).
    vllm_kwargs (`dict`, *optional*):
        Keyword arguments for `vllm.LLM` (e.g. `tensor_parallel_size`).
    ppl_seqlen (`int`, *optional*):
        Window length of the perplexity corpora (`ssgr_wikitext2`, `ssgr_c4`, ...): non-overlapping windows of this
        many tokens. Unset: 2048 (SparseGPT's), or the model's context length when shorter (`ssgr_tiny_text`: 64).
    ppl_batch_size (`int`, *optional*):
        Windows (or replies) per forward pass of the perplexity tasks; unset: as many as fit in 4096 tokens.
    task_metadata (`dict`, *optional*):
        Settings of individual tasks, passed to them as lm-eval metadata (as `lm_eval --metadata` does): LiveCodeBench's
        `lcb_release_version`, `lcb_start_date`, `lcb_end_date`, `lcb_prompt_style`, `lcb_timeout`, `lcb_extraction`
        (`official` or `after_think`), `lcb_stdin` (`buffer` or `stringio`), and its sandbox's `sandbox_workers` and
        `allow_unsandboxed`.
    """

    tasks: list[str] = field(default_factory=lambda: ["ssgr_reasoning"], metadata={"help": "Task or group names."})
    num_samples: int = field(default=4, metadata={"help": "Sampled replies per problem (pass@1 is their mean)."})
    max_new_tokens: int = field(default=32768, metadata={"help": "Length limit of a reply, in tokens."})
    backend: str = field(default="hf", metadata={"help": f"Generation backend: {' or '.join(BACKENDS)}."})
    limit: float | None = field(default=None, metadata={"help": "First N problems of each task (or a fraction)."})
    temperature: float = field(default=0.6, metadata={"help": "Sampling temperature (0: greedy)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling top-p."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate call (transformers backend)."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    data_files: dict[str, str] = field(default_factory=dict, metadata={"help": "Local task data: {task: path}."})
    gpqa_seed: int = field(default=0, metadata={"help": "Seed of GPQA's option shuffle."})
    vllm_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "Arguments for vllm.LLM."})
    ppl_seqlen: int | None = field(
        default=None, metadata={"help": "Perplexity window in tokens (default 2048, or the context length if shorter)."}
    )
    ppl_batch_size: int | None = field(
        default=None, metadata={"help": "Perplexity windows per forward pass (default: up to 4096 tokens)."}
    )
    task_metadata: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Task settings, e.g. {lcb_start_date: 2024-08-01, sandbox_workers: 2}."}
    )

    def __post_init__(self):
        from .perplexity import PERPLEXITY_TASKS
        from .registry import BENCHMARKS, list_tasks, resolve_tasks

        items = [self.tasks] if isinstance(self.tasks, str) else list(self.tasks)
        self.tasks = [t.strip() for item in items for t in str(item).split(",") if t.strip()]  # "a,b" or [a, b]
        resolve_tasks(self.tasks)  # unknown names fail with the valid ones
        if not isinstance(self.num_samples, int) or isinstance(self.num_samples, bool) or self.num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1 (got {self.num_samples!r}).")
        if (
            not isinstance(self.max_new_tokens, int)
            or isinstance(self.max_new_tokens, bool)
            or self.max_new_tokens < 1
        ):
            raise ValueError(f"max_new_tokens must be an integer >= 1 (got {self.max_new_tokens!r}).")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}: choose 'hf' (transformers) or 'vllm'.")
        if self.limit is not None and (not isinstance(self.limit, (int, float)) or self.limit <= 0):
            raise ValueError(f"limit={self.limit!r} must be a number of problems or a fraction > 0.")
        if isinstance(self.limit, float) and self.limit.is_integer() and self.limit > 1:
            self.limit = int(self.limit)
        self.data_files = dict(self.data_files or {})
        self.task_metadata = dict(self.task_metadata or {})
        unknown = sorted(set(self.task_metadata) - set(TASK_METADATA_KEYS))
        if unknown:
            raise ValueError(
                f"task_metadata has unknown keys {unknown}: the tasks read {', '.join(TASK_METADATA_KEYS)} "
                "(data_files, gpqa_seed and max_new_tokens have fields of their own)."
            )
        unknown = sorted(set(self.data_files) - set(BENCHMARKS) - set(PERPLEXITY_TASKS))
        if unknown:
            raise ValueError(f"data_files names unknown tasks {unknown}: valid tasks are {', '.join(list_tasks())}.")
        self.vllm_kwargs = dict(self.vllm_kwargs or {})
        if self.ppl_seqlen is not None and (
            not isinstance(self.ppl_seqlen, int) or isinstance(self.ppl_seqlen, bool) or self.ppl_seqlen < 2
        ):
            raise ValueError(f"ppl_seqlen={self.ppl_seqlen!r}: a perplexity window is an integer >= 2 (or unset).")
        batch = self.ppl_batch_size
        if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
            raise ValueError(f"ppl_batch_size={self.ppl_batch_size!r} must be an integer >= 1.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        from ..utils import dataclass_from_dict

        return dataclass_from_dict(cls, data)
