"""`SSGRCalibrator`: sources → rollouts → verification → selection → the calibration `Dataset`.

```python
calib = SSGRCalibrator(CalibrationConfig(policy="ssgr", num_samples=128, max_length=16384)).build(model, "MathR", tokenizer=tok)
```

The returned Dataset follows the calibration contract: `input_ids` (chat-templated, truncated to `max_length`),
`prompt_length`, and the provenance columns `problem_id`, `source`, `policy`, `num_generations`, `correct_ratio`,
`response_tokens`, `model`. How it was built (settings, counts at every filter, generation cost) is the
[`CalibrationReport`] in `calibrator.report`, stored as JSON in `dataset.info.description`.

The calibrator knows no policy: it asks the [`Policy`] named by `CalibrationConfig.policy` where rows come from, which
sample of a problem to keep and when a problem is decided.

Selection streams: problems are visited in a seeded random order and generation stops once `num_samples` rows are
selected (or RAC's token budget is reached); a problem whose fate is already decided (e.g. more than τ·n correct
samples for SSGR) stops being sampled. This draws from the same distribution as the paper's exhaustive procedure
(sample every problem, then draw at random from the survivors) at a fraction of the cost.
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from ..distributed import Distributed
from ..utils import load_tokenizer, owned_temp_dir, remove_stale_folders, scrub_local_paths
from ..verification import QualityConfig, verify_reply
from .config import CalibrationConfig
from .engines import make_engine, replica_env, sample_seed
from .policies import Policy
from .prompts import encode_prompt
from .sources import get_source, load_problems, load_texts
from .store import SAMPLING, RolloutStore, VerifiedSample, model_fingerprint

logger = logging.getLogger("hf_ssgr")

__all__ = ["CalibrationConfig", "CalibrationReport", "SSGRCalibrator", "CALIBRATION_COLUMNS"]

TEMP_STORE_PREFIX = "hf_ssgr_rollouts_"  # the temporary store of a run without rollouts_dir
CALIBRATION_COLUMNS = [
    "input_ids", "prompt_length", "problem_id", "source", "policy", "num_generations", "correct_ratio",
    "response_tokens", "model",
]  # fmt: skip


@dataclass
class CalibrationReport:
    """How a calibration Dataset was built; its JSON (`to_json`) is the Dataset's `info.description`.

    Args:
        model (`str`): the model calibrated for (its name or path).
        rollout_model (`str`): the model that generated the rollouts (`model`, or `CalibrationConfig.rollout_model`).
        source (`str`): the source name (`"user"` for a Dataset).
        policy (`str`): the policy name.
        config (`dict`): `CalibrationConfig.to_dict()`.
        counts (`dict`): problems and responses at every filter; with rollouts also the generation cost
            (`responses_generated`, `tokens_generated`, `exhaustive_tokens_estimate`, `generated_to_exhaustive_ratio`)
            and `rollouts_dir`. The response counts are totals over the rollouts of the problems the run went through,
            whichever run generated them (so a resumed run reports what an uninterrupted one does);
            `responses_generated_this_run` and `tokens_generated_this_run` count what this run generated, the rest
            was read from the rollouts store.
        rows (`int`) / tokens (`int`): rows and tokens of the Dataset.
        seconds (`float`): the wall time of `build`.
    """

    model: str
    rollout_model: str
    source: str
    policy: str
    config: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    rows: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        """The JSON written in `Dataset.info.description` (values JSON cannot hold are written as strings)."""
        return json.dumps(self.to_dict(), default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationReport:
        names = [f.name for f in fields(cls)]
        missing = [k for k in names[:4] if k not in data]
        if missing:
            raise ValueError(
                f"Not a calibration report: {missing} missing (keys: {sorted(data)}). It is written by "
                "SSGRCalibrator.build in the Dataset's info.description."
            )
        return cls(**{k: data[k] for k in names if k in data})

    @classmethod
    def from_json(cls, text: str) -> CalibrationReport:
        """Read `to_json`'s output, e.g. `CalibrationReport.from_json(dataset.info.description)`."""
        return cls.from_dict(json.loads(text))


@dataclass
class _Progress:
    """What a rollout run has selected and generated so far (`tokens_generated` and `responses_generated`: this
    process's generation in this run)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    tokens_generated: int = 0
    responses_generated: int = 0
    collected_tokens: int = 0


@dataclass
class _Models:
    """The tokenizer of the calibrated model and the model that generates (itself, or the off-policy one)."""

    tok: Any
    gen_model: Any
    gen_tok: Any
    gen_path: str | None
    same_vocab: bool


def _model_name(model) -> str:
    """How the Dataset, its report and the rollout store name a model: a Hub id as it is, a local folder by its name
    only (these records are published with the data; see `utils.public_name`)."""
    from ..utils import public_name

    if isinstance(model, (str, os.PathLike)):
        return public_name(model)
    return public_name(getattr(getattr(model, "config", None), "_name_or_path", None)) or type(model).__name__


def _load_model(model_or_path, tokenizer):
    from transformers import AutoModelForCausalLM

    if isinstance(model_or_path, (str, os.PathLike)):
        from ..utils import resolve_model

        path = resolve_model(str(model_or_path))  # `tiny`, `tiny-moe`, ...: the embedded models
        if not os.path.exists(path) and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in path:
            raise FileNotFoundError(f"Model path not found: {path}")
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        tok = tokenizer or load_tokenizer(path)
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
    name = str(tokenizer)
    if not os.path.exists(name) and (os.environ.get("HF_HUB_OFFLINE") == "1" or name.startswith((".", "/"))):
        raise FileNotFoundError(f"Tokenizer path not found: {name} (pass a local folder, a Hub id, or the object).")
    return load_tokenizer(name)


def _load_tokenizer(model_or_path):
    """The tokenizer alone, for policies that generate nothing (no need to load the weights)."""
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise ValueError("Pass tokenizer=... with a model object (or pass a Hub id / local path instead).")
    return load_tokenizer(str(model_or_path))


class SSGRCalibrator:
    """Builds calibration Datasets from a model's own reasoning (SSGR, RAC and every baseline and ablation).

    Args:
        config ([`CalibrationConfig`], *optional*): defaults to SSGR with 128 rows.

    After `build`, `report` is the [`CalibrationReport`] of the Dataset it returned.
    """

    def __init__(self, config: CalibrationConfig | None = None):
        self.config = config if config is not None else CalibrationConfig()
        self.report: CalibrationReport | None = None

    @property
    def policy(self) -> Policy:
        """The [`Policy`] named by `config.policy`."""
        return self.config.selection_policy

    # ----------------------------------------------------------------------------------------------------------------

    def build(self, model, source, tokenizer=None):
        """Return the calibration `datasets.Dataset` for `model` (object, Hub id or local path) and `source` (a
        registered name, a `Dataset`, or a local file). `tokenizer` is a tokenizer object or a Hub id / local path;
        by default the model's own (needed with a model object)."""
        from ..utils import check_model_path, check_output, resolve_model

        cfg = self.config
        t_start = time.perf_counter()
        if isinstance(model, (str, os.PathLike)):
            check_model_path(resolve_model(str(model)))  # a missing folder is named, before anything is loaded
        if cfg.rollouts_dir:
            check_output(cfg.rollouts_dir, "rollouts_dir")
        tokenizer = _resolve_tokenizer(tokenizer)
        source_name = source if isinstance(source, str) else "user"
        rows, counts = self._rows(model, source, tokenizer, source_name, random.Random(cfg.seed))
        if cfg.max_tokens is not None:
            rows = cut_to_tokens(rows, cfg.max_tokens)
            held = sum(len(r["input_ids"]) for r in rows)
            if held < cfg.max_tokens:
                logger.warning(
                    "Calibration %s holds %d tokens, fewer than max_tokens=%d: raise num_samples (now %d) or the "
                    "number of problems the source offers, or lower max_tokens.",
                    cfg.policy,
                    held,
                    cfg.max_tokens,
                    cfg.num_samples,
                )
        elif len(rows) < cfg.num_samples and not self.policy.stops_at_token_budget:
            logger.warning(
                "Only %d of the %d requested calibration rows could be selected (policy %s, counts %s): the source "
                "has too few problems that pass the filters.",
                len(rows),
                cfg.num_samples,
                cfg.policy,
                counts,
            )
        self.report = CalibrationReport(
            model=_model_name(model),
            rollout_model=_model_name(cfg.rollout_model or model),
            source=source_name,
            policy=cfg.policy,
            config=scrub_local_paths(cfg.to_dict()),  # source_path, rollouts_dir: their names only
            counts=scrub_local_paths(counts),
            rows=len(rows),
            tokens=sum(len(r["input_ids"]) for r in rows),
            seconds=time.perf_counter() - t_start,
        )
        return _to_dataset(rows, self.report)

    def _rows(self, model, source, tokenizer, source_name, rng):
        """The rows and the counts, from where the policy takes them: a corpus, the problems alone, or rollouts."""
        cfg, policy = self.config, self.policy
        if policy.source_kind == "text":
            tok = tokenizer or _load_tokenizer(model)
            rows = self._text_rows(load_texts(source, cfg.source_path), tok, source_name, rng)
            return rows, {"documents_sampled": len(rows)}
        if (
            isinstance(source, str)
            and source.lower() in ("c4", "wikipedia", "dclm")
            and get_source(source).kind == "text"
        ):
            raise ValueError(f"{source} is a text corpus: use policy='text' with it, or a problem source.")
        problems = load_problems(source, cfg.source_path)
        if policy.generates:
            model_obj, tok, model_path = _load_model(model, tokenizer)
            return self._rollout_rows(model_obj, tok, model_path, problems, rng)
        return self._static_rows(problems, tokenizer or _load_tokenizer(model), rng)

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

    # ----------------------------------------------------------------------------------------------------------------
    # Policies without generation

    def _static_rows(self, problems, tok, rng):
        """One row per problem: the templated prompt followed by the policy's `problem_response`."""
        cfg, policy = self.config, self.policy
        rows, counts = [], Counter()
        tokens = 0
        for i in self._order(len(problems), rng):
            if len(rows) >= cfg.num_samples or (cfg.max_tokens is not None and tokens >= cfg.max_tokens):
                break
            p = problems[i]
            counts["problems_visited"] += 1
            prompt = encode_prompt(tok, p["problem"], cfg.chat_template, cfg.chat_template_kwargs)
            response = policy.problem_response(p, tok)
            if response is None:
                counts[policy.dropped_reason] += 1
                continue
            rows.append(
                self._row(prompt + response, len(prompt), p["problem_id"], p["source"], response_tokens=len(response))
            )
            tokens += len(rows[-1]["input_ids"])
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
        # every window holds max_length tokens: the token cap is a cap on rows
        want = cfg.num_samples if cfg.max_tokens is None else min(cfg.num_samples, -(-cfg.max_tokens // cfg.max_length))

        def short():
            return len(rows) < want

        while short() and tries < 20 * cfg.num_samples:
            tries += 1
            d = rng.randrange(n_docs)
            ids = tok(texts[d]["text"])["input_ids"]
            if len(ids) <= cfg.max_length:
                continue
            start = rng.randrange(len(ids) - cfg.max_length)
            rows.append(self._row(ids[start : start + cfg.max_length], 0, f"{source_name}/{d}@{start}", source_name))
        if short():  # short documents (WikiText): one shuffled stream, as the references do
            order = list(range(n_docs))
            rng.shuffle(order)
            stream = tok("\n\n".join(texts[i]["text"] for i in order))["input_ids"]
            if len(stream) <= cfg.max_length:
                raise ValueError(
                    f"The text corpus has {len(stream)} tokens in all, not enough for one window of {cfg.max_length}."
                )
            while short():
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
        models = _Models(tok, gen_model, gen_tok, gen_path, same_vocab)
        self._generator_name = _model_name(cfg.rollout_model if isinstance(cfg.rollout_model, str) else gen_model)
        meta = {
            "model": _model_name(gen_model),
            "model_fingerprint": model_fingerprint(gen_model),
            "generation": cfg.generation_settings(),
            "sampling": SAMPLING,
        }
        dist = self._dist = Distributed.current()
        self._engine_env: dict[str, str] = {}
        if dist.enabled and cfg.engine == "vllm":
            # Data parallelism: one vLLM replica per process (vLLM's tensor/pipeline parallelism inside it), each on
            # its own GPUs or cores, each generating for its share of the problems.
            self._engine_env = replica_env(dist, cfg.vllm_kwargs)
        elif dist.device.type == "cuda" and next(gen_model.parameters()).device.type == "cpu":
            gen_model.to(dist.device)  # each process generates on its own GPU
        store_dir = cfg.rollouts_dir
        if store_dir is None:  # one temporary store shared by every process, removed at the end
            store_dir = dist.all_gather_object(self._temporary_store() if dist.is_main else None)[0]
        store = RolloutStore(store_dir, meta, rank=dist.rank if dist.enabled else None)
        order = self._order(len(problems), rng)
        self._engine = None  # created on the first generation: a fully stored run never starts one
        try:
            rows, counts = self._generate_and_select(problems, order, store, models, rng, store_dir)
        finally:
            if self._engine is not None and hasattr(self._engine, "close"):
                self._engine.close()
            self._engine = None
            if cfg.rollouts_dir is None:
                self._remove_temporary_store(store_dir)
        if cfg.rollouts_dir is None:
            counts["rollouts_dir"] = None  # removed: set rollouts_dir to keep (and resume) the rollouts
        return rows, counts

    @staticmethod
    def _temporary_store() -> str:
        """A new temporary rollouts store, after removing those of ended runs on this host."""
        remove_stale_folders(tempfile.gettempdir(), TEMP_STORE_PREFIX, "temporary rollouts store")
        return owned_temp_dir(TEMP_STORE_PREFIX)

    def _remove_temporary_store(self, store_dir: str) -> None:
        """Remove the temporary store once every process is done with it (on an error, each removes it at once)."""
        import shutil

        if self._dist.is_main:
            shutil.rmtree(store_dir, ignore_errors=True)

    def _generate_and_select(self, problems, order, store, models, rng, store_dir):
        """Visit the problems in `order` wave by wave: generate what each still needs, then select its row."""
        cfg, dist = self.config, self._dist
        quality = QualityConfig(cfg.repetition_ngram, cfg.max_repeat_ratio, cfg.min_thinking_words)
        wave = max(1, cfg.generation_batch_size // max(1, min(cfg.num_generations, cfg.samples_per_round)))
        progress = _Progress()
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.num_samples, desc=f"Calibration {cfg.policy}", unit="row", disable=not dist.is_main)
        pos = 0
        while pos < len(order) and not (cfg.streaming and self._enough(progress)):
            # With several processes each generates for its share of the wave (problem j of the wave goes to process
            # j mod world size), into its own file of the shared store.
            batch = [problems[i] for i in order[pos : pos + self._wave_size(progress, wave * dist.world_size)]]
            pos += len(batch)
            prompts = {
                p["problem_id"]: encode_prompt(
                    models.gen_tok, p["problem"], cfg.chat_template, cfg.chat_template_kwargs
                )
                for p in batch
            }
            mine = [p for j, p in enumerate(batch) if j % dist.world_size == dist.rank]
            self._sample(mine, prompts, store, models, quality, progress, pos)
            if dist.enabled:  # every process reads the whole wave, then takes the same decisions
                dist.barrier()
                store.refresh()
            self._select(batch, prompts, store, models, progress, rng, bar)
            bar.set_postfix(problems=pos, generated_tokens=progress.tokens_generated, refresh=False)
        bar.close()
        self._gather_generation_counts(progress)
        went_through = [store.samples(problems[i]["problem_id"]) for i in order[:pos]]
        counts = self._cost_counts(progress, went_through, len(problems), store_dir)
        logger.info(
            "Calibration %s: %d rows from %d problems visited; %d responses / %d tokens in all (%.1f%% of the "
            "exhaustive estimate), of which this run generated %d responses / %d tokens.",
            cfg.policy,
            len(progress.rows),
            counts["problems_visited"],
            counts["responses_generated"],
            counts["tokens_generated"],
            100 * counts["generated_to_exhaustive_ratio"],
            progress.responses_generated,
            progress.tokens_generated,
        )
        return progress.rows, counts

    def _enough(self, progress: _Progress) -> bool:
        cfg = self.config
        if cfg.max_tokens is not None and progress.collected_tokens >= cfg.max_tokens:
            return True
        if self.policy.stops_at_token_budget and progress.collected_tokens >= cfg.token_budget:
            return True
        return len(progress.rows) >= cfg.num_samples

    def _wave_size(self, progress: _Progress, full_wave: int) -> int:
        """Problems to start now: never more than rows still needed, since every problem yields at most one row."""
        cfg = self.config
        needed = cfg.num_samples - len(progress.rows)
        if self.policy.stops_at_token_budget:
            needed = min(needed, -(-(cfg.token_budget - progress.collected_tokens) // cfg.max_length))
        return min(full_wave, max(1, needed)) if cfg.streaming else full_wave

    def _sample(self, mine, prompts, store, models, quality, progress, pos):
        """Generate for this process's problems of the wave until each is decided, one round size at a time."""
        cfg, dist, n = self.config, self._dist, self.config.num_generations
        active = [p for p in mine if not self._decided(store.samples(p["problem_id"]), n)]
        while active:
            # One generate call per round size, so that no problem is sampled more than it needs.
            sizes = [self._round_size(store.samples(p["problem_id"]), n) for p in active]
            k = max(sizes)
            group = [p for p, size in zip(active, sizes) if size == k]
            if self._engine is None:
                self._engine = self._start_engine(models)
            seed = cfg.seed * 1_000_003 + sum(len(store.samples(p["problem_id"])) for p in group) + pos
            seed += dist.rank * 1_000_000_007
            # Each (problem, sample index) has its own seed: a resume draws what an uninterrupted run draws, whatever
            # problems share the batch (the batch seed above only serves engines without per-sample seeds).
            seeds = [self._sample_seeds(p["problem_id"], len(store.samples(p["problem_id"])), k) for p in group]
            outs = self._engine.generate([prompts[p["problem_id"]] for p in group], k, seed, sample_seeds=seeds)
            for p, samples in zip(group, outs):
                self._verify_and_store(p, prompts[p["problem_id"]], samples, store, models.gen_tok, quality, progress)
            active = [p for p in active if not self._decided(store.samples(p["problem_id"]), n)]

    def _sample_seeds(self, problem_id: str, first: int, k: int) -> list[int]:
        """The seeds of samples `first, ..., first + k - 1` of a problem."""
        return [sample_seed(self.config.seed, problem_id, first + j) for j in range(k)]

    def _start_engine(self, models: _Models):
        cfg = self.config
        return make_engine(
            cfg.engine,
            models.gen_model,
            models.gen_tok,
            models.gen_path,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.generation_batch_size,
            seed=cfg.seed + self._dist.rank,  # the vLLM engine seed on CPUs: distinct per replica
            vllm_kwargs=cfg.vllm_kwargs,
            env=self._engine_env,
        )

    def _verify_and_store(self, problem, prompt_ids, samples, store, gen_tok, quality, progress):
        """Verify one problem's new samples, count them, and append them to the store."""
        cfg = self.config
        pid = problem["problem_id"]
        have = len(store.samples(pid))
        new = []
        for j, s in enumerate(samples):
            text = gen_tok.decode(s.response_ids, skip_special_tokens=True)
            v = verify_reply(text, problem["answer"], s.finish_reason, cfg.require_think_end, quality)
            new.append(VerifiedSample.from_reply(have + j, s, text, v))
            progress.tokens_generated += len(s.response_ids)
            progress.responses_generated += 1
        done = self._decided(store.samples(pid) + new, cfg.num_generations)
        store.append(pid, prompt_ids, new, done=done)

    def _select(self, batch, prompts, store, models, progress, rng, bar):
        """Apply the policy to every problem of the wave, in order, until enough rows are selected."""
        cfg, policy, counts = self.config, self.policy, progress.counts
        for p in batch:
            if self._enough(progress):
                break  # exhaustive mode keeps generating, but the first rows in the shuffled order are the draw
            counts["problems_visited"] += 1
            samples = store.samples(p["problem_id"])
            if len(samples) < cfg.num_generations:
                counts["stopped_early"] += 1
            prompt_ids = prompts[p["problem_id"]]
            d = policy.select(samples, tau=cfg.tau, budget=cfg.max_length - len(prompt_ids), rng=rng)
            counts[d.reason] += 1
            if d.sample is None:
                continue
            row = self._rollout_row(p, prompt_ids, d.sample, d.correct_ratio, samples, models)
            if row is None:
                counts[policy.dropped_reason] += 1
                continue
            progress.rows.append(row)
            progress.collected_tokens += len(row["input_ids"])
            bar.update(1)

    def _gather_generation_counts(self, progress: _Progress) -> None:
        """This run's generation counts are per process: add them up (the selection counts are the same everywhere)."""
        dist = self._dist
        if not dist.enabled:
            return
        parts = dist.all_gather_object((progress.tokens_generated, progress.responses_generated))
        progress.tokens_generated = sum(p[0] for p in parts)
        progress.responses_generated = sum(p[1] for p in parts)

    def _cost_counts(self, progress: _Progress, went_through: list[list[VerifiedSample]], num_problems: int,
                     store_dir: str) -> dict[str, Any]:  # fmt: skip
        """The counts, with the responses of the problems the run went through (`went_through`: their samples, from
        this run or read from the store) and the generation cost against sampling every problem fully."""
        samples = [s for group in went_through for s in group]
        tokens = sum(len(s.response_ids) for s in samples)
        exhaustive = num_problems * self.config.num_generations * tokens / max(len(samples), 1)
        counts = dict(progress.counts)
        counts.update(
            {
                "responses_correct": sum(bool(s.correct) for s in samples),
                "responses_truncated": sum(s.finish_reason == "length" for s in samples),
                **{f"responses_{flag}": sum(bool(getattr(s, flag)) for s in samples)
                   for flag in ("repetitive", "no_reasoning", "wrong_format")},  # fmt: skip
                "problems_in_source": num_problems,
                "responses_generated": len(samples),
                "tokens_generated": tokens,
                "responses_generated_this_run": progress.responses_generated,
                "tokens_generated_this_run": progress.tokens_generated,
                "exhaustive_tokens_estimate": round(exhaustive),
                "generated_to_exhaustive_ratio": tokens / exhaustive if exhaustive else 0.0,
                "rollouts_dir": store_dir,
            }
        )
        return counts

    def _round_size(self, samples: list[VerifiedSample], n: int) -> int:
        """Samples to draw for a problem before the next early-stop check."""
        left = n - len(samples)
        if not self.config.early_stop:
            return left
        floor = self.policy.samples_before_decision(samples, n, self.config.tau)
        return min(left, max(self.config.samples_per_round, floor))

    def _decided(self, samples: list[VerifiedSample], n: int) -> bool:
        if len(samples) >= n:
            return True
        return self.config.early_stop and self.policy.is_decided(samples, n, self.config.tau)

    def _rollout_row(self, problem, prompt_ids, sample, correct_ratio, samples, models: _Models):
        cfg = self.config
        response = list(sample.response_ids)
        if not models.same_vocab:  # off-policy with another tokenizer: re-encode in the pruned model's vocabulary
            prompt_ids = encode_prompt(models.tok, problem["problem"], cfg.chat_template, cfg.chat_template_kwargs)
            response = models.tok(sample.response_text, add_special_tokens=False)["input_ids"]
        response = self.policy.row_response(response, models.tok)
        if response is None:
            return None
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


def cut_to_tokens(rows: list[dict[str, Any]], max_tokens: int) -> list[dict[str, Any]]:
    """The first rows holding `max_tokens` tokens in all, the last one truncated to fit (its `prompt_length` and
    `response_tokens` cut with it); all the rows when they hold fewer."""
    out, total = [], 0
    for row in rows:
        if total >= max_tokens:
            break
        room = max_tokens - total
        if len(row["input_ids"]) > room:
            row = dict(row, input_ids=list(row["input_ids"])[:room])
            row["prompt_length"] = min(row["prompt_length"], room)
            row["response_tokens"] = min(row["response_tokens"], room - row["prompt_length"])
        out.append(row)
        total += len(row["input_ids"])
    return out


def _to_dataset(rows: list[dict[str, Any]], report: CalibrationReport):
    """The calibration Dataset of `rows`, with `report` as JSON in its `info.description`."""
    import datasets

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
    info = datasets.DatasetInfo(description=report.to_json(), features=features)
    return datasets.Dataset.from_dict(data, features=features, info=info)
