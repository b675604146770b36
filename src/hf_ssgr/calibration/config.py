"""`CalibrationConfig`: how a calibration set is selected, generated and verified (the fields of `SSGRCalibrator`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .policies import Policy, get_policy

__all__ = ["CalibrationConfig"]


@dataclass
class CalibrationConfig:
    r"""
    Configuration of [`SSGRCalibrator`].

    > Parameters that control the selection

    policy (`str`, defaults to `"ssgr"`): a registered policy (or an alias): `text`, `human`, `prompt_only`, `sgr`,
        `ssgr`, `rac`, `easy`, `medium`, `hard`, `short`, `median`, `long`, `random`, `correct`, `incorrect`,
        `no_thinking`, or one added with `register_policy` (see `hf_ssgr.calibration.policies`). Held as the
        policy's name.
    num_samples (`int`, defaults to `128`): rows of the calibration set.
    max_length (`int`, defaults to `2048`): tokens per row; longer rows are truncated. SSGR's budget for the
        response is `max_length − prompt length` (Eq. 1).
    tau (`float`, defaults to `0.75`): SSGR keeps problems whose correct ratio c = k/n ≤ τ; in (0, 1].
    token_budget (`int`, defaults to `1_000_000`): RAC adds rows until this many tokens.
    max_tokens (`int`, *optional*): every policy: stop selecting once the rows hold this many tokens, and cut the
        set to exactly this many (the last row truncated), so that calibrations compared with one another hold the
        same number of tokens, as the papers do; `num_samples` must allow enough rows. Fewer tokens than this is
        warned about and recorded in the report.

    > Parameters that control generation (names follow TRL's GRPOConfig)

    num_generations (`int`, *optional*): samples per problem; the policy's default (16, or 1 for `rac`).
    temperature (`float`, defaults to `0.6`), top_p (`float`, defaults to `0.95`).
    max_new_tokens (`int`, *optional*): the policy's default: 32768, or 8192 (RAC's T_max) for `rac`.
    engine (`str`, defaults to `"transformers"`): `"transformers"` or `"vllm"`.
    generation_batch_size (`int`, defaults to `16`): sequences per `generate` call (transformers engine).
    vllm_kwargs (`dict`, *optional*): passed to `vllm.LLM` (e.g. `tensor_parallel_size`, `max_model_len`). Under
        `torchrun` each process runs one replica on its own GPUs or cores (data parallelism).
    chat_template (`str`, *optional*): a Jinja template to use instead of the tokenizer's.
    chat_template_kwargs (`dict`, *optional*): extra arguments of `apply_chat_template`.
    rollout_model (`str`, *optional*): generate with this model (Hub id or path) instead of the pruned one:
        off-policy calibration (RAC Table 7, SSGR Table 8).
    rollouts_dir (`str`, *optional*): the persistent rollout store; a run resumes from it. A temporary folder when
        unset.

    > Parameters that control streaming and verification

    streaming (`bool`, defaults to `True`): stop visiting problems once enough rows are selected.
    early_stop (`bool`, defaults to `True`): stop sampling a problem once its fate is decided.
    samples_per_round (`int`, defaults to `4`): samples drawn per problem between two early-stop checks.
    max_problems (`int`, *optional*): visit at most this many problems.
    require_think_end (`bool`, defaults to `True`): a reply that never closes `</think>` is not correct.
    repetition_ngram / max_repeat_ratio / min_thinking_words: the quality filters (see `QualityConfig`).
    source_path (`str` or `dict`, *optional*): a local copy of the source (a mapping for MathR's parts).
    seed (`int`, defaults to `0`).
    """

    policy: str = field(default="ssgr", metadata={"help": "Selection policy."})
    num_samples: int = field(default=128, metadata={"help": "Rows of the calibration set."})
    max_length: int = field(default=2048, metadata={"help": "Tokens per calibration row."})
    tau: float = field(default=0.75, metadata={"help": "SSGR: keep problems with correct ratio <= tau."})
    token_budget: int = field(default=1_000_000, metadata={"help": "RAC: tokens to collect."})
    max_tokens: int | None = field(default=None, metadata={"help": "Cut every policy's set to this many tokens."})
    num_generations: int | None = field(default=None, metadata={"help": "Samples per problem (16; 1 for rac)."})
    temperature: float = field(default=0.6, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Max response tokens (32768; 8192 for rac)."})
    engine: str = field(default="transformers", metadata={"help": "'transformers' or 'vllm'."})
    generation_batch_size: int = field(default=16, metadata={"help": "Sequences per generate call."})
    vllm_kwargs: dict | None = field(default=None, metadata={"help": "Arguments of vllm.LLM."})
    chat_template: str | None = field(default=None, metadata={"help": "Jinja chat template override."})
    chat_template_kwargs: dict | None = field(default=None, metadata={"help": "apply_chat_template arguments."})
    rollout_model: str | None = field(default=None, metadata={"help": "Off-policy: model that generates."})
    rollouts_dir: str | None = field(default=None, metadata={"help": "Persistent rollout store (resumable)."})
    streaming: bool = field(default=True, metadata={"help": "Stop once enough rows are selected."})
    early_stop: bool = field(default=True, metadata={"help": "Stop sampling decided problems."})
    samples_per_round: int = field(default=4, metadata={"help": "Samples per problem between early-stop checks."})
    max_problems: int | None = field(default=None, metadata={"help": "Visit at most this many problems."})
    require_think_end: bool = field(default=True, metadata={"help": "Unclosed thinking is not correct."})
    repetition_ngram: int = field(default=20, metadata={"help": "n-gram size of the repetition filter."})
    max_repeat_ratio: float = field(default=0.3, metadata={"help": "Max repeated n-gram fraction."})
    min_thinking_words: int = field(default=3, metadata={"help": "Min words of thinking."})
    source_path: Any = field(default=None, metadata={"help": "Local copy of the source."})
    seed: int = field(default=0, metadata={"help": "Random seed."})

    def __post_init__(self):
        policy = get_policy(self.policy)
        self.policy = policy.name
        if self.num_generations is None:
            self.num_generations = policy.num_generations
        if self.max_new_tokens is None:
            self.max_new_tokens = policy.max_new_tokens
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(
                f"tau={self.tau} is outside (0, 1]: SSGR keeps problems with correct ratio <= tau (0.75)."
            )
        for name in ("num_samples", "max_length", "num_generations", "max_new_tokens", "samples_per_round",
                     "generation_batch_size", "token_budget"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")
        if self.engine not in ("transformers", "vllm"):
            raise ValueError(f"Unknown engine {self.engine!r}: choose 'transformers' or 'vllm'.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens={self.max_tokens} must be >= 1 (or None: no token cap).")
        if not 0.0 <= self.temperature or not 0.0 < self.top_p <= 1.0:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1].")

    @property
    def selection_policy(self) -> Policy:
        """The registered [`Policy`] named by `policy`."""
        return get_policy(self.policy)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def generation_settings(self) -> dict[str, Any]:
        """What decides the rollouts (a store made with other settings is refused)."""
        return {
            "num_generations": self.num_generations,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "chat_template": self.chat_template,
            "chat_template_kwargs": self.chat_template_kwargs,
            "require_think_end": self.require_think_end,
            "seed": self.seed,
        }
