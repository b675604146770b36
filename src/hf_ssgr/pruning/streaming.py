"""Pruning a checkpoint larger than memory, one decoder layer at a time (`OneShotPruner.prune_pretrained`).

The model is built on the meta device (its parameters; buffers such as rotary frequencies are real), and its weights
are read from the safetensors shards only when a step needs them, through transformers' own loader
(`convert_and_load_state_dict_in_model` with the model's weight conversions, so per-expert checkpoint tensors are fused
into the 3-D experts parameters exactly as `from_pretrained` fuses them):

1. the embeddings (and the other weights outside the decoder layers, `lm_head` only when it is pruned), kept for the
   whole run: the capture of the first layer's inputs needs them;
2. then each decoder layer: loaded, pruned as `prune()` prunes it, run forward on the calibration activations, written
   to its own output shard in the checkpoint's format (`revert_weight_conversion`, as `save_pretrained` writes it),
   and freed.

At the end the layers past the last pruned one and the weights outside the layers are copied (cast to the compute
dtype), and the index, config, generation config, tokenizer, `pruning_config.json` and card are written. The result
equals `prune()` on the model loaded in memory followed by `save_pruned`, tensor for tensor.

The folder is built as `.NAME.partial/` next to `save_dir` and renamed into place once complete. Its shards are the
checkpoint: each is written through a temporary file and a rename, with the layer's metrics beside it, so a killed run
resumes at the first layer without a shard (replaying the finished ones from their shards) and nothing is written
twice or half-written.

Stored FP8 checkpoints are dequantized layer by layer on load: DeepSeek-V3/R1's block FP8 (`weight_scale_inv`,
`quantization_config.quant_method="fp8"`) and compressed-tensors FP8 (`weight_scale`, format `float-quantized`). The
output is in the compute dtype, with no `quantization_config`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
from typing import Any

import torch
from torch import nn

from ..utils import disk_full, disk_full_error

logger = logging.getLogger("hf_ssgr")

__all__ = ["SourceCheckpoint", "StreamingRun", "prune_streaming", "dequantize_fp8", "partial_dir"]

STATE_DIR = ".hf_ssgr_stream"  # inside the partial folder: the run's identity and each finished layer's record
RUN_FILE = "run.json"
INDEX_NAME = "model.safetensors.index.json"
_FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))
_CT_AUX_SUFFIXES = (".weight_scale", ".input_scale", ".weight_zero_point", ".input_zero_point", ".output_scale")


def _header_bytes(path: str) -> bytes:
    """The JSON header of a safetensors file, as stored (its tensors' dtypes, shapes and offsets)."""
    with open(path, "rb") as f:
        head = f.read(8)
        return f.read(int.from_bytes(head, "little")) if len(head) == 8 else b""


def _shard_fingerprint(path: str) -> list:
    """What tells a source shard apart from a changed one: its size, modification time and the hash of its header (a
    tensor rewritten in place changes the time; another layout, the header)."""
    import hashlib

    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, hashlib.sha256(_header_bytes(path)).hexdigest()[:16]]


def partial_dir(save_dir: str) -> str:
    """The folder a streamed prune into `save_dir` builds before renaming it into place."""
    save_dir = os.path.abspath(save_dir)
    return os.path.join(os.path.dirname(save_dir), f".{os.path.basename(save_dir)}.partial")


def dequantize_fp8(weight: torch.Tensor, scale: torch.Tensor, block: list[int] | None = None) -> torch.Tensor:
    """An FP8 weight times its scale, in float32. The scale is per tensor (one element), per output channel
    (`[out, 1]`), per group (`[out, in / g]`) or per block (`[ceil(out / b0), ceil(in / b1)]`, DeepSeek's
    `weight_scale_inv` with `block` = `weight_block_size`, 128 × 128): each scale entry covers a contiguous block of
    the weight. Without `block`, a block is the weight's size over the scale's, rounded up."""
    w = weight.to(torch.float32)
    s = scale.to(torch.float32)
    if s.numel() == 1:
        return w * s.reshape(())
    if s.ndim == 1 and w.ndim == 2 and s.shape[0] == w.shape[0]:
        s = s[:, None]
    if s.ndim != w.ndim:
        raise ValueError(f"An FP8 scale of shape {tuple(s.shape)} does not fit a weight of shape {tuple(w.shape)}.")
    for dim in range(w.ndim):
        if s.shape[dim] in (1, w.shape[dim]):
            continue  # broadcast, or one scale per entry
        size = block[dim - w.ndim] if block and len(block) >= w.ndim - dim else -(-w.shape[dim] // s.shape[dim])
        if -(-w.shape[dim] // size) != s.shape[dim]:
            raise ValueError(
                f"An FP8 scale of shape {tuple(s.shape)} does not tile a weight of shape {tuple(w.shape)}"
                + (f" in blocks of {block}." if block else ".")
            )
        s = s.repeat_interleave(size, dim=dim).narrow(dim, 0, w.shape[dim])
    return w * s


def _libc():
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.mallopt, _LIBC.malloc_trim  # noqa: B018 - AttributeError where the allocator is not glibc's
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def bound_host_heap() -> None:
    """Serve allocations of 4 MiB and more from their own mappings, given back to the system when freed (glibc's
    `M_MMAP_THRESHOLD`, fixed instead of adaptive, for this process). Otherwise glibc raises its threshold after the
    first freed layer, the next layers' tensors of a few MiB come from the heap, and the heap, fragmented by the
    activations allocated in between, keeps growing layer after layer. Measured on 24 layers of a 1.6 GB model: a
    peak RSS of 1.7 GB with the adaptive threshold, 0.75 GB with this. Nothing where glibc is not the allocator."""
    libc = _libc()
    if libc:
        libc.mallopt(-3, 1 << 22)  # M_MMAP_THRESHOLD


def release_host_memory() -> None:
    """Give the free pages at the heap's top and inside it back to the system (`malloc_trim`)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)


_LIBC = None


def _stored_quantization(config) -> str | None:
    """`"fp8_block"` (DeepSeek), `"compressed_tensors_fp8"`, or None; any other stored quantization is refused."""
    q = getattr(config, "quantization_config", None)
    if q is None:
        return None
    q = q if isinstance(q, dict) else q.to_dict()
    method = q.get("quant_method")
    if method == "fp8":
        if q.get("fmt", "e4m3") != "e4m3":
            raise ValueError(f"Stored FP8 format {q.get('fmt')!r} is not supported: only e4m3 weights are read.")
        return "fp8_block"
    if method == "compressed-tensors":
        fmt = q.get("format")
        groups = q.get("config_groups") or {}
        float8 = all(
            (g.get("weights") or {}).get("type") == "float" and (g.get("weights") or {}).get("num_bits") == 8
            for g in groups.values()
        )
        if fmt not in ("float-quantized", "naive-quantized") or not groups or not float8:
            raise ValueError(
                f"This checkpoint is stored as compressed-tensors {fmt!r} with weight groups "
                f"{[(g.get('weights') or {}).get('type') for g in groups.values()]}: only FP8 weights "
                "(format 'float-quantized', 8-bit float) can be dequantized for pruning. Start from the unquantized "
                "model."
            )
        return "compressed_tensors_fp8"
    raise ValueError(
        f"This checkpoint is stored quantized ({method!r}): pruning reads unquantized weights, DeepSeek's block FP8 "
        "or compressed-tensors FP8 only. Start from the unquantized model."
    )


def _read_weight_map(folder: str) -> dict[str, str]:
    """Checkpoint key -> shard file name, from the index or the single `model.safetensors`."""
    index = os.path.join(folder, INDEX_NAME)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            return dict(json.load(f)["weight_map"])
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        from safetensors import safe_open

        with safe_open(single, framework="pt") as f:
            return dict.fromkeys(f.keys(), "model.safetensors")
    raise FileNotFoundError(
        f"{folder} has no safetensors weights ({INDEX_NAME} or model.safetensors): streamed pruning reads safetensors "
        "shards. Load the model and save it with save_pretrained(safe_serialization=True) first."
    )


def _resolve_dtype(dtype, config) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32"
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype={dtype!r} is not a torch dtype: use 'auto', 'bfloat16', 'float16' or 'float32'.")
    return resolved


class SourceCheckpoint:
    """A local checkpoint folder, read tensor by tensor into a model skeleton built on the meta device.

    Args:
        path (`str`): the folder (`config.json` and safetensors shards).
        dtype: the compute dtype, `"auto"` for the config's.
    """

    def __init__(self, path: str, dtype: Any = "auto"):
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM
        from transformers.conversion_mapping import get_model_conversion_mapping

        self.path = path
        self.stored_config = AutoConfig.from_pretrained(path)
        self.quantization = _stored_quantization(self.stored_config)
        q = getattr(self.stored_config, "quantization_config", None) or {}
        q = q if isinstance(q, dict) else q.to_dict()
        self.block = q.get("weight_block_size") if self.quantization == "fp8_block" else None
        config = copy.deepcopy(self.stored_config)
        if self.quantization is not None and hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        self.dtype = _resolve_dtype(dtype, config)
        self.weight_map = _read_weight_map(path)
        with init_empty_weights(include_buffers=False):
            model = AutoModelForCausalLM.from_config(config, dtype=self.dtype)
        model.config._name_or_path = path
        model.tie_weights()  # as from_pretrained does (a skeleton built under init_empty_weights is not tied yet)
        model.eval()
        self.model = model
        self.conversions = get_model_conversion_mapping(model)
        self.dtype_plan = model._get_dtype_plan(self.dtype)
        self._used: dict[int, Any] = {}  # the conversions a load matched, by identity, in mapping order

    # ------------------------------------------------------------------------------------------------------------

    def is_auxiliary(self, key: str) -> bool:
        """A stored quantization's scale or zero point: read with its weight, never loaded on its own."""
        if self.quantization == "fp8_block":
            return key.endswith(".weight_scale_inv") or key.endswith(".activation_scale")
        if self.quantization == "compressed_tensors_fp8":
            return key.endswith(_CT_AUX_SUFFIXES)
        return False

    def scale_key(self, key: str) -> str | None:
        if self.quantization == "fp8_block":
            return key + "_scale_inv"
        if self.quantization == "compressed_tensors_fp8" and key.endswith(".weight"):
            return key + "_scale"
        return None

    def group_keys(self, layers_name: str) -> tuple[dict[int, list[str]], list[str], list[str]]:
        """The checkpoint keys of each decoder layer, those outside the layers, and those the model does not have
        (dropped, as `from_pretrained` drops them: e.g. DeepSeek-V3's multi-token-prediction layer)."""
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

        renamings = [c for c in self.conversions if isinstance(c, WeightRenaming)]
        converters = [c for c in self.conversions if isinstance(c, WeightConverter)]
        meta_sd = self.model.state_dict()
        layer_re = re.compile(rf"^{re.escape(layers_name)}\.(\d+)\.")
        layers: dict[int, list[str]] = {}
        others: list[str] = []
        unexpected: list[str] = []
        for key in self.weight_map:
            if self.is_auxiliary(key):
                continue
            renamed, _ = rename_source_key(key, renamings, converters, self.model.base_model_prefix, meta_sd)
            if renamed not in meta_sd and key in meta_sd:
                renamed = key
            if renamed not in meta_sd:
                unexpected.append(key)
                continue
            m = layer_re.match(renamed)
            if m:
                layers.setdefault(int(m.group(1)), []).append(key)
            else:
                others.append(key)
        if unexpected:
            logger.warning(
                "%d tensors of %s are not part of %s and are not copied (from_pretrained drops them too): %s%s",
                len(unexpected), self.path, type(self.model).__name__, ", ".join(unexpected[:5]),
                " ..." if len(unexpected) > 5 else "",
            )  # fmt: skip
        return layers, others, unexpected

    def nbytes(self, key: str) -> int:
        """Bytes the stored tensor `key` takes in its shard (read from the shard's header)."""
        headers = self.__dict__.setdefault("_headers", {})
        name = self.weight_map[key]
        if name not in headers:
            headers[name] = json.loads(_header_bytes(os.path.join(self.path, name)))
        start, end = headers[name].get(key, {}).get("data_offsets", (0, 0))
        return int(end) - int(start)

    def load(self, keys: list[str], folder: str | None = None, weight_map: dict[str, str] | None = None) -> None:
        """Load the checkpoint tensors `keys` into the skeleton through transformers' loader (renamings and fusions
        included, cast to the compute dtype). `folder`/`weight_map` read another folder in the same format (the
        output shards, unquantized)."""
        from safetensors import safe_open
        from transformers.core_model_loading import convert_and_load_state_dict_in_model
        from transformers.modeling_utils import LoadStateDictConfig
        from transformers.utils import logging as hf_logging

        source = folder is None
        folder = self.path if source else folder
        weight_map = self.weight_map if source else weight_map
        handles: dict[str, Any] = {}

        def handle(key):
            name = weight_map[key]
            if name not in handles:
                handles[name] = safe_open(os.path.join(folder, name), framework="pt", device="cpu")
            return handles[name]

        try:
            state: dict[str, Any] = {}
            for key in keys:
                scale = self.scale_key(key) if source else None
                if scale is not None and scale in weight_map:
                    weight = dequantize_fp8(handle(key).get_tensor(key), handle(scale).get_tensor(scale), self.block)
                    # Cast at once (the loader would cast it the same way), so that a layer's weights are held in
                    # float32 one tensor at a time; kept in float32 where the model keeps some modules in float32.
                    state[key] = weight if self.dtype_plan else weight.to(self.dtype)
                    continue
                sl = handle(key).get_slice(key)
                if source and self.quantization and sl.get_dtype().startswith("F8"):
                    raise ValueError(f"{key} is stored in FP8 without its scale ({scale}) in {folder}.")
                state[key] = sl
            config = LoadStateDictConfig(dtype=self.dtype, dtype_plan=self.dtype_plan, weight_mapping=self.conversions)
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # one bar per layer load would bury the pruner's own
            try:
                info, _ = convert_and_load_state_dict_in_model(self.model, state, config)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
        finally:
            handles.clear()
        if info.mismatched_keys or info.conversion_errors:
            raise ValueError(
                f"Loading {folder} into {type(self.model).__name__} failed: shapes differ for "
                f"{sorted(info.mismatched_keys)[:5]}, conversion errors {dict(list(info.conversion_errors.items())[:3])}."
            )
        for conversion in getattr(self.model, "_weight_conversions", None) or []:
            self._used.setdefault(id(conversion), conversion)

    def revert(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Model tensors -> checkpoint tensors, through the conversions the loads used (as `save_pretrained`)."""
        from transformers.core_model_loading import revert_weight_conversion

        order = {id(c): k for k, c in enumerate(self.conversions)}
        self.model._weight_conversions = sorted(self._used.values(), key=lambda c: order.get(id(c), len(order)))
        return {k: v.contiguous() for k, v in revert_weight_conversion(self.model, state_dict).items()}


def free_parameters(module: nn.Module) -> None:
    """Put `module`'s parameters back on the meta device (their memory is freed); its buffers (rotary frequencies,
    which no checkpoint holds) stay as they are."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None and p.device.type != "meta":
                sub._parameters[name] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)


def _check_loaded(module: nn.Module, prefix: str) -> None:
    missing = [prefix + n for n, p in module.named_parameters() if p.device.type == "meta"]
    if missing:
        raise ValueError(
            f"The checkpoint has no tensor for {len(missing)} parameters ({', '.join(missing[:4])}): it does not "
            "match its config. Check the folder."
        )


def _zeros(params) -> tuple[int, int]:
    zeros = total = 0
    for p in params:
        zeros += int((p.detach() == 0).sum())
        total += p.numel()
    return zeros, total


class StreamingRun:
    """The loading and writing side of one streamed prune: what `OneShotPruner` calls around each layer.

    Output shards: `model-{i+1:05d}-of-{N:05d}.safetensors` holds decoder layer `i` (and a pruned `lm_head` with the
    last layer run); the last one, the weights outside the layers. Beside them, in `.hf_ssgr_stream/`, the run's
    identity and each finished layer's metrics, log and measured zeros.
    """

    def __init__(self, pruner, source: SourceCheckpoint, layers: nn.ModuleList, layers_name: str, save_dir: str,
                 device: torch.device, prune_head: bool, num_run: int):  # fmt: skip
        self.pruner = pruner
        self.source = source
        self.layers = layers
        self.layers_name = layers_name
        self.save_dir = os.path.abspath(save_dir)
        self.partial = partial_dir(save_dir)
        self.state_dir = os.path.join(self.partial, STATE_DIR)
        self.device = device
        self.prune_head = prune_head
        self.num_run = num_run
        self.layer_keys, self.other_keys, _ = source.group_keys(layers_name)
        self.num_shards = len(layers) + 1
        self.records: dict[int, dict] = {}  # layer index -> what its shard's record holds
        self.out_map: dict[str, str] = {}  # checkpoint key -> output shard
        self._log_mark = 0
        self.is_main = pruner._dist.is_main

    def shard_name(self, index: int) -> str:
        return f"model-{index + 1:05d}-of-{self.num_shards:05d}.safetensors"

    def head_names(self) -> tuple[str, list[str]]:
        """lm_head's module name and its checkpoint keys."""
        model = self.source.model
        head = model.get_output_embeddings()
        name = next(n for n, m in model.named_modules() if m is head)
        return name, [k for k in self.other_keys if k.startswith(name + ".")]

    # ------------------------------------------------------------------------------------------------------------
    # Start and resume

    def identity(self, fingerprint: str | None) -> dict[str, Any]:
        import hashlib

        config = self.source.stored_config.to_json_string(use_diff=False)
        return {
            "source": hashlib.sha256(config.encode()).hexdigest()[:16],
            "shards": {name: _shard_fingerprint(os.path.join(self.source.path, name))
                       for name in sorted(set(self.source.weight_map.values()))},  # fmt: skip
            "dtype": str(self.source.dtype),
            "numerics": self.pruner.config.numerics_dict(),
            "calibration": fingerprint,
            "num_shards": self.num_shards,
        }

    def start(self, fingerprint: str | None, restart: bool) -> int:
        """Create or check the partial folder; returns the first layer to prune (after the finished ones)."""
        from ..utils import write_json_atomically

        dist = self.pruner._dist
        identity = json.loads(json.dumps(self.identity(fingerprint), default=str))
        run_file = os.path.join(self.state_dir, RUN_FILE)
        if self.is_main:
            if restart and os.path.exists(self.partial):
                shutil.rmtree(self.partial)
            if not os.path.isfile(run_file):
                if os.path.exists(self.partial):
                    shutil.rmtree(self.partial)  # a folder that never got its identity holds nothing finished
                os.makedirs(self.state_dir, exist_ok=True)
                write_json_atomically(run_file, identity)
        dist.barrier()
        with open(run_file, encoding="utf-8") as f:
            saved = json.load(f)
        if saved != identity:
            diff = sorted(k for k in identity if saved.get(k) != identity[k])
            changed = sorted(n for n, f in identity["shards"].items() if (saved.get("shards") or {}).get(n) != f)
            detail = f"; the source shards changed since: {', '.join(changed)}" if "shards" in diff and changed else ""
            raise ValueError(
                f"{self.partial} holds an unfinished streamed prune of another run (it differs in {diff}{detail}): "
                "delete that folder, or pass restart=True (`--restart` on the command line) to start over."
            )
        if self.is_main:
            self._remove_stale_shards()
        for i in range(self.num_shards - 1):
            record = os.path.join(self.state_dir, f"layer-{i:05d}.json")
            if os.path.isfile(os.path.join(self.partial, self.shard_name(i))) and os.path.isfile(record):
                with open(record, encoding="utf-8") as f:
                    self.records[i] = json.load(f)
        start = 0
        while start < self.num_run and start in self.records:
            start += 1
        state = self.pruner.state
        for i in sorted(self.records):
            if i < start:
                rec = self.records[i]
                state.module_metrics.update(rec["modules"])
                state.log_history.extend(rec["logs"])
        for rec in self.records.values():
            self.out_map.update(dict.fromkeys(rec["keys"], self.shard_name(rec["layer"])))
        self._log_mark = len(state.log_history)
        if start:
            state.layer_index = start - 1
            logger.info("Resuming the streamed prune in %s: layers 0..%d are written.", self.partial, start - 1)
        return start

    def _remove_stale_shards(self) -> None:
        """Remove the half-written shards (`NAME.PID.tmp`) of runs killed while writing one, when a run starts: this
        run removes its own when a write fails, so a finished folder holds only the model's files."""
        for name in sorted(os.listdir(self.partial)) if os.path.isdir(self.partial) else []:
            m = re.fullmatch(r".+\.(\d+)\.tmp", name)
            if m and int(m.group(1)) != os.getpid():
                os.remove(os.path.join(self.partial, name))
                logger.info("Removed %s, a shard half-written by an interrupted run.", os.path.join(self.partial, name))

    def _save_shard(self, tensors: dict, path: str) -> None:
        """Write one output shard through a temporary file; a full disk is said as such (the finished layers are
        kept, and the run resumes once there is room)."""
        from safetensors.torch import save_file

        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            save_file(tensors, tmp, metadata={"format": "pt"})
            os.replace(tmp, path)
        except BaseException as err:
            if os.path.exists(tmp):
                os.remove(tmp)
            if disk_full(err):
                done = sum(1 for i in self.records if i < self.num_run)
                raise disk_full_error(path, self._bytes_left(), f"Free some space and run the same command again: "
                                      f"the {done} layers written so far are kept in {self.partial} and the run "
                                      "resumes after them.") from None  # fmt: skip
            raise

    def _bytes_left(self) -> float:
        """About how much the shards not yet written take: the source's tensors of the layers without a record, and
        the weights outside the layers (as stored, a bound for the pruned copies)."""
        total = 0
        for i, keys in self.layer_keys.items():
            if i not in self.records:
                total += sum(self.source.nbytes(k) for k in keys)
        return total + sum(self.source.nbytes(k) for k in self.other_keys)

    def load_resident(self) -> None:
        """The weights outside the decoder layers that the run needs: all but an unpruned, untied `lm_head`."""
        _, head_keys = self.head_names()
        tied = self.source.model.get_output_embeddings().weight is self.source.model.get_input_embeddings().weight
        skip = set() if (self.prune_head or tied) else set(head_keys)
        keys = [k for k in self.other_keys if k not in skip]
        if keys:
            self.source.load(keys)
        if tied:
            self.source.model.tie_weights()  # the loaded embeddings are lm_head's too, as after from_pretrained

    # ------------------------------------------------------------------------------------------------------------
    # Each layer

    def load_layer(self, i: int, finished: bool) -> None:
        prefix = f"{self.layers_name}.{i}."
        if finished:  # its pruned weights, from the output shard
            rec = self.records[i]
            self.source.load(rec["keys"], self.partial, dict.fromkeys(rec["keys"], self.shard_name(i)))
        else:
            if i not in self.layer_keys:
                raise ValueError(f"{self.source.path} has no tensor for decoder layer {i} ({prefix}*).")
            self.source.load(self.layer_keys[i])
        _check_loaded(self.layers[i], prefix)

    def release_layer(self, i: int, targets: dict | None) -> None:
        """Write layer `i` (pruned) with its record, and free its weights; `targets` None frees only."""
        layer = self.layers[i]
        if targets is not None:
            self._write_layer(i, layer, targets)
        free_parameters(layer)
        release_host_memory()

    def _write_layer(self, i: int, layer: nn.Module, targets: dict) -> None:
        from ..hub.metadata import layer_sparsity_entry

        state = self.pruner.state
        prefix = f"{self.layers_name}.{i}."
        modules = {n: m for n, m in state.module_metrics.items() if n.startswith(prefix)}
        tensors = {prefix + k: v.detach().to("cpu") for k, v in layer.state_dict().items()}
        head_zeros = None
        if self.prune_head and i == self.num_run - 1:
            name, _ = self.head_names()
            head = self.source.model.get_output_embeddings()
            tensors[f"{name}.weight"] = head.weight.detach().to("cpu")
            modules.update({n: m for n, m in state.module_metrics.items() if n == name})
            head_zeros = _zeros([head.weight])
        tzeros = ttotal = 0
        for t in targets.values():
            z, n = _zeros([t.weight])
            tzeros, ttotal = tzeros + z, ttotal + n
        if head_zeros is not None:
            tzeros, ttotal = tzeros + head_zeros[0], ttotal + head_zeros[1]
        lz, lt = _zeros(p for _, p in layer.named_parameters())
        record = {
            "layer": i,
            "modules": modules,
            "logs": state.log_history[self._log_mark :],
            "target_zeros": [tzeros, ttotal],
            "layer_zeros": [lz, lt],
            "head_zeros": list(head_zeros) if head_zeros else None,
            "sparsity_entry": layer_sparsity_entry(layer, i, self.layers_name, state.module_metrics),
        }
        self._log_mark = len(state.log_history)
        out = self.source.revert(tensors)
        record["keys"] = sorted(out)
        if self.is_main:
            from ..utils import write_json_atomically

            write_json_atomically(os.path.join(self.state_dir, f"layer-{i:05d}.json"), record, default=str)
            self._save_shard(out, os.path.join(self.partial, self.shard_name(i)))
        self.records[i] = json.loads(json.dumps(record, default=str))
        self.out_map.update(dict.fromkeys(out, self.shard_name(i)))

    # ------------------------------------------------------------------------------------------------------------
    # The end

    def finish(self, calibration, tokenizer, base_model, command, recipe) -> str:
        """Copy what was not pruned, measure, write the index, configs, tokenizer, metadata and card, and move the
        folder into place."""
        from transformers.modeling_utils import remove_tied_weights_from_state_dict

        from ..hub.cards import model_card
        from ..hub.metadata import pruning_metadata
        from ..utils import PRUNING_CONFIG_NAME, move_folder_into_place

        pruner, state, model = self.pruner, self.pruner.state, self.source.model
        for i in range(self.num_run, len(self.layers)):  # past the last pruned layer: copied
            if i in self.records:
                continue
            self.load_layer(i, finished=False)
            self.release_layer(i, {})
        # The weights outside the layers (a pruned lm_head is in the last layer's shard).
        head_name, head_keys = self.head_names()
        head = model.get_output_embeddings()
        if not self.prune_head and head_keys and head.weight.device.type == "meta":
            self.source.load(head_keys)
        layer_re = re.compile(rf"^{re.escape(self.layers_name)}\.\d+\.")
        outside = {k: v.detach().to("cpu") for k, v in model.state_dict().items() if not layer_re.match(k)}
        if self.prune_head:
            outside.pop(f"{head_name}.weight", None)
        outside = remove_tied_weights_from_state_dict(outside, model)
        oz = _zeros(p for n, p in model.named_parameters() if not layer_re.match(n) and not (
            self.prune_head and n == f"{head_name}.weight"))  # fmt: skip
        out = self.source.revert(outside)
        last = self.shard_name(self.num_shards - 1)
        if self.is_main:
            self._save_shard(out, os.path.join(self.partial, last))
        self.out_map.update(dict.fromkeys(out, last))
        # Measured zeros, as prune() measures them on the weights.
        recs = [self.records[i] for i in range(len(self.layers))]
        tz = sum(r["target_zeros"][0] for r in recs[: self.num_run])
        tt = sum(r["target_zeros"][1] for r in recs[: self.num_run])
        lz = sum(r["layer_zeros"][0] for r in recs)
        lt = sum(r["layer_zeros"][1] for r in recs)
        head = next((r["head_zeros"] for r in recs if r.get("head_zeros")), None) or [0, 0]
        state.achieved_sparsity = {
            "targets": tz / tt if tt else 0.0,
            "decoder_layers": lz / lt if lt else 0.0,
            "model": (lz + oz[0] + head[0]) / (lt + oz[1] + head[1]),
        }
        pruner._finish()
        if not self.is_main:
            pruner._dist.barrier()  # the main process has moved the folder into place
            return self.save_dir
        measured = {
            "coverage": state.coverage,
            "achieved_sparsity": state.achieved_sparsity,
            "layers": [r["sparsity_entry"] for r in recs],
        }
        meta = pruning_metadata(model, pruner.config, state.module_metrics, calibration, base_model, measured=measured)
        self._write_index()
        self._write_configs(tokenizer)
        with open(os.path.join(self.partial, PRUNING_CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, default=str)
            f.write("\n")
        model_card(meta, None, None, command=command, recipe=recipe).save(os.path.join(self.partial, "README.md"))
        move_folder_into_place(self.partial, self.save_dir)
        shutil.rmtree(os.path.join(self.save_dir, STATE_DIR), ignore_errors=True)
        pruner._dist.barrier()
        return self.save_dir

    def _write_index(self) -> None:
        from safetensors import safe_open

        from ..utils import write_json_atomically

        total_size = total_params = 0
        for name in sorted(set(self.out_map.values())):
            with safe_open(os.path.join(self.partial, name), framework="pt") as f:
                for key in f.keys():
                    sl = f.get_slice(key)
                    n = 1
                    for d in sl.get_shape():
                        n *= d
                    total_params += n
                    total_size += n * _dtype_bytes(sl.get_dtype())
        index = {
            "metadata": {"total_parameters": total_params, "total_size": total_size},
            "weight_map": dict(sorted(self.out_map.items())),
        }
        write_json_atomically(os.path.join(self.partial, INDEX_NAME), index)

    def _write_configs(self, tokenizer) -> None:
        model = self.source.model
        model.config.save_pretrained(self.partial)
        if model.can_generate():
            from transformers import GenerationConfig

            try:
                generation = GenerationConfig.from_pretrained(self.source.path)
            except OSError:
                generation = model.generation_config
            if generation is not None:
                generation.save_pretrained(self.partial)
        if tokenizer is True:
            from ..utils import load_tokenizer

            tokenizer = load_tokenizer(self.source.path, required=False)  # a folder without one gets none, warned
        if tokenizer:
            tokenizer.save_pretrained(self.partial)


def _dtype_bytes(name: str) -> int:
    return {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}.get(
        name, 1
    )


class _NoBackup:
    """A streamed run changes no weight of its input: nothing to back up or restore."""

    def __contains__(self, name) -> bool:
        return True

    def __len__(self) -> int:
        return 0

    def close(self) -> None:
        pass


def _local_checkpoint(model_name_or_path: str) -> str:
    """A local folder, or the Hub snapshot of an id (downloaded to the cache: disk, not memory)."""
    from ..utils import resolve_model

    path = resolve_model(model_name_or_path)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise FileNotFoundError(f"Model path {path} is a file: pass the folder written by save_pretrained.")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception as err:  # noqa: BLE001 - neither a folder nor a reachable Hub id
        raise FileNotFoundError(
            f"Model path not found: {path!r} is not a local folder, and downloading it from the Hub failed "
            f"({type(err).__name__}). Pass the folder of a saved model or a reachable Hub id."
        ) from err


@torch.no_grad()
def prune_streaming(pruner, model_name_or_path: str, calibration, save_dir: str, *, dtype: Any = "auto",
                    tokenizer: Any = True, restart: bool = False, base_model: str | None = None,
                    command: str | None = None, recipe: str | None = None) -> str:  # fmt: skip
    """See `OneShotPruner.prune_pretrained`."""
    from .statistics import fp32_statistics

    if not save_dir:
        raise ValueError("prune_pretrained needs save_dir: the folder the pruned checkpoint is written to.")
    if pruner.config.sparsity_profile == "owl":
        raise ValueError(
            "sparsity_profile='owl' needs a pass of the dense model over every layer before pruning, and "
            "prune_pretrained loads each layer once: prune the model in memory with prune(), or pass an allocation "
            "as layer_sparsities (e.g. pruner.state.layer_sparsities of an OWL run on the same model and data)."
        )
    from ..utils import check_output

    check_output(save_dir, "prune_pretrained(save_dir)")
    path = _local_checkpoint(model_name_or_path)
    if os.path.abspath(path) == os.path.abspath(save_dir):
        raise ValueError(f"save_dir {save_dir} is the input checkpoint: write the pruned model to another folder.")
    bound_host_heap()
    source = SourceCheckpoint(path, dtype)
    model = source.model
    pruner._stream = None
    layers, pruned, targets, prune_head, rows, num_run = pruner._setup(model, calibration)
    cfg = pruner.config
    device = torch.device(cfg.device) if cfg.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run = StreamingRun(pruner, source, layers, pruner._layers_name, save_dir, device, prune_head, num_run)
    pruner._stream = run
    pruner._unsaved_layers = []
    pruner.control = type(pruner.control)()
    try:
        start = run.start(pruner.state.calibration_fingerprint, restart)
        run.load_resident()
        with fp32_statistics():
            pruner._prune_layers(model, layers, targets, pruned, rows, start, num_run, prune_head, _NoBackup())
        if pruner.control.should_stop and pruner.state.layer_index < num_run - 1:
            logger.warning("Stopped after layer %d; the finished layers are kept in %s to resume.",
                           pruner.state.layer_index, run.partial)  # fmt: skip
            return run.partial
        return run.finish(calibration, tokenizer, base_model or model_name_or_path, command, recipe)
    except Exception as err:  # noqa: BLE001 - re-raised; damaged weights also remove the unfinished folder
        from .pruner import NonFiniteActivationError

        if not isinstance(err, NonFiniteActivationError):
            raise
        if err.damaged_weights and run.is_main:  # no rerun gets past damaged weights: leave nothing to resume
            shutil.rmtree(run.partial, ignore_errors=True)
            err.args = (f"{err.args[0]} The unfinished folder {run.partial} was removed: it could never finish from "
                        "this checkpoint.",)  # fmt: skip
        raise
    finally:
        pruner._stream = None
