"""`SSGRCalibrator`: sources → rollouts → verification → selection → the calibration `Dataset`.

```python
calib = SSGRCalibrator(CalibrationConfig(policy="ssgr", num_samples=128, max_length=16384)).build(model, "MathR", tokenizer=tok)
```

The returned Dataset follows the calibration contract: `input_ids` (chat-templated, truncated to `max_length`),
`prompt_length`, and the provenance columns `problem_id`, `source`, `policy`, `num_generations`, `correct_ratio`,
`response_tokens`, `model`. How it was built (settings, counts at every filter, generation cost) is in
`dataset.info.description` as JSON and in `calibrator.report`.

Selection streams: problems are visited in a seeded random order and generation stops once `num_samples` rows are
selected (or RAC's token budget is reached); a problem whose fate is already decided (e.g. more than τ·n correct
samples for SSGR) stops being sampled. This draws from the same distribution as the paper's exhaustive procedure
(sample every problem, then draw at random from the survivors) at a fraction of the cost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..distributed import Distributed
from ..verification import THINK_END, QualityConfig, verify_reply
from .rollouts import RolloutStore, encode_prompt, make_engine, model_fingerprint, replica_env
from .selection import (
    GENERATION_POLICIES,
    canonical_policy,
    samples_before_decision,
    sampling_decided,
    select_response,
)
from .sources import get_source, load_problems, load_texts

logger = logging.getLogger("hf_ssgr")

__all__ = ["CalibrationConfig", "SSGRCalibrator", "CALIBRATION_COLUMNS"]

CALIBRATION_COLUMNS = [
    "input_ids", "prompt_length", "problem_id", "source", "policy", "num_generations", "correct_ratio",
    "response_tokens", "model",
]  # fmt: skip


@dataclass
class CalibrationConfig:
    r"""
    Configuration of [`SSGRCalibrator`].

    > Parameters that control the selection

    policy (`str`, defaults to `"ssgr"`): one of `text`, `human`, `prompt_only`, `sgr`, `ssgr`, `rac`, `easy`,
        `medium`, `hard`, `short`, `median`, `long`, `random`, `correct`, `incorrect`, `no_thinking` (see
        `hf_ssgr.calibration.selection`).
    num_samples (`int`, defaults to `128`): rows of the calibration set.
    max_length (`int`, defaults to `2048`): tokens per row; longer rows are truncated. SSGR's budget for the
        response is `max_length − prompt length` (Eq. 1).
    tau (`float`, defaults to `0.75`): SSGR keeps problems whose correct ratio c = k/n ≤ τ; in (0, 1].
    token_budget (`int`, defaults to `1_000_000`): RAC adds rows until this many tokens.

    > Parameters that control generation (names follow TRL's GRPOConfig)

    num_generations (`int`, *optional*): samples per problem; 16, or 1 for `rac`.
    temperature (`float`, defaults to `0.6`), top_p (`float`, defaults to `0.95`).
    max_new_tokens (`int`, *optional*): 32768, or 8192 (RAC's T_max) for `rac`.
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
        self.policy = canonical_policy(self.policy)
        if self.num_generations is None:
            self.num_generations = 1 if self.policy == "rac" else 16
        if self.max_new_tokens is None:
            self.max_new_tokens = 8192 if self.policy == "rac" else 32768
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
        if not 0.0 <= self.temperature or not 0.0 < self.top_p <= 1.0:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1].")

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


def _model_name(model) -> str:
    if isinstance(model, str):
        return model
    return getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__


def _load_model(model_or_path, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(model_or_path, (str, os.PathLike)):
        path = str(model_or_path)
        if not os.path.exists(path) and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in path:
            raise FileNotFoundError(f"Model path not found: {path}")
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        tok = tokenizer or AutoTokenizer.from_pretrained(path)
        return model, tok, path
    if tokenizer is None:
        raise ValueError("Pass tokenizer=... with a model object (or pass a Hub id / local path instead).")
    return model_or_path, tokenizer, None


def _resolve_tokenizer(tokenizer):
    """A tokenizer object, or one loaded from a Hub id / local path as transformers and lm-eval accept it."""
    if tokenizer is None or not isinstance(tokenizer, (str, os.PathLike)):
        if tokenizer is not None and not callable(getattr(tokenizer, "apply_chat_template", None)):
            raise TypeError(
                f"tokenizer must be a transformers tokenizer or a Hub id / local path, got {type(tokenizer).__name__}."
            )
        return tokenizer
    from transformers import AutoTokenizer

    name = str(tokenizer)
    if not os.path.exists(name) and (os.environ.get("HF_HUB_OFFLINE") == "1" or name.startswith((".", "/"))):
        raise FileNotFoundError(f"Tokenizer path not found: {name} (pass a local folder, a Hub id, or the object).")
    return AutoTokenizer.from_pretrained(name)


def _load_tokenizer(model_or_path):
    """The tokenizer alone, for policies that generate nothing (no need to load the weights)."""
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise ValueError("Pass tokenizer=... with a model object (or pass a Hub id / local path instead).")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_or_path))


class SSGRCalibrator:
    """Builds calibration Datasets from a model's own reasoning (SSGR, RAC and every baseline and ablation).

    Args:
        config ([`CalibrationConfig`], *optional*): defaults to SSGR with 128 rows.
    """

    def __init__(self, config: CalibrationConfig | None = None):
        self.config = config if config is not None else CalibrationConfig()
        self.report: dict[str, Any] = {}

    # ----------------------------------------------------------------------------------------------------------------

    def build(self, model, source, tokenizer=None):
        """Return the calibration `datasets.Dataset` for `model` (object, Hub id or local path) and `source` (a
        registered name, a `Dataset`, or a local file). `tokenizer` is a tokenizer object or a Hub id / local path;
        by default the model's own (needed with a model object)."""
        import datasets

        cfg = self.config
        t_start = time.perf_counter()
        tokenizer = _resolve_tokenizer(tokenizer)
        source_name = source if isinstance(source, str) else "user"
        rng = random.Random(cfg.seed)
        if cfg.policy == "text":
            tok = tokenizer or _load_tokenizer(model)
            rows = self._text_rows(load_texts(source, cfg.source_path), tok, source_name, rng)
            counts = {"documents_sampled": len(rows)}
        else:
            if (
                isinstance(source, str)
                and source.lower() in ("c4", "wikipedia", "dclm")
                and get_source(source).kind == "text"
            ):
                raise ValueError(f"{source} is a text corpus: use policy='text' with it, or a problem source.")
            problems = load_problems(source, cfg.source_path)
            if cfg.policy in GENERATION_POLICIES:
                model_obj, tok, model_path = _load_model(model, tokenizer)
                rows, counts = self._rollout_rows(model_obj, tok, model_path, problems, rng)
            else:
                rows, counts = self._static_rows(problems, tokenizer or _load_tokenizer(model), rng)
        if len(rows) < cfg.num_samples and cfg.policy != "rac":
            logger.warning(
                "Only %d of the %d requested calibration rows could be selected (policy %s, counts %s): the source "
                "has too few problems that pass the filters.",
                len(rows),
                cfg.num_samples,
                cfg.policy,
                counts,
            )
        self.report = {
            "model": _model_name(model),
            "rollout_model": cfg.rollout_model or _model_name(model),
            "source": source_name,
            "policy": cfg.policy,
            "config": cfg.to_dict(),
            "counts": counts,
            "rows": len(rows),
            "tokens": sum(len(r["input_ids"]) for r in rows),
            "seconds": time.perf_counter() - t_start,
        }
        data = {c: [r[c] for r in rows] for c in CALIBRATION_COLUMNS}
        features = datasets.Features(
            {
                "input_ids": datasets.Sequence(datasets.Value("int32")),
                "prompt_length": datasets.Value("int32"),
                "problem_id": datasets.Value("string"),
                "source": datasets.Value("string"),
                "policy": datasets.Value("string"),
                "num_generations": datasets.Value("int32"),
                "correct_ratio": datasets.Value("float32"),
                "response_tokens": datasets.Value("int32"),
                "model": datasets.Value("string"),
            }
        )
        info = datasets.DatasetInfo(description=json.dumps(self.report, default=str), features=features)
        return datasets.Dataset.from_dict(data, features=features, info=info)

    # ----------------------------------------------------------------------------------------------------------------
    # Policies without generation

    def _row(
        self, input_ids, prompt_length, pid, source, num_generations=0, correct_ratio=None, response_tokens=0, model=""
    ):
        cfg = self.config
        ids = list(input_ids)[: cfg.max_length]
        return {
            "input_ids": ids,
            "prompt_length": min(prompt_length, len(ids)),
            "problem_id": pid,
            "source": source,
            "policy": cfg.policy,
            "num_generations": num_generations,
            "correct_ratio": float("nan") if correct_ratio is None else correct_ratio,
            "response_tokens": response_tokens,
            "model": model,
        }

    def _order(self, n: int, rng: random.Random) -> list[int]:
        order = list(range(n))
        rng.shuffle(order)
        if self.config.max_problems is not None:
            order = order[: self.config.max_problems]
        return order

    def _static_rows(self, problems, tok, rng):
        cfg = self.config
        rows, counts = [], Counter()
        for i in self._order(len(problems), rng):
            if len(rows) >= cfg.num_samples:
                break
            p = problems[i]
            counts["problems_visited"] += 1
            prompt = encode_prompt(tok, p["problem"], cfg.chat_template, cfg.chat_template_kwargs)
            if cfg.policy == "prompt_only":
                rows.append(self._row(prompt, len(prompt), p["problem_id"], p["source"]))
            else:  # human: the problem, then the human-written solution as the reply
                if not p["solution"]:
                    counts["no_solution"] += 1
                    continue
                sol = tok(p["solution"], add_special_tokens=False)["input_ids"]
                rows.append(
                    self._row(prompt + sol, len(prompt), p["problem_id"], p["source"], response_tokens=len(sol))
                )
            counts["selected"] += 1
        return rows, dict(counts)

    def _text_rows(self, texts, tok, source_name, rng):
        """Random windows of `max_length` tokens, as SparseGPT/Wanda sample C4: a random document long enough, then a
        random window of it; documents too short for any window are joined into one stream."""
        cfg = self.config
        n_docs = len(texts)
        if n_docs == 0:
            raise ValueError("The text corpus is empty.")
        rows, tries = [], 0
        while len(rows) < cfg.num_samples and tries < 20 * cfg.num_samples:
            tries += 1
            d = rng.randrange(n_docs)
            ids = tok(texts[d]["text"])["input_ids"]
            if len(ids) <= cfg.max_length:
                continue
            start = rng.randrange(len(ids) - cfg.max_length)
            rows.append(self._row(ids[start : start + cfg.max_length], 0, f"{source_name}/{d}@{start}", source_name))
        if len(rows) < cfg.num_samples:  # short documents (WikiText): one shuffled stream, as the references do
            order = list(range(n_docs))
            rng.shuffle(order)
            stream = tok("\n\n".join(texts[i]["text"] for i in order))["input_ids"]
            if len(stream) <= cfg.max_length:
                raise ValueError(
                    f"The text corpus has {len(stream)} tokens in all, not enough for one window of {cfg.max_length}."
                )
            while len(rows) < cfg.num_samples:
                start = rng.randrange(len(stream) - cfg.max_length)
                rows.append(
                    self._row(stream[start : start + cfg.max_length], 0, f"{source_name}/stream@{start}", source_name)
                )
        return rows

    # ----------------------------------------------------------------------------------------------------------------
    # Policies that read rollouts

    def _rollout_rows(self, model, tok, model_path, problems, rng):
        cfg = self.config
        gen_model, gen_tok, gen_path = model, tok, model_path
        off_policy = cfg.rollout_model is not None
        if off_policy:
            gen_model, gen_tok, gen_path = _load_model(cfg.rollout_model, None)
        same_vocab = (not off_policy) or gen_tok.get_vocab() == tok.get_vocab()
        self._generator_name = _model_name(gen_model) if not isinstance(cfg.rollout_model, str) else cfg.rollout_model
        meta = {
            "model": _model_name(gen_model),
            "model_fingerprint": model_fingerprint(gen_model),
            "generation": cfg.generation_settings(),
        }
        dist = Distributed.current()
        self._engine_env: dict[str, str] = {}
        if dist.enabled and cfg.engine == "vllm":
            # Data parallelism: one vLLM replica per process (vLLM's tensor/pipeline parallelism inside it), each on
            # its own GPUs or cores, each generating for its share of the problems.
            self._engine_env = replica_env(dist, cfg.vllm_kwargs)
        elif dist.device.type == "cuda" and next(gen_model.parameters()).device.type == "cpu":
            gen_model.to(dist.device)  # each process generates on its own GPU
        store_dir = cfg.rollouts_dir
        if store_dir is None:  # one temporary store shared by every process
            store_dir = dist.all_gather_object(tempfile.mkdtemp(prefix="hf_ssgr_rollouts_") if dist.is_main else None)[
                0
            ]
        store = RolloutStore(store_dir, meta, rank=dist.rank if dist.enabled else None)
        self._dist = dist
        quality = QualityConfig(cfg.repetition_ngram, cfg.max_repeat_ratio, cfg.min_thinking_words)
        n = cfg.num_generations
        order = self._order(len(problems), rng)
        wave = max(1, cfg.generation_batch_size // max(1, min(n, cfg.samples_per_round)))
        self._engine = None  # created on the first generation: a fully stored run never starts one
        try:
            return self._generate_and_select(
                problems, order, store, quality, n, wave, gen_model, gen_tok, gen_path, tok, same_vocab, rng, store_dir
            )
        finally:
            if self._engine is not None and hasattr(self._engine, "close"):
                self._engine.close()
            self._engine = None

    def _generate_and_select(
        self, problems, order, store, quality, n, wave, gen_model, gen_tok, gen_path, tok, same_vocab, rng, store_dir
    ):
        cfg = self.config
        rows: list[dict] = []
        counts: Counter = Counter()
        tokens_generated = 0
        responses_generated = 0
        collected_tokens = 0

        def enough() -> bool:
            if cfg.policy == "rac":
                return collected_tokens >= cfg.token_budget or len(rows) >= cfg.num_samples
            return len(rows) >= cfg.num_samples

        from tqdm.auto import tqdm

        dist = self._dist
        bar = tqdm(total=cfg.num_samples, desc=f"Calibration {cfg.policy}", unit="row", disable=not dist.is_main)
        pos = 0
        while pos < len(order) and not (cfg.streaming and enough()):
            # Never start more problems than rows still needed: every problem yields at most one row.
            needed = cfg.num_samples - len(rows)
            if cfg.policy == "rac":
                needed = min(needed, -(-(cfg.token_budget - collected_tokens) // cfg.max_length))
            # With several processes each generates for its share of the wave (problem j of the wave goes to process
            # j mod world size), into its own file of the shared store.
            full_wave = wave * dist.world_size
            size = min(full_wave, max(1, needed)) if cfg.streaming else full_wave
            batch = [problems[i] for i in order[pos : pos + size]]
            pos += len(batch)
            prompts = {
                p["problem_id"]: encode_prompt(gen_tok, p["problem"], cfg.chat_template, cfg.chat_template_kwargs)
                for p in batch
            }
            mine = [p for j, p in enumerate(batch) if j % dist.world_size == dist.rank]
            active = [p for p in mine if not self._decided(store.samples(p["problem_id"]), n)]
            while active:
                # One generate call per round size, so that no problem is sampled more than it needs.
                sizes = [self._round_size(store.samples(p["problem_id"]), n) for p in active]
                k = max(sizes)
                group = [p for p, size in zip(active, sizes) if size == k]
                if self._engine is None:
                    self._engine = make_engine(
                        cfg.engine,
                        gen_model,
                        gen_tok,
                        gen_path,
                        temperature=cfg.temperature,
                        top_p=cfg.top_p,
                        max_new_tokens=cfg.max_new_tokens,
                        batch_size=cfg.generation_batch_size,
                        seed=cfg.seed + dist.rank,  # the vLLM engine seed on CPUs: distinct per replica
                        vllm_kwargs=cfg.vllm_kwargs,
                        env=self._engine_env,
                    )
                seed = cfg.seed * 1_000_003 + sum(len(store.samples(p["problem_id"])) for p in group) + pos
                seed += dist.rank * 1_000_000_007
                outs = self._engine.generate([prompts[p["problem_id"]] for p in group], k, seed)
                for p, samples in zip(group, outs):
                    pid = p["problem_id"]
                    have = len(store.samples(pid))
                    new = []
                    for j, s in enumerate(samples):
                        text = gen_tok.decode(s.response_ids, skip_special_tokens=True)
                        v = verify_reply(text, p["answer"], s.finish_reason, cfg.require_think_end, quality)
                        new.append({
                            "sample_idx": have + j, "response_ids": s.response_ids, "finish_reason": s.finish_reason,
                            "response_text": text, "extracted_answer": v.extracted_answer, "correct": v.correct,
                            "repetitive": v.repetitive, "no_reasoning": v.no_reasoning, "wrong_format": v.wrong_format,
                        })  # fmt: skip
                        tokens_generated += len(s.response_ids)
                        responses_generated += 1
                        counts["responses_correct"] += v.correct
                        counts["responses_truncated"] += s.finish_reason == "length"
                        for flag in ("repetitive", "no_reasoning", "wrong_format"):
                            counts[f"responses_{flag}"] += getattr(v, flag)
                    all_samples = store.samples(pid) + new
                    done = self._decided(all_samples, n)
                    store.append(pid, prompts[pid], new, done=done)
                active = [p for p in active if not self._decided(store.samples(p["problem_id"]), n)]
            if dist.enabled:  # every process reads the whole wave, then takes the same decisions
                dist.barrier()
                store.refresh()
            for p in batch:
                if enough():
                    break  # exhaustive mode keeps generating, but the first rows in the shuffled order are the draw
                counts["problems_visited"] += 1
                samples = store.samples(p["problem_id"])
                if len(samples) < n:
                    counts["stopped_early"] += 1
                d = select_response(
                    cfg.policy, samples, tau=cfg.tau, budget=cfg.max_length - len(prompts[p["problem_id"]]), rng=rng
                )
                counts[d.reason] += 1
                if d.sample is None:
                    continue
                row = self._rollout_row(
                    p, prompts[p["problem_id"]], d.sample, d.correct_ratio, samples, tok, gen_tok, same_vocab
                )
                if row is None:
                    counts["no_think_end"] += 1
                    continue
                rows.append(row)
                collected_tokens += len(row["input_ids"])
                bar.update(1)
            bar.set_postfix(problems=pos, generated_tokens=tokens_generated, refresh=False)
        bar.close()
        if dist.enabled:  # generation counts are per process; the selection counts are the same everywhere
            local = {k: v for k, v in counts.items() if k.startswith("responses_")}
            parts = dist.all_gather_object((tokens_generated, responses_generated, local))
            tokens_generated = sum(p[0] for p in parts)
            responses_generated = sum(p[1] for p in parts)
            for key in {k for p in parts for k in p[2]}:
                counts[key] = sum(p[2].get(key, 0) for p in parts)
        mean_len = tokens_generated / max(responses_generated, 1)
        exhaustive = len(problems) * n * mean_len
        counts = dict(counts)
        counts.update(
            {
                "problems_in_source": len(problems),
                "responses_generated": responses_generated,
                "tokens_generated": tokens_generated,
                "exhaustive_tokens_estimate": round(exhaustive),
                "generated_to_exhaustive_ratio": tokens_generated / exhaustive if exhaustive else 0.0,
                "rollouts_dir": store_dir,
            }
        )
        logger.info(
            "Calibration %s: %d rows from %d problems visited; generated %d responses / %d tokens (%.1f%% of the "
            "exhaustive estimate).",
            cfg.policy,
            len(rows),
            counts["problems_visited"],
            responses_generated,
            tokens_generated,
            100 * counts["generated_to_exhaustive_ratio"],
        )
        return rows, counts

    def _round_size(self, samples: list[dict], n: int) -> int:
        """Samples to draw for a problem before the next early-stop check."""
        left = n - len(samples)
        if not self.config.early_stop:
            return left
        floor = samples_before_decision(self.config.policy, samples, n, self.config.tau)
        return min(left, max(self.config.samples_per_round, floor))

    def _decided(self, samples: list[dict], n: int) -> bool:
        if len(samples) >= n:
            return True
        return self.config.early_stop and sampling_decided(self.config.policy, samples, n, self.config.tau)

    def _rollout_row(self, problem, prompt_ids, sample, correct_ratio, samples, tok, gen_tok, same_vocab):
        cfg = self.config
        response = list(sample["response_ids"])
        if not same_vocab:  # off-policy with another tokenizer: re-encode in the pruned model's vocabulary
            prompt_ids = encode_prompt(tok, problem["problem"], cfg.chat_template, cfg.chat_template_kwargs)
            response = tok(sample["response_text"], add_special_tokens=False)["input_ids"]
        if cfg.policy == "no_thinking":
            cut = _think_end_index(response, tok)
            if cut is None:
                return None
            response = response[cut:]
        return self._row(
            prompt_ids + response,
            len(prompt_ids),
            problem["problem_id"],
            problem["source"],
            len(samples),
            correct_ratio,
            len(response),
            self._generator_name,
        )


def _think_end_index(response_ids: list[int], tok) -> int | None:
    """Index of the first token whose prefix decodes to text containing `</think>`, minus the tokens of `</think>`
    itself, so that `response_ids[index:]` starts with `</think>`. Found by bisection on decoded prefixes."""
    if THINK_END not in tok.decode(response_ids, skip_special_tokens=False):
        return None
    lo, hi = 0, len(response_ids)
    while lo < hi:  # smallest prefix containing </think>
        mid = (lo + hi) // 2
        if THINK_END in tok.decode(response_ids[: mid + 1], skip_special_tokens=False):
            hi = mid
        else:
            lo = mid + 1
    end = lo + 1
    start = end - 1
    while start > 0 and THINK_END not in tok.decode(response_ids[start:end], skip_special_tokens=False):
        start -= 1
    return start
