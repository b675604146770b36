"""What the pruner needs to know about a causal LM: its decoder-layer stack and the linear modules inside."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["find_decoder_layers", "find_final_norm", "lm_head_is_tied", "module_device", "TIED_LM_HEAD_MESSAGE"]

TIED_LM_HEAD_MESSAGE = (
    "lm_head is tied to the input embeddings (tie_word_embeddings=True), so pruning it would also prune the "
    "embeddings: remove 'lm_head' from targets, or untie the weights first."
)


def find_decoder_layers(model: nn.Module) -> tuple[nn.ModuleList, str]:
    """Return the decoder-layer stack of a causal LM and its qualified name (e.g. `model.layers`).

    The stack is the `nn.ModuleList` whose length equals `config.num_hidden_layers` (the first one found in module
    order), which covers Llama, Qwen2/3, Mistral, Gemma and most decoder-only models in transformers.
    """
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    num_layers = getattr(text_config, "num_hidden_layers", None)
    candidates = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    for name, module_list in candidates:
        if num_layers is not None and len(module_list) != num_layers:
            continue
        if all(any(isinstance(s, nn.Linear) for s in layer.modules()) for layer in module_list):
            return module_list, name
    raise ValueError(
        f"{type(model).__name__} has no decoder-layer stack (an nn.ModuleList of num_hidden_layers={num_layers} "
        "layers containing nn.Linear modules): pass a decoder-only causal LM such as AutoModelForCausalLM."
    )


def find_final_norm(model: nn.Module, layers_name: str) -> nn.Module:
    """The norm applied between the last decoder layer and `lm_head` (`model.norm` for Llama/Qwen)."""
    parent_name = layers_name.rsplit(".", 1)[0] if "." in layers_name else ""
    parent = model.get_submodule(parent_name) if parent_name else model
    for attr in ("norm", "final_layernorm", "ln_f", "final_norm"):
        module = getattr(parent, attr, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(
        f"Cannot find the final norm of {type(model).__name__} (looked for norm/final_layernorm/ln_f on "
        f"'{parent_name}'), which is needed to prune lm_head: remove 'lm_head' from targets."
    )


def lm_head_is_tied(model: nn.Module) -> bool:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if head is None or emb is None:
        return False
    if head.weight is emb.weight:
        return True
    if head.weight.device.type == "meta" or emb.weight.device.type == "meta":
        return False  # a meta tensor has no storage to share: tied weights are one Parameter
    return head.weight.data_ptr() == emb.weight.data_ptr()


def module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")
