"""The files of a pruned model's folder, written by one function for `save_pruned`, `push_to_hub` and
`quantize_pretrained`."""

from __future__ import annotations

import json
import os

from ..utils import PRUNING_CONFIG_NAME

__all__ = ["write_checkpoint_files"]


def write_checkpoint_files(folder, model, tokenizer, meta, card, compressor=None) -> None:
    """Write the weights, tokenizer, `pruning_config.json` and card into `folder`; with a compressed-tensors
    `compressor` (a quantized model), its `quantization_config` goes into `config.json` too
    (`ModelCompressor.update_config`)."""
    model.save_pretrained(folder, safe_serialization=True)
    if compressor is not None:
        compressor.update_config(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    with open(os.path.join(folder, PRUNING_CONFIG_NAME), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, default=str)
        f.write("\n")
    card.save(os.path.join(folder, "README.md"))
