"""An lm-eval model class for reasoning evaluation that sees token ids.

`ReasoningLM` (registered with lm-eval as `hf-ssgr`) generates with the package's engines (transformers or vLLM) and
returns `hf_ssgr.evaluation.registry.Reply` strings, so the task scoring knows each reply's exact length in tokens, whether it
hit the length limit, and its share of generation time. Identical requests (lm-eval's `repeats`) are drawn as
`num_samples` samples of one prompt, in one batched call. It also scores text with transformers forward passes
(`loglikelihood`, `loglikelihood_rolling`, as lm-eval's `hf` model does), so stock loglikelihood tasks such as
lm-eval's `wikitext` run with `--model hf-ssgr` too.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import OrderedDict

import lm_eval.models  # noqa: F401 - fill lm-eval's registry first: it imports its own models only while empty
import torch
from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import _add_special_kwargs, has_bos_prefix, resolve_max_length
from tqdm.auto import tqdm

from ..calibration.engines import TransformersEngine, make_engine, replica_env
from ..calibration.prompts import THINK_OPEN
from ..distributed import Distributed
from .registry import Reply

logger = logging.getLogger("hf_ssgr")

__all__ = ["ReasoningLM"]


@register_model("hf-ssgr")
class ReasoningLM(TemplateLM):
    """Args:
    pretrained: a model (object, local folder or Hub id).
    tokenizer: its tokenizer (loaded from `pretrained` when it is a path).
    backend: `"hf"` (transformers `generate`) or `"vllm"`.
    batch_size: sequences per `generate` call (transformers backend).
    seed: base seed; each prompt's samples are seeded from it and the prompt text, so results do not depend on
        batch composition order.
    dtype / device: for loading `pretrained` from a path (transformers backend).
    vllm_kwargs: passed to `vllm.LLM` (tensor_parallel_size, max_model_len, ...).
    engine: a ready engine object (anything with `generate(prompts, num_samples, seed)`), e.g. for tests.
    """

    def __init__(
        self,
        pretrained=None,
        tokenizer=None,
        backend: str = "hf",
        batch_size: int = 16,
        seed: int = 0,
        dtype: str = "auto",
        device: str | None = None,
        vllm_kwargs: dict | None = None,
        engine=None,
    ):
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if backend not in ("hf", "vllm"):
            raise ValueError(f"backend={backend!r}: choose 'hf' (transformers) or 'vllm'.")
        self.backend, self.batch_size, self.seed = backend, int(batch_size), int(seed)
        self.vllm_kwargs = dict(vllm_kwargs or {})
        path = pretrained if isinstance(pretrained, str) else None
        if tokenizer is None or isinstance(tokenizer, str):
            source = tokenizer or path
            if source is None:
                raise ValueError("Pass tokenizer=... with a model object.")
            tokenizer = AutoTokenizer.from_pretrained(source)
        self.tokenizer = tokenizer
        self.model_path = path
        self._engine = engine
        if engine is None and backend == "hf":
            model = pretrained
            if isinstance(pretrained, str):
                model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=dtype)
                if device is not None:
                    model = model.to(device)
            self.model = model
        else:
            self.model = None if isinstance(pretrained, str) else pretrained
        name = path or getattr(getattr(self.model, "config", None), "_name_or_path", "") or "model"
        self.model_name = str(name)  # what a report calls the model by default
        # Under torchrun / accelerate launch lm-eval deals the problems across processes and gathers the scores on
        # process 0 through the methods below.
        self._dist = Distributed.current()
        self._rank, self._world_size, self._device = self._dist.rank, self._dist.world_size, self._dist.device
        # this process's generation wall time per task (seconds), gathered by evaluate() into each task's report
        self.gen_seconds_by_task: dict[str, float] = {}

    # -- processes ---------------------------------------------------------------------------------------------------
    def all_gather(self, tensor):
        parts = self._dist.all_gather_object(tensor.detach().cpu())
        return torch.cat([p.reshape(-1) for p in parts]).to(tensor.device)

    def gather_object(self, obj, dst: int = 0):
        parts = self._dist.all_gather_object(obj)
        return parts if self._rank == dst else None

    def barrier(self) -> None:
        self._dist.barrier()

    # -- chat template -----------------------------------------------------------------------------------------------
    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", "tokenizer").replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                "The tokenizer has no chat template, and the reasoning tasks are zero-shot chat prompts: set "
                "tokenizer.chat_template (an R1-style template whose generation prompt opens <think>)."
            )
        text = self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        if add_generation_prompt and not text.rstrip().endswith(THINK_OPEN):
            text = text + f"{THINK_OPEN}\n"
        return text

    # -- generation ----------------------------------------------------------------------------------------------------
    def _get_engine(self, temperature: float, top_p: float, max_new_tokens: int):
        if self._engine is None:
            if self.backend == "hf":
                if self._dist.device.type == "cuda" and next(self.model.parameters()).device.type == "cpu":
                    self.model.to(self._dist.device)  # each process generates on its own GPU
                self._engine = TransformersEngine(
                    self.model, self.tokenizer, temperature, top_p, max_new_tokens, self.batch_size, self.seed
                )
            else:
                # several processes: each runs its own replica (data parallel), on its own GPUs or cores
                self._engine = make_engine(
                    "vllm",
                    self.model,
                    self.tokenizer,
                    self.model_path,
                    temperature=temperature,
                    top_p=top_p,
                    max_new_tokens=max_new_tokens,
                    seed=self.seed,
                    vllm_kwargs=self.vllm_kwargs,
                    env=replica_env(self._dist, self.vllm_kwargs),
                )
        for attr, value in (("temperature", temperature), ("top_p", top_p), ("max_new_tokens", max_new_tokens)):
            if hasattr(self._engine, attr):
                setattr(self._engine, attr, value)
        return self._engine

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        # Group identical requests (lm-eval's repeats) per task and generation settings, keeping first-seen order.
        groups: OrderedDict[tuple, OrderedDict[str, list[int]]] = OrderedDict()
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            gk = dict(gen_kwargs or {})
            do_sample = gk.get("do_sample", True)
            temperature = float(gk.get("temperature", 0.6)) if do_sample is not False else 0.0
            settings = (
                getattr(req, "task_name", None) or "",
                temperature,
                float(gk.get("top_p", 1.0)),
                int(gk.get("max_gen_toks", 32768)),
                tuple(gk.get("until") or ()),
            )
            groups.setdefault(settings, OrderedDict()).setdefault(context, []).append(i)
        out: list[Reply | None] = [None] * len(requests)
        total = sum(len(v) for g in groups.values() for v in g.values())
        bar = tqdm(total=total, desc="Generating", disable=disable_tqdm)
        for (_task, temperature, top_p, max_new, until), contexts in groups.items():
            engine = self._get_engine(temperature, top_p, max_new)
            by_count: OrderedDict[int, list[str]] = OrderedDict()
            for ctx, idxs in contexts.items():
                by_count.setdefault(len(idxs), []).append(ctx)
            for n, ctxs in by_count.items():
                encoded = {c: self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in ctxs}
                ctxs = sorted(ctxs, key=lambda c: -len(encoded[c]))  # similar lengths share a batch: less padding
                per_call = max(1, self.batch_size // n) if self.backend == "hf" else len(ctxs)
                for start in range(0, len(ctxs), per_call):
                    chunk = ctxs[start : start + per_call]
                    prompts = [encoded[c] for c in chunk]
                    seed = self.seed + zlib.crc32(chunk[0].encode()) % (2**31)
                    t0 = time.perf_counter()
                    samples = engine.generate(prompts, n, seed)
                    seconds = time.perf_counter() - t0
                    self.gen_seconds_by_task[_task] = self.gen_seconds_by_task.get(_task, 0.0) + seconds
                    tokens = sum(len(s.response_ids) for per in samples for s in per) or 1
                    for ctx, per in zip(chunk, samples):
                        for idx, s in zip(contexts[ctx], per):
                            out[idx] = self._reply(s, until, seconds * len(s.response_ids) / tokens)
                    bar.update(len(chunk) * n)
        bar.close()
        return out  # type: ignore[return-value]

    def _reply(self, sample, until, seconds: float) -> Reply:
        ids = list(sample.response_ids)
        eos = set(getattr(self._engine, "eos_ids", None) or [self.tokenizer.eos_token_id])
        body = ids[:-1] if ids and ids[-1] in eos and sample.finish_reason != "length" else ids
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        for stop in until:  # stop strings are applied to the text, as lm-eval's own backends do
            if stop and stop in text:
                text = text.split(stop)[0]
        return Reply(text, num_tokens=len(ids), finish_reason=sample.finish_reason, seconds=seconds)

    # -- scoring (loglikelihood tasks) -----------------------------------------------------------------------------
    def scoring_model(self):
        """The transformers model that scores text: the one given, or (vLLM backend, given a path) loaded from the path
        on first use, on this process's GPU when there is one."""
        if self.model is None:
            if self.model_path is None:
                raise ValueError("Scoring text needs a transformers model: pass the model object or its path.")
            from transformers import AutoModelForCausalLM

            self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype="auto")
        if self._dist.device.type == "cuda" and next(self.model.parameters()).device.type == "cpu":
            self.model.to(self._dist.device)
        return self.model

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context and the first rolling window condition on: BOS, or EOS without one (as `hf`)."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        """The longest sequence one forward pass scores: the model's context length (lm-eval's rule)."""
        config = getattr(self.scoring_model(), "config", None)
        return resolve_max_length(config, self.tokenizer, default=2048)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """Token ids of `string` with the tokenizer's own special-token default (as `hf`), no second BOS."""
        special = _add_special_kwargs(add_special_tokens, None)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        return self.tokenizer.encode(string, **special)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """`(sum of log p(continuation | context), whether every continuation token is the greedy one)` per
        `(key, context_ids, continuation_ids)` request; a sequence longer than `max_length` + 1 loses its oldest
        context tokens. Batches of `batch_size` right-padded sequences (one each without padding when 1)."""
        import torch.nn.functional as F

        model = self.scoring_model()
        device = next(model.parameters()).device
        limit = self.max_length
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        size = max(1, override_bs or self.batch_size)
        out: list[tuple[float, bool]] = []
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in tqdm(range(0, len(requests), size), desc="Scoring", disable=disable_tqdm):
                    chunk = requests[start : start + size]
                    seqs = [(list(ctx) + list(cont))[-(limit + 1) :][:-1] for _, ctx, cont in chunk]
                    width = max(len(s) for s in seqs)
                    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
                    mask = torch.zeros_like(ids)
                    for i, s in enumerate(seqs):
                        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
                    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
                    for i, ((_, _, cont), s) in enumerate(zip(chunk, seqs)):
                        logp = F.log_softmax(logits[i, len(s) - len(cont) : len(s)].float(), dim=-1)
                        target = torch.tensor(list(cont), device=logp.device)
                        greedy = bool((logp.argmax(-1) == target).all())
                        out.append((float(logp.gather(-1, target[:, None]).sum()), greedy))
        finally:
            model.train(was_training)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole string, lm-eval's way (what its `wikitext` task asks for): the tokens, after
        `prefix_token_id`, in disjoint windows of `max_length` predicted tokens, each conditioned on one token of
        context before it; the windows' sums added up."""
        limit = self.max_length
        windows, owner = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            rolling = lm_eval_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id, max_seq_len=limit, context_len=1
            )
            for ctx, cont in map(lm_eval_utils.make_disjoint_window, rolling):
                windows.append((None, ctx, cont))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (logp, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[i] += logp
        return totals

    def close(self) -> None:
        if self._engine is not None and hasattr(self._engine, "close"):
            self._engine.close()
