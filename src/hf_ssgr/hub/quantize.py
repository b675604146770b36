"""FP8 export of a pruned model in the compressed-tensors format (the format llm-compressor writes and vLLM reads).

The one scheme is `fp8`, compressed-tensors' `FP8_DYNAMIC` preset: FP8 E4M3 weights with one scale per output channel
(the row's absolute maximum / 448), and FP8 E4M3 input activations quantized dynamically per token at run time. It is
**data-free**: the weight scales are read from the weights and the activation scales are computed on the fly, so no
calibration set is needed (a static-activation scheme would reuse the pruning's calibration set).

What is quantized: every `nn.Linear` of the decoder layers except routers (the matrices the pruner prunes). `lm_head`,
the embeddings, the norms and the routers stay in the compute dtype. Fused mixture-of-experts parameters (3-D
`gate_up_proj` / `down_proj`) cannot be expressed: compressed-tensors quantizes `nn.Linear` and `nn.Embedding`
modules only; they stay in the compute dtype, with a warning, and the export records them.

Zeros stay zeros: FP8 has an exact zero, and `0 / scale` rounds to it. A non-zero weight smaller than the smallest
FP8 subnormal times the row's scale (2^-9 * absmax / 448) underflows to zero; the export counts such weights
(`new_zeros`) instead of hiding them.

The scheme, the targets and the `quantization_config` of `config.json` come from compressed-tensors' own API
(`preset_name_to_scheme`, `QuantizationConfig`, `apply_quantization_config`, `calculate_qparams`, `ModelCompressor`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from typing import Any

import torch
from torch import nn

logger = logging.getLogger("hf_ssgr")

__all__ = ["QUANTIZATION_SCHEMES", "check_scheme", "check_not_quantized", "quantize_model", "quantize_pretrained"]

# the names a user passes -> compressed-tensors' preset
QUANTIZATION_SCHEMES = {"fp8": "FP8_DYNAMIC"}
# torch._scaled_mm and vLLM's FP8 GEMMs take matrices whose both dimensions are multiples of 16
FP8_ALIGNMENT = 16
_FP8 = torch.float8_e4m3fn


def check_scheme(scheme: str) -> str:
    """The compressed-tensors preset of `scheme`; a `ValueError` naming the supported schemes otherwise, an
    `ImportError` naming the extra to install when compressed-tensors is missing."""
    preset = QUANTIZATION_SCHEMES.get(str(scheme).lower())
    if preset is None:
        raise ValueError(
            f"Unsupported quantization scheme {scheme!r}: the supported scheme is 'fp8' (compressed-tensors "
            "FP8_DYNAMIC: FP8 E4M3 weights with per-output-channel scales, dynamic per-token FP8 activations)."
        )
    try:
        import compressed_tensors  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "Quantized export needs compressed-tensors: pip install 'hf-ssgr[quant]' (compressed-tensors>=0.17)."
        ) from err
    return preset


def _quantization_config_of(config) -> Any:
    return getattr(config, "quantization_config", None) if config is not None else None


def check_not_quantized(model: nn.Module) -> None:
    """Refuse a model that is already quantized (a `quantization_config`, a module with a quantization scheme, or a
    weight stored in FP8): quantizing it again would quantize quantized values."""
    qc = _quantization_config_of(getattr(model, "config", None))
    fp8 = next((n for n, p in model.named_parameters() if p.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)), None)
    schemed = next((n for n, m in model.named_modules() if getattr(m, "quantization_scheme", None) is not None), None)
    if qc is not None or fp8 or schemed:
        what = "its config has a quantization_config" if qc is not None else f"{fp8 or schemed} is quantized"
        raise ValueError(
            f"The model is already quantized ({what}): quantize the pruned model in its compute dtype "
            "(bf16/fp16/fp32), i.e. the folder save_pruned wrote without quantization=, not an FP8 export. Nothing "
            "was written."
        )


def quantization_plan(model: nn.Module) -> dict[str, list[str]]:
    """Which modules the FP8 scheme takes and which stay in the compute dtype, by full module name.

    `targets`: the decoder layers' `nn.Linear`s that are not routers. `ignore`: every other `nn.Linear` (lm_head,
    routers, anything outside the decoder layers), so that compressed-tensors and vLLM leave them alone.
    `experts`: fused experts modules, which the scheme cannot express (ignored through a `re:` pattern of their
    name, which also matches the per-expert names vLLM checks). Refuses, with the list, target shapes that the
    FP8 GEMMs cannot take (a dimension that is not a multiple of 16)."""
    from ..pruning.experts import is_experts_module
    from ..pruning.modeling import find_decoder_layers
    from ..pruning.targets import is_router

    layers, prefix = find_decoder_layers(model)
    targets, experts, routers = [], [], []
    for i, layer in enumerate(layers):
        for name, module in layer.named_modules():
            full = f"{prefix}.{i}.{name}"
            if is_experts_module(module):
                experts.append(full)
            elif isinstance(module, nn.Linear):
                (routers if is_router(name, module) else targets).append(full)
            elif name.rsplit(".", 1)[-1] in ("gate", "router") and any(True for _ in module.parameters(False)):
                routers.append(full)  # transformers 5.x routers are modules of their own
    chosen = set(targets)
    other = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in chosen]
    bad = [
        f"{n} {tuple(model.get_submodule(n).weight.shape)}"
        for n in targets
        if any(d % FP8_ALIGNMENT for d in model.get_submodule(n).weight.shape)
    ]
    if bad:
        raise ValueError(
            f"The fp8 scheme cannot take {len(bad)} linear layer(s) whose dimensions are not multiples of "
            f"{FP8_ALIGNMENT} (FP8 GEMMs such as torch._scaled_mm and vLLM's need both): {bad[:8]}"
            f"{' ...' if len(bad) > 8 else ''}. Export this model unquantized (no quantization=). Nothing was written."
        )
    if not targets:
        raise ValueError(
            "The model's decoder layers hold no nn.Linear for the fp8 scheme to quantize. Nothing was written."
        )
    # vLLM asks about an experts module through its unfused names (`...mlp.experts.0.gate_proj`): a prefix pattern
    ignore = list(dict.fromkeys(other + routers + [f"re:{re.escape(n)}($|\\..*)" for n in experts]))
    return {"targets": targets, "ignore": ignore, "experts": experts, "routers": routers}


def _weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def quantize_model(model: nn.Module, scheme: str = "fp8"):
    """Quantize `model` **in place** with compressed-tensors (`scheme` `fp8`: FP8_DYNAMIC) and compress its weights
    to FP8; returns `(compressor, record)`.

    `compressor` is the `compressed_tensors.ModelCompressor` whose `update_config(folder)` writes the
    `quantization_config` into a saved `config.json`; `record` is what `pruning_config.json` records under
    `quantization`. Data-free: no calibration data is used. The weights are no longer usable in the compute dtype
    afterwards (the first forward decompresses them), so pass a copy to keep the original (`save_pruned` does).
    """
    from compressed_tensors import __version__ as ct_version
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        QuantizationStatus,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from compressed_tensors.quantization.utils import calculate_qparams

    preset = check_scheme(scheme)
    check_not_quantized(model)
    plan = quantization_plan(model)
    if plan["experts"]:
        logger.warning(
            "fp8: the fused experts of %d module(s) (%s, ...) stay in the compute dtype: compressed-tensors quantizes "
            "nn.Linear modules only, not 3-D expert parameters. The export records them under quantization.kept.",
            len(plan["experts"]),
            plan["experts"][0],
        )
    bytes_before = _weight_bytes(model)
    zeros_before = {n: model.get_submodule(n).weight.detach() == 0 for n in plan["targets"]}
    config = QuantizationConfig(
        config_groups={"group_0": preset_name_to_scheme(preset, ["Linear"])},
        ignore=plan["ignore"],
        quantization_status=QuantizationStatus.INITIALIZED,
    )
    apply_quantization_config(model, config)
    quantized = [n for n, m in model.named_modules() if getattr(m, "quantization_scheme", None) is not None]
    if sorted(quantized) != sorted(plan["targets"]):
        raise RuntimeError(f"compressed-tensors matched {len(quantized)} modules, expected {len(plan['targets'])}.")
    with torch.no_grad():
        for name in plan["targets"]:
            module = model.get_submodule(name)
            w = module.weight.detach()
            scale, _ = calculate_qparams(  # symmetric: absmax / 448 per output channel
                w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True), module.quantization_scheme.weights
            )
            module.weight_scale.data.copy_(scale.to(module.weight_scale.dtype))
            module.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="float-quantized")
    # rebuilt from the modules, its ignore list names only nn.Linears: add the routers and experts, which vLLM builds
    # as linear / fused-MoE layers of its own and must leave in the compute dtype
    ignore = list(compressor.quantization_config.ignore or [])
    compressor.quantization_config.ignore = ignore + [n for n in plan["ignore"] if n not in ignore]
    compressor.compress_model(model)
    new_zeros, lost_zeros = _zero_changes(model, zeros_before)
    if lost_zeros:
        raise RuntimeError(f"FP8 export turned {lost_zeros} zero weights non-zero; please report this.")
    if new_zeros:
        logger.warning(
            "fp8: %d non-zero weights underflowed to zero (smaller than 2^-9 of their row's scale).", new_zeros
        )
    record = {
        "scheme": str(scheme).lower(),
        "preset": preset,
        "format": "compressed-tensors (float-quantized)",
        "weights": "FP8 E4M3, one scale per output channel (absmax / 448), static",
        "input_activations": "FP8 E4M3, one scale per token, dynamic (computed at run time)",
        "calibration": "none (data-free)",
        "quantized_modules": len(plan["targets"]),
        "quantized_params": sum(zeros_before[n].numel() for n in plan["targets"]),
        "kept": {
            "compute_dtype": str(next(p.dtype for p in model.parameters() if p.dtype != _FP8)).removeprefix("torch."),
            "lm_head_embeddings_norms": True,
            "routers": plan["routers"],
            "experts": plan["experts"],
        },
        "ignore": plan["ignore"],
        "new_zeros": new_zeros,
        "weight_bytes": {"before": bytes_before, "after": _weight_bytes(model)},
        "compressed_tensors": ct_version,
    }
    return compressor, record


def _zero_changes(model: nn.Module, zeros_before: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(non-zeros that became zero, zeros that became non-zero) over the quantized weights, read from the FP8 data."""
    new = lost = 0
    for name, was_zero in zeros_before.items():
        is_zero = model.get_submodule(name).weight.detach().float() == 0
        new += int((is_zero & ~was_zero).sum())
        lost += int((was_zero & ~is_zero).sum())
    return new, lost


def quantized_copy(model: nn.Module, scheme: str = "fp8"):
    """`quantize_model` on a deep copy, leaving `model` as it was: `(copy, compressor, record)`."""
    check_scheme(scheme)
    check_not_quantized(model)
    twin = copy.deepcopy(model)
    compressor, record = quantize_model(twin, scheme)
    return twin, compressor, record


def quantize_pretrained(src: str, dst: str, scheme: str = "fp8", command: str | None = None) -> str:
    """Export the pruned model saved in folder `src` (by `save_pruned` or `hf-ssgr prune`) as a quantized model in
    `dst`: FP8 weights with the `quantization_config`, the tokenizer, `pruning_config.json` with its `quantization`
    entry, and a model card. Written atomically: on any error `dst` is left as it was. Returns `dst`."""
    from transformers import AutoModelForCausalLM

    from ..pruning.config import PruningConfig
    from ..utils import PRUNING_CONFIG_NAME, check_output, load_tokenizer, write_folder_atomically
    from .cards import model_card
    from .files import write_checkpoint_files

    check_scheme(scheme)
    check_output(dst, "DST")
    meta = _read_pruning_config(src, PRUNING_CONFIG_NAME)
    with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
        if "quantization_config" in json.load(f):
            raise ValueError(
                f"{src} holds an already quantized model (its config.json has a quantization_config): pass the folder "
                "of the pruned model in its compute dtype. Nothing was written."
            )
    PruningConfig.from_dict(dict(meta.get("config") or {}))  # refuses a damaged pruning_config.json early
    model = AutoModelForCausalLM.from_pretrained(src, dtype="auto")
    tokenizer = load_tokenizer(src, required=False)  # warns, and writes none, when the folder has none
    compressor, record = quantize_model(model, scheme)
    meta = {**meta, "steps": ["pruning", "quantization"], "quantization": record}
    card = model_card(meta, command=command)

    def write(folder: str) -> None:
        write_checkpoint_files(folder, model, tokenizer, meta, card, compressor=compressor)

    size = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    return write_folder_atomically(dst, write, size)


def _read_pruning_config(src: str, name: str) -> dict:
    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src} is not a folder: pass the folder written by save_pruned or hf-ssgr prune.")
    path = os.path.join(src, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{src} has no {name}: hf-ssgr quantize exports a model pruned by hf-ssgr (save_pruned / hf-ssgr prune), "
            "whose card and config record the pruning. Nothing was written."
        )
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("quantization"):
        raise ValueError(f"{src} is already quantized ({name} records a quantization). Nothing was written.")
    return meta
