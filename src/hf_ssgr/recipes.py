"""`hf-ssgr run RECIPE`: calibrate → prune → evaluate → report, in one output folder, resumable.

A recipe is a flat YAML mapping (see `RunConfig`): one model, a problem source (and a text corpus for the `text`
policy), the calibration policies to build, the pruning configurations to apply to each calibration, and the
evaluation tasks. The output folder holds everything:

    calibration/<policy>/         the calibration Datasets (save_to_disk)
    rollouts/                     the rollout stores the generation policies share
    pruned/<policy>/<variant>/    pruning_config.json (+ the weights with save_models: true); a quantized variant
                                  is `<variant>+fp8` (the pruned model exported as FP8, see `quantize`)
    eval/dense.json, eval/<policy>__<variant>.json
    report.md, accuracy.png, lengths.png, levels.png (tasks with difficulty levels), manifest.json

Every step writes its result atomically and is skipped when its result is on disk, so re-running a recipe
recomputes nothing that is finished, and an interrupted run continues where it stopped.

Under `torchrun` / `accelerate launch` every step runs on all the processes: the rollouts and the evaluation problems
are dealt across them, the pruning splits the calibration rows, and process 0 writes each result before any process
goes on.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from .calibration.config import CalibrationConfig
from .calibration.policies import get_policy
from .calibration.sources import get_source
from .claims import base_label, models_needing_errors, parse_claims, seed_label
from .evaluation.config import EvalConfig
from .pruning.config import PruningConfig
from .utils import (
    PRUNING_CONFIG_NAME,
    check_output,
    library_versions,
    parse_torch_dtype,
    resolve_model,
    write_folder_atomically,
    write_json_atomically,
    write_text_atomically,
)

logger = logging.getLogger("hf_ssgr")

__all__ = ["RunConfig", "CalibrationSpec", "run_recipe"]


@dataclass
class CalibrationSpec:
    """One calibration of a recipe: its label (the folder name under `calibration/`), its problem source and its
    typed [`CalibrationConfig`]."""

    name: str
    source: str
    source_path: Any
    config: CalibrationConfig


@dataclass
class RunConfig:
    """One experiment (or a small declared grid): every calibration policy × every pruning configuration.

    The recipe YAML is a flat mapping of these fields. Its nested parts become typed configs when the recipe is read:
    `prune` a list of [`PruningConfig`], each calibration a [`CalibrationSpec`] (`calibrations`), and the evaluation
    settings one [`EvalConfig`] (`eval_config`); the run uses those, and a bad value fails before any work starts.

    Args:
        model: the dense model (path or Hub id; `tiny` is the embedded tiny reasoner).
        output_dir: where everything is written.
        source / source_path: the problem source (a registered name or a local file) of the calibration.
        text_source / text_source_path: the corpus of the `text` policy.
        policies: calibration policies (`hf_ssgr.calibration.policies.list_policies()`).
        calibration: `CalibrationConfig` fields shared by every policy (num_samples, max_length, ...).
        policy_overrides: per policy, fields that differ (e.g. `{rac: {max_new_tokens: 8192}}`).
        rollout_model: off-policy generation: the model whose rollouts calibrate (default: the dense model).
        prune: the pruning configurations (`PruningConfig` fields, or `PruningConfig`s), each applied to every
            calibration; a configuration without its own `seed` takes the recipe's.
        quantize: a quantization step after pruning: the schemes each pruned model is also exported and evaluated
            with (`none` keeps the unquantized model; `fp8`: compressed-tensors FP8_DYNAMIC, data-free). Default
            `[none]`. A quantized variant's folder always holds its weights: it is evaluated from there, as a user
            loads it.
        tasks / eval_data_files / num_samples / max_new_tokens / limit / backend / eval_batch_size: evaluation
            (`EvalConfig` fields).
        decode_budgets: shorter (or longer) generation limits at which every model is also evaluated on the
            accuracy tasks (RAC Table 8: `[8192, 4096]` next to `max_new_tokens: 32768`); each lands in
            `eval/<name>@<budget>.json`, and report.md shows a row per model and budget with pass@1 and generation
            time.
        calibration_seeds: build every calibration once per seed (labels `<calibration>.seed<k>`), prune and
            evaluate each; the claims average over them and resample them in their intervals. Empty: one calibration
            per policy with `seed`.
        calibration_tokens: every calibration is cut to exactly this many tokens (`CalibrationConfig.max_tokens`),
            as the papers hold the token count fixed; a calibration that cannot reach it stops the run with an error
            (raise its `num_samples`).
        claims: claims to test on the results (see `hf_ssgr.claims`); their table goes into report.md and
            claims.md / claims.json. A `prune` entry may carry `policies: [...]` to be applied to those
            calibrations only.
        claims_resamples: bootstrap resamples of the claims' intervals.
        reconstruction_problems: held-out problems whose dense greedy rollouts measure the reconstruction errors
            of the models a `reconstruction` claim names.
        evaluate: evaluate the dense model and every pruned one (false: prune only).
        save_models: keep the pruned weights on disk (else only their pruning_config.json).
        seed: seed of calibration sampling and evaluation.
    """

    model: str
    output_dir: str
    source: str = "MathR"
    source_path: str | None = None
    text_source: str = "C4"
    text_source_path: str | None = None
    policies: list[str] = field(default_factory=lambda: ["ssgr"])
    calibration: dict[str, Any] = field(default_factory=dict)
    policy_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    rollout_model: str | None = None
    prune: list[PruningConfig] = field(default_factory=lambda: [{"method": "sparsegpt", "sparsity": 0.5}])
    quantize: list[str] = field(default_factory=lambda: ["none"])
    tasks: list[str] = field(default_factory=lambda: ["ssgr_reasoning"])
    eval_data_files: dict[str, Any] = field(default_factory=dict)
    num_samples: int = 4
    max_new_tokens: int = 32768
    decode_budgets: list[int] = field(default_factory=list)
    limit: int | None = None
    backend: str = "hf"
    eval_batch_size: int = 16
    calibration_seeds: list[int] = field(default_factory=list)
    calibration_tokens: int | None = None
    claims: list[dict[str, Any]] = field(default_factory=list)
    claims_resamples: int = 10000
    reconstruction_problems: int = 32
    evaluate: bool = True
    save_models: bool = False
    torch_dtype: str = "auto"
    description: str = ""
    seed: int = 0
    calibrations: list[CalibrationSpec] = field(init=False, repr=False)
    eval_config: EvalConfig = field(init=False, repr=False)
    prune_policies: dict[str, list[str]] = field(init=False, repr=False)
    parsed_claims: list[Any] = field(init=False, repr=False)

    def __post_init__(self):
        parse_torch_dtype(self.torch_dtype, "torch_dtype")  # a misspelt dtype fails here, not after calibrating
        if not self.policies:
            raise ValueError("policies is empty: name at least one calibration policy (e.g. [ssgr]).")
        unknown = set(self.policy_overrides) - set(self.policies)
        if unknown:
            raise ValueError(f"policy_overrides names calibrations not in `policies`: {sorted(unknown)}.")
        if len(set(self.policies)) != len(self.policies):
            raise ValueError(f"policies lists a calibration twice: {self.policies}.")
        seeds = list(self.calibration_seeds or [])
        if len(set(seeds)) != len(seeds) or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
            raise ValueError(f"calibration_seeds must be distinct integers, got {seeds}.")
        if self.calibration_tokens is not None and (
            isinstance(self.calibration_tokens, bool) or not isinstance(self.calibration_tokens, int)
            or self.calibration_tokens < 1
        ):  # fmt: skip
            raise ValueError(f"calibration_tokens must be a positive integer, got {self.calibration_tokens!r}.")
        self.calibrations = [
            spec for name in self.policies for spec in self._seeded(self._calibration(name), seeds)
        ]
        if not self.prune:
            raise ValueError("prune is empty: give at least one pruning configuration.")
        self.prune_policies: dict[str, list[str]] = {}  # variant -> the calibrations it is applied to (all if absent)
        prune = []
        for p in self.prune:
            if not isinstance(p, PruningConfig):
                p = dict(p)
                only = p.pop("policies", None)
                p = PruningConfig(**{"seed": self.seed, **p})
                if only is not None:
                    only = [str(x) for x in (only if isinstance(only, (list, tuple)) else [only])]
                    stray = sorted(set(only) - set(self.policies))
                    if stray:
                        raise ValueError(f"prune {p.short_name}: policies {stray} are not in `policies`.")
                    self.prune_policies[p.short_name] = only
            prune.append(p)
        self.prune = prune
        names = [p.short_name for p in self.prune]
        if len(set(names)) != len(names):
            raise ValueError(f"Two pruning configurations have the same name ({names}); they must differ.")
        self.parsed_claims = parse_claims(self.claims)
        if self.parsed_claims and not self.evaluate:
            raise ValueError("claims need evaluate: true.")
        self.quantize = [str(q).lower() if q is not None else "none" for q in (self.quantize or ["none"])]
        if len(set(self.quantize)) != len(self.quantize):
            raise ValueError(f"quantize lists a scheme twice: {self.quantize}.")
        from .hub.quantize import QUANTIZATION_SCHEMES

        unknown_schemes = [q for q in self.quantize if q != "none" and q not in QUANTIZATION_SCHEMES]
        if unknown_schemes:
            raise ValueError(
                f"quantize: unsupported scheme(s) {unknown_schemes}; use none or {sorted(QUANTIZATION_SCHEMES)}."
            )
        self.eval_config = EvalConfig(
            tasks=self.tasks if self.evaluate else EvalConfig().tasks,
            num_samples=self.num_samples,
            max_new_tokens=self.max_new_tokens,
            backend=self.backend,
            limit=self.limit,
            batch_size=self.eval_batch_size,
            seed=self.seed,
            data_files=self.eval_data_files,
        )
        self.decode_budgets = self._decode_budgets()

    def _seeded(self, spec: CalibrationSpec, seeds: list[int]) -> list[CalibrationSpec]:
        """`spec` once per calibration seed (`<label>.seed<k>`), or as it is without seeds; with the token cap."""
        if self.calibration_tokens is not None:
            spec.config.max_tokens = self.calibration_tokens
        if not seeds:
            return [spec]
        return [CalibrationSpec(seed_label(spec.name, s), spec.source, spec.source_path,
                                dataclasses.replace(spec.config, seed=s)) for s in seeds]  # fmt: skip

    def applies(self, calibration: str, prune: PruningConfig) -> bool:
        """Whether the pruning configuration is applied to the calibration (label, with or without its seed)."""
        only = self.prune_policies.get(prune.short_name)
        return only is None or base_label(calibration) in only

    def _decode_budgets(self) -> list[int]:
        """The checked `decode_budgets`: positive integers, each once, none equal to `max_new_tokens`, and an
        accuracy task to run them on."""
        budgets = list(self.decode_budgets or [])
        if not budgets:
            return []
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in budgets):
            raise ValueError(f"decode_budgets must be positive integers (max_new_tokens values), got {budgets}.")
        if len(set(budgets)) != len(budgets) or self.max_new_tokens in budgets:
            raise ValueError(
                f"decode_budgets {budgets} repeats a budget or max_new_tokens ({self.max_new_tokens}), which every "
                "model is evaluated at anyway: list each other budget once."
            )
        if not self.evaluate or not self.accuracy_tasks:
            raise ValueError("decode_budgets needs evaluate: true and an accuracy task (not only perplexity) in tasks.")
        return budgets

    @property
    def accuracy_tasks(self) -> list[str]:
        """The evaluation's accuracy tasks (its perplexity tasks left out): what the decode budgets run."""
        from .evaluation.registry import PERPLEXITY_TASKS, resolve_tasks

        return [t for t in resolve_tasks(self.eval_config.tasks) if t not in PERPLEXITY_TASKS]

    def _calibration(self, name: str) -> CalibrationSpec:
        """The calibration named `name` in `policies`: a policy (`ssgr`), a policy on another source
        (`text@Wikipedia`), or any label whose `policy_overrides` entry sets `policy` (and optionally `source`,
        `source_path`) plus config fields."""
        overrides = dict(self.policy_overrides.get(name, {}))
        base, _, at_source = name.partition("@")
        policy_name = overrides.pop("policy", base)
        policy = get_policy(policy_name)  # an unknown policy lists the known ones
        text = policy.source_kind == "text"
        source = overrides.pop("source", at_source or (self.text_source if text else self.source))
        default_path = self.text_source_path if text else self.source_path
        source_path = overrides.pop("source_path", None if at_source else default_path)
        fields = {
            "seed": self.seed,
            **self.calibration,
            **overrides,
            "policy": policy_name,
            "source_path": source_path,
        }
        if self.rollout_model:
            fields.setdefault("rollout_model", self.rollout_model)
        config = CalibrationConfig(**fields)
        if not source_path and get_source(source).kind != policy.source_kind:
            raise ValueError(
                f"Calibration {name!r}: policy {policy_name} needs a {policy.source_kind} source, and {source} is not one."
            )
        return CalibrationSpec(name, source, source_path, config)

    @classmethod
    def from_yaml(cls, path: str, **overrides) -> RunConfig:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a recipe is a YAML mapping of RunConfig fields.")
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown recipe keys {unknown}; valid keys are {sorted(known)}.")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The recipe's fields (its pruning configurations in full), as the YAML would hold them."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}
        out["prune"] = [
            {**p.to_dict(), **({"policies": self.prune_policies[p.short_name]}
                               if p.short_name in self.prune_policies else {})}
            for p in self.prune
        ]  # fmt: skip
        return out


# ----------------------------------------------------------------------------------------------------------------


class _Run:
    def __init__(self, cfg: RunConfig):
        from .distributed import Distributed

        self.dist = Distributed.current()
        self.cfg = cfg
        self.out = cfg.output_dir
        self.model_path = resolve_model(cfg.model)
        self.manifest_path = os.path.join(self.out, "manifest.json")
        self.manifest = json.load(open(self.manifest_path)) if os.path.exists(self.manifest_path) else {}
        self.manifest.setdefault("steps", {})
        self._model = self._tok = None
        self._last_pruned = None  # (policy, variant, model, pruner): reused by the quantized variants of one prune
        self.claims_results: str | None = None  # the claims table (markdown), once measured
        self.error_models = models_needing_errors(cfg.parsed_claims)  # whose reconstruction errors a claim reads
        self.budget_reports: dict[str, dict[int, Any]] = {}  # name -> decode budget -> EvalReport

    # -- bookkeeping ---------------------------------------------------------------------------------------------------
    def write(self, fn) -> None:
        """Process 0 runs `fn` (a write); every process waits until it is done, so all of them see the same files."""
        try:
            if self.dist.is_main:
                fn()
        finally:
            self.dist.barrier()

    def step_done(self, key: str, seconds: float, **info) -> None:
        self.manifest["steps"][key] = {"seconds": round(seconds, 2), "finished": time.strftime("%FT%T"), **info}
        self.save_manifest()

    def save_manifest(self) -> None:
        self.manifest.update({"recipe": self.cfg.to_dict(), "model_path": self.model_path, "versions": library_versions(),
                              "processes": self.dist.world_size})  # fmt: skip
        self.write(lambda: write_json_atomically(self.manifest_path, self.manifest, default=str))

    def dense(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            dtype = parse_torch_dtype(self.cfg.torch_dtype, "torch_dtype")
            self._model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
            self._model.eval()
            self._tok = AutoTokenizer.from_pretrained(self.model_path)
        return self._model, self._tok

    # -- steps ---------------------------------------------------------------------------------------------------------
    def calibration(self, spec: CalibrationSpec):
        import datasets

        from .calibration.calibrator import SSGRCalibrator

        folder = os.path.join(self.out, "calibration", spec.name)
        if os.path.exists(os.path.join(folder, "dataset_info.json")):
            return datasets.load_from_disk(folder)
        t = time.perf_counter()
        cal = copy.deepcopy(spec.config)
        if cal.rollouts_dir is None:
            who = (cal.rollout_model or "self").replace("/", "--")
            cal.rollouts_dir = os.path.join(self.out, "rollouts", f"{who}-{spec.source}-n{cal.num_generations}"
                                            f"-t{cal.max_new_tokens}-T{cal.temperature}"
                                            + (f"-s{cal.seed}" if cal.seed != self.cfg.seed else ""))  # fmt: skip
        model, tok = self.dense()
        logger.info("Calibration %s (%s) ...", spec.name, spec.source)
        calibrator = SSGRCalibrator(cal)
        ds = calibrator.build(self.model_path if cal.engine == "vllm" else model, spec.source, tokenizer=tok)
        tokens = calibrator.report.tokens
        if self.cfg.calibration_tokens is not None and tokens != self.cfg.calibration_tokens:
            raise ValueError(
                f"Calibration {spec.name} holds {tokens} tokens, not calibration_tokens={self.cfg.calibration_tokens}"
                f" (counts {calibrator.report.counts}): raise its num_samples (now {cal.num_samples}; per calibration "
                "in policy_overrides) or lower calibration_tokens. Nothing of it was saved."
            )
        self.write(lambda: write_folder_atomically(folder, ds.save_to_disk))  # every process holds the same rows
        self.step_done(f"calibration/{spec.name}", time.perf_counter() - t, rows=len(ds),
                       counts=calibrator.report.counts)  # fmt: skip
        return ds

    def eval_path(self, name: str, budget: int | None = None) -> str:
        """Where a model's report is: `eval/<name>.json`, or `eval/<name>@<budget>.json` at a decode budget."""
        return os.path.join(self.out, "eval", f"{name}.json" if budget is None else f"{name}@{budget}.json")

    def eval_done(self, name: str) -> bool:
        """Whether the model's reports, at `max_new_tokens` and at every decode budget, are on disk."""
        return all(os.path.exists(self.eval_path(name, b)) for b in [None, *self.cfg.decode_budgets])

    def evaluate(self, model, tok, name: str):
        """The model's report at `max_new_tokens` (every task), after its reports at the decode budgets (accuracy
        tasks only, kept in `budget_reports`); each is read from disk when it is there (then `model` may be None)."""
        for budget in self.cfg.decode_budgets:
            config = dataclasses.replace(self.cfg.eval_config, max_new_tokens=budget, tasks=self.cfg.accuracy_tasks)
            self.budget_reports.setdefault(name, {})[budget] = self._evaluate(model, tok, name, config, budget)
        return self._evaluate(model, tok, name, self.cfg.eval_config, None)

    def _evaluate(self, model, tok, name: str, config: EvalConfig, budget: int | None):
        from .evaluation.evaluate import EvalReport, evaluate

        path = self.eval_path(name, budget)
        if os.path.exists(path):
            return EvalReport.load(path)
        t = time.perf_counter()
        report = evaluate(model, tok, config=config, model_name=name)
        self.write(lambda: report.save(path))  # every process holds the same report
        self.step_done(f"eval/{name}" + (f"@{budget}" if budget is not None else ""), time.perf_counter() - t)
        return report

    def prune_and_evaluate(self, policy: str, calibration, prune: PruningConfig, quantization: str = "none"):
        from .hub.metadata import pruning_metadata
        from .hub.upload import save_pruned

        variant = variant_name(prune, quantization)
        name = f"{policy}__{variant}"
        folder = os.path.join(self.out, "pruned", policy, variant)
        meta_path = os.path.join(folder, PRUNING_CONFIG_NAME)
        done_eval = not self.cfg.evaluate or self.eval_done(name)
        if os.path.exists(meta_path) and done_eval and not self.needs_errors(policy, variant, quantization):
            return self.evaluate(None, None, name) if self.cfg.evaluate else None  # read from disk
        dense, tok = self.dense()
        t = time.perf_counter()
        command = f"hf-ssgr run {self.cfg.description or 'recipe'}"
        if quantization != "none":
            # the export is always written, and evaluated as a user loads it (transformers or vLLM from the folder)
            if not os.path.exists(os.path.join(folder, "config.json")):
                model, pruner = self.pruned(policy, calibration, prune)
                save_pruned(model, folder, tokenizer=tok, pruner=pruner, calibration=calibration,
                            base_model=self.cfg.model, command=command, quantization=quantization)  # fmt: skip
                self.step_done(f"prune/{name}", time.perf_counter() - t)
            return self.evaluate(folder, tok, name) if self.cfg.evaluate else None
        if self.cfg.save_models and os.path.exists(os.path.join(folder, "config.json")):
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dense.dtype)
        else:
            model, pruner = self.pruned(policy, calibration, prune)
            if self.cfg.save_models:
                save_pruned(model, folder, tokenizer=tok, pruner=pruner, calibration=calibration,
                            base_model=self.cfg.model, command=command)  # fmt: skip
            else:  # every process holds the same weights
                meta = pruning_metadata(model, prune, pruner.state.module_metrics, calibration, self.cfg.model)
                self.write(lambda: write_json_atomically(meta_path, meta, default=str))
            self.step_done(f"prune/{name}", time.perf_counter() - t)
        report = self.evaluate(model, tok, name) if self.cfg.evaluate else None
        if self.needs_errors(policy, variant):
            self.record_errors(model, name)
        del model
        return report

    # -- claims --------------------------------------------------------------------------------------------------------
    def needs_errors(self, policy: str, variant: str, quantization: str = "none") -> bool:
        """Whether a claim reads this (unquantized) model's reconstruction errors and they are not on disk yet."""
        return (
            quantization == "none"
            and f"{base_label(policy)}__{variant}" in self.error_models
            and not os.path.exists(self.errors_path(f"{policy}__{variant}"))
        )

    def errors_path(self, name: str) -> str:
        return os.path.join(self.out, "eval", f"{name}.errors.json")

    def dense_rollouts(self) -> dict:
        """The dense model's greedy rollouts of the first `reconstruction_problems` held-out problems of the first
        accuracy task (`eval/dense_rollouts.json`): the fixed sequences of the reconstruction errors."""
        path = os.path.join(self.out, "eval", "dense_rollouts.json")
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        from .calibration.engines import TransformersEngine
        from .calibration.prompts import encode_prompt
        from .evaluation.registry import load_benchmark

        task = self.cfg.accuracy_tasks[0]
        docs = load_benchmark(task, self.cfg.eval_data_files.get(task), seed=self.cfg.seed)
        docs = docs.select(range(min(self.cfg.reconstruction_problems, len(docs))))
        dense, tok = self.dense()
        engine = TransformersEngine(dense, tok, temperature=0.0, max_new_tokens=self.cfg.max_new_tokens,
                                    batch_size=16)  # fmt: skip
        prompts = [encode_prompt(tok, d["problem"]) for d in docs]
        samples = engine.generate(prompts, 1, seed=0)
        data = {
            "task": task,
            "problem_ids": [str(i) for i in range(len(docs))],
            "sequences": [p + list(s[0].response_ids) for p, s in zip(prompts, samples)],
            "prompt_lengths": [len(p) for p in prompts],
        }
        self.write(lambda: write_json_atomically(path, data))
        return data

    def record_errors(self, model, name: str) -> None:
        """Per-token last-layer hidden-state errors of `model` against the dense one on the dense rollouts."""
        from .evaluation.analysis import last_hidden_errors

        path = self.errors_path(name)
        if os.path.exists(path):
            return
        rollouts = self.dense_rollouts()
        dense, _ = self.dense()
        errors = [last_hidden_errors(dense, model, seq).tolist() for seq in rollouts["sequences"]]
        data = {**{k: rollouts[k] for k in ("task", "problem_ids", "prompt_lengths")}, "errors": errors}
        self.write(lambda: write_json_atomically(path, data))

    def measure_claims(self, dense_report, reports: dict[str, Any]):
        from .claims import claims_markdown, evaluate_claims, load_errors

        cfg = self.cfg
        task = cfg.accuracy_tasks[0]
        errors = load_errors(os.path.join(self.out, "eval"), reports)  # the models that have them
        results = evaluate_claims(cfg.parsed_claims, {"dense": dense_report, **reports}, cfg.calibration_seeds, task,
                                  errors=errors, resamples=cfg.claims_resamples, seed=cfg.seed)  # fmt: skip
        text = claims_markdown(results, task, cfg.calibration_seeds, cfg.claims_resamples)
        if any(r.links for r in results):
            from .claims import plot_claims

            self.write(lambda: plot_claims(results, os.path.join(self.out, "claims.png")))
            text += "\n![every comparison with its 95% interval](claims.png)\n"
        self.write(lambda: write_text_atomically(os.path.join(self.out, "claims.md"), f"# Claims\n\n{text}"))
        self.write(lambda: write_json_atomically(os.path.join(self.out, "claims.json"),
                                                 [r.to_dict() for r in results]))  # fmt: skip
        return text

    def pruned(self, policy: str, calibration, prune: PruningConfig):
        """The dense model pruned with `prune` on `calibration`, and its pruner; pruned once for all the quantization
        schemes of the recipe (the last one is kept)."""
        from .pruning.pruner import OneShotPruner

        last = self._last_pruned
        if last is not None and last[:2] == (policy, prune.short_name):
            return last[2], last[3]
        self._last_pruned = None
        model = copy.deepcopy(self.dense()[0])
        pruner = OneShotPruner(prune)
        pruner.prune(model, calibration)
        if len(self.cfg.quantize) > 1:
            self._last_pruned = (policy, prune.short_name, model, pruner)
        return model, pruner

    # -- report --------------------------------------------------------------------------------------------------------
    def write_report(self, dense_report, reports: dict[str, Any]) -> str:
        path = os.path.join(self.out, "report.md")
        if self.cfg.calibration_seeds:  # one row (and one bar) per calibration, its seeds averaged
            reports = merge_seed_reports(reports)
        self.write(lambda: self._write_report(dense_report, reports, path))
        return path

    def _write_report(self, dense_report, reports: dict[str, Any], path: str) -> None:
        from .evaluation.plots import plot_accuracy, plot_length_distributions, plot_per_level

        lines = [f"# {self.cfg.description or 'hf-ssgr run'}", ""]
        lines.append(f"Model `{self.cfg.model}`; calibration source `{self.cfg.source}` (text: `{self.cfg.text_source}`);"
                     f" {self.cfg.num_samples} samples per problem, up to {self.cfg.max_new_tokens} new tokens.")  # fmt: skip
        if self.cfg.decode_budgets:
            lines[-1] += f" Also at {', '.join(map(str, self.cfg.decode_budgets))} new tokens (decode budgets, below)."
        lines.append("")
        if dense_report is not None:
            tasks = list(dense_report.tasks)
            head = ["model", "calibration", "pruning"]
            for t in tasks:
                title = dense_report.tasks[t].title
                head += [f"{title} pass@1 (SE)", f"{title} mean len"]
            head += ["avg pass@1 (SE)", "recovery"]
            ppl = list(dense_report.perplexity)  # lower is better: shown beside pass@1, never averaged with it
            head += [f"{dense_report.perplexity[t].title} ppl ↓" for t in ppl]
            rows = [["dense", "–", "–"] + [x for t in tasks for x in _cells(dense_report.tasks[t])]
                    + [_average(dense_report), "100%"] + _ppl_cells(dense_report, ppl)]  # fmt: skip
            for name, rep in reports.items():
                policy, variant = name.split("__")
                rec = rep.recovery(dense_report)["average"] if tasks else float("nan")
                rows.append([name, policy, variant] + [x for t in tasks for x in _cells(rep.tasks[t])]
                            + [_average(rep), f"{rec:.1f}%"] + _ppl_cells(rep, ppl))  # fmt: skip
            lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            lines += ["", "pass@1 in percent, its standard error across problems in parentheses.", ""]
            lines += [f"{dense_report.perplexity[t].title} perplexity (lower is better; not in the average or the "
                      f"recovery): {dense_report.perplexity[t].protocol}." for t in ppl] + ([""] if ppl else [])  # fmt: skip
            lines += _comparisons(dense_report, reports)
            lines += _budget_lines(self.cfg.max_new_tokens, {"dense": dense_report, **reports}, self.budget_reports)
            per_level = {n: r.tasks[t].per_level() for n, r in [("dense", dense_report), *reports.items()]
                         for t in tasks if r.tasks[t].per_level()}  # fmt: skip
            if per_level:
                levels = sorted({lv for v in per_level.values() for lv in v}, key=lambda x: (len(x), x))
                lines += ["pass@1 by difficulty level:", "",
                          "| model | " + " | ".join(f"L{lv}" for lv in levels) + " |",
                          "|---|" + "|".join("---" for _ in levels) + "|"]  # fmt: skip
                for n, v in per_level.items():
                    lines.append(
                        f"| {n} | " + " | ".join(f"{100 * v.get(lv, float('nan')):.1f}" for lv in levels) + " |"
                    )
                lines.append("")
            everything = {"dense": dense_report, **reports}
            labels = {"dense": ("dense", None), **{n: tuple(n.split("__", 1)) for n in reports}}
            if tasks:
                plot_accuracy(everything, os.path.join(self.out, "accuracy.png"), labels=labels)
                lines += ["![pass@1 by pruning configuration and calibration](accuracy.png)", ""]
            if any(r.lengths for rep in everything.values() for r in rep.tasks.values()):
                plot_length_distributions(everything, os.path.join(self.out, "lengths.png"), labels=labels)
                lines += ["![response lengths](lengths.png)", ""]
            if per_level:
                plot_per_level(everything, os.path.join(self.out, "levels.png"), labels=labels)
                lines += ["![pass@1 by difficulty level](levels.png)", ""]
        if self.claims_results:
            lines += ["## Claims", "", self.claims_results]
        steps = self.manifest.get("steps", {})
        lines += ["Step times (s): " + ", ".join(f"{k} {v['seconds']:.1f}" for k, v in steps.items()), ""]
        write_text_atomically(path, "\n".join(lines))


def merge_seed_reports(reports: dict[str, Any]) -> dict[str, Any]:
    """`<calibration>.seed<k>__<variant>` reports merged into one `<calibration>__<variant>` report per calibration:
    each problem's pass@1 averaged over the seeds (so pass@1 and its standard error over problems are those of the
    seed average), the replies' lengths pooled, generation times summed; perplexity is left out. Other reports pass
    through."""
    from .evaluation.report import EvalReport, TaskResult

    groups: dict[str, list[Any]] = {}
    for name, rep in reports.items():
        cal, _, variant = name.partition("__")
        groups.setdefault(f"{base_label(cal)}__{variant}", []).append(rep)
    out = {}
    for name, reps in groups.items():
        if len(reps) == 1:
            out[name] = reps[0]
            continue
        tasks = {}
        for task in reps[0].tasks:
            results = [r.tasks[task] for r in reps if task in r.tasks]
            first = results[0]
            by_problem: dict[str, list[float]] = {}
            for r in results:
                for pid, v in zip(r.problem_ids, r.pass_at_1_per_problem):
                    by_problem.setdefault(pid, []).append(v)
            ids = [pid for pid in first.problem_ids if len(by_problem.get(pid, [])) == len(results)]
            kept = set(ids)
            lengths = [n for r in results for n in r.lengths]
            tasks[task] = TaskResult(
                task=task, title=first.title, num_problems=first.num_problems, num_samples=first.num_samples,
                pass_at_1=statistics.fmean(r.pass_at_1 for r in results),
                pass_at_k=statistics.fmean(r.pass_at_k for r in results),
                mean_length=statistics.fmean(lengths) if lengths else statistics.fmean(r.mean_length for r in results),
                median_length=statistics.median(lengths) if lengths else first.median_length,
                truncated=statistics.fmean(r.truncated for r in results),
                gen_seconds=math.fsum(r.gen_seconds for r in results), lengths=lengths,
                pass_at_1_per_problem=[statistics.fmean(by_problem[pid]) for pid in ids],
                problem_levels=[lv for pid, lv in zip(first.problem_ids, first.problem_levels) if pid in kept]
                if first.problem_levels else [],
                problem_ids=ids,
            )  # fmt: skip
        # perplexity is not merged (n/a in the merged row): each seed's is in its eval/<name>.json
        out[name] = EvalReport(model=name, tasks=tasks, settings={**reps[0].settings, "seeds_merged": len(reps)})
    return out


def variant_name(prune: PruningConfig, quantization: str = "none") -> str:
    """The folder and report name of a pruned model: `PruningConfig.short_name`, plus `+fp8` when quantized."""
    return prune.short_name if quantization in (None, "none") else f"{prune.short_name}+{quantization}"


def _cells(r) -> list[str]:
    return [r.pass_at_1_with_se, f"{r.mean_length:.0f}"]


def _ppl_cells(report, tasks: list[str]) -> list[str]:
    return [f"{report.perplexity[t].perplexity:.3f}" if t in report.perplexity else "n/a" for t in tasks]


def _average(report) -> str:
    from .evaluation.stats import format_accuracy

    return format_accuracy(report.average_pass_at_1, report.average_pass_at_1_se)


def _budget_lines(max_new_tokens: int, reports: dict[str, Any], budgets: dict[str, dict[int, Any]]) -> list[str]:
    """The decode-budget table (RAC Table 8): a row per model and generation limit (`max_new_tokens` first, then the
    decode budgets, longest first) with each accuracy task's pass@1 (SE), their average, the share of truncated
    replies, and the generation wall time in minutes, summed over the processes (and the slowest process's)."""
    if not budgets:
        return []
    from .evaluation.stats import format_accuracy

    first = next(iter(budgets.values()))
    tasks = list(next(iter(first.values())).tasks)
    titles = [next(iter(first.values())).tasks[t].title for t in tasks]
    head = ["model", "max new tokens", *[f"{t} pass@1 (SE)" for t in titles], "avg pass@1 (SE)", "truncated",
            "gen min (Σ processes)", "gen min (elapsed)"]  # fmt: skip
    lines = [
        "Decode budgets: every model evaluated at each generation limit on the accuracy tasks; generation wall time "
        "in minutes, summed over the processes and the slowest process's (elapsed).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for name, full in reports.items():
        at = {max_new_tokens: full, **budgets.get(name, {})}
        for budget in sorted(at, reverse=True):
            rep = at[budget]
            results = [rep.tasks[t] for t in tasks if t in rep.tasks]
            avg = format_accuracy(rep.average_pass_at_1, rep.average_pass_at_1_se)
            truncated = statistics.fmean(r.truncated for r in results)
            total = math.fsum(r.gen_seconds for r in results) / 60
            elapsed = math.fsum(r.gen_wall_seconds for r in results) / 60
            cells = [name, str(budget), *[rep.tasks[t].pass_at_1_with_se if t in rep.tasks else "n/a" for t in tasks],
                     avg, f"{100 * truncated:.1f}%", _minutes(total), _minutes(elapsed)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _minutes(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _comparisons(dense_report, reports: dict[str, Any], resamples: int = 10000, seed: int = 0) -> list[str]:
    """The report's paired comparisons: every calibration against the `text` calibration of the same pruning and
    against the dense model, on average pass@1, with a 95% paired-bootstrap interval over problems. Nothing when a
    report holds no per-problem results (saved by an older version)."""
    pairs = []
    for name, rep in reports.items():
        policy, variant = name.split("__")
        text = reports.get(f"text__{variant}")
        if policy != "text" and text is not None:
            pairs.append((name, rep, f"text__{variant}", text))
        pairs.append((name, rep, "dense", dense_report))
    if not pairs:
        return []
    if not all(r.has_per_problem_results and o.has_per_problem_results for _, r, _, o in pairs):
        return ["No paired comparisons: a report holds no per-problem results (evaluate it again to compare).", ""]
    lines = [
        f"Paired comparisons of average pass@1 on the problems both models share: the difference in points, its 95%"
        f" interval from a paired bootstrap over problems ({resamples} resamples, seed {seed}), and the verdict.",
        "",
        "| model | against | difference | 95% interval | problems | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for name, rep, other_name, other in pairs:
        c = rep.compare(other, resamples=resamples, seed=seed)["average"]
        lines.append(f"| {name} | {other_name} | {100 * c.difference:+.1f} | [{100 * c.low:+.1f}, {100 * c.high:+.1f}]"
                     f" | {c.n_problems} | {c.verdict} |")  # fmt: skip
    return lines + [""]


def run_recipe(cfg: RunConfig | str, **overrides) -> dict[str, Any]:
    """Run (or resume) a recipe; returns `{"report": path, "dense": EvalReport, "pruned": {name: EvalReport},
    "budgets": {name: {decode budget: EvalReport}}}`.

    Under `torchrun` / `accelerate launch` every process runs it and returns the same result (see the module's
    docstring)."""
    from tqdm.auto import tqdm

    if isinstance(cfg, str):
        cfg = RunConfig.from_yaml(cfg, **overrides)
    check_output(os.path.join(cfg.output_dir, "manifest.json"), "output_dir", "file")  # refuses a file as output_dir too
    os.makedirs(cfg.output_dir, exist_ok=True)
    run = _Run(cfg)
    run.save_manifest()
    t0 = time.perf_counter()
    dense_report = None
    if cfg.evaluate:
        model, tok = run.dense() if not run.eval_done("dense") else (None, None)  # None: read from disk
        dense_report = run.evaluate(model, tok, "dense")
    reports = {}
    jobs = [(s.name, c, q) for s in cfg.calibrations for c in cfg.prune for q in cfg.quantize
            if cfg.applies(s.name, c)]  # fmt: skip
    bar = tqdm(total=len(jobs), desc="calibrate → prune → evaluate", unit="model", disable=not run.dist.is_main)
    for spec in cfg.calibrations:
        calibration = None
        for prune, quantization in [(c, q) for c in cfg.prune for q in cfg.quantize if cfg.applies(spec.name, c)]:
            variant = variant_name(prune, quantization)
            name = f"{spec.name}__{variant}"
            done = os.path.exists(os.path.join(cfg.output_dir, "pruned", spec.name, variant, PRUNING_CONFIG_NAME))
            finished = done and (not cfg.evaluate or run.eval_done(name))
            if not finished or run.needs_errors(spec.name, variant, quantization):
                calibration = calibration if calibration is not None else run.calibration(spec)
            rep = run.prune_and_evaluate(spec.name, calibration, prune, quantization)
            if rep is not None:
                reports[name] = rep
            bar.update(1)
        run._last_pruned = None
    bar.close()
    if cfg.parsed_claims:
        run.claims_results = run.measure_claims(dense_report, reports)
    report_path = run.write_report(dense_report, reports)
    run.manifest["total_seconds_last_run"] = round(time.perf_counter() - t0, 1)
    run.save_manifest()
    return {"report": report_path, "dense": dense_report, "pruned": reports, "budgets": run.budget_reports}
