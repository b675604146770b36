"""Capturing what each decoder layer receives, and running a layer again on it.

The model runs once per calibration batch with its decoder layers replaced by recorders, so every positional and
keyword argument each layer receives (hidden states, attention masks per layer type, position ids,
`position_embeddings`, ...) is kept without a hard-coded list. Nothing after the last needed layer runs, `lm_head`
included; there is no KV cache.
"""

from __future__ import annotations

import torch
from torch import nn

from .batches import Batch, to_device
from .modeling import module_device

__all__ = ["capture_layer_inputs", "run_layer", "finite_flag"]


class _StopCapture(Exception):
    pass


def capture_layer_inputs(model: nn.Module, layers: nn.ModuleList, batches: list[Batch], num_run: int,
                         storage: torch.device, pin: bool) -> list[torch.Tensor]:  # fmt: skip
    """Record, on every batch, the arguments each of the decoder layers `0..num_run-1` receives (into `batch.hidden`
    and `batch.layer_inputs`), running only what comes before layer 0: the layers are replaced by recorders for the
    duration. Returns device-side flags, one per batch, of whether its embeddings are finite."""
    captured: dict[int, tuple] = {}
    originals = {}

    def recorder(idx):
        def forward(*args, **kwargs):
            if args:
                hidden, rest = args[0], args[1:]
            else:
                hidden, rest = kwargs.pop("hidden_states"), ()
            captured[idx] = (hidden, rest, kwargs)
            if idx == num_run - 1:
                raise _StopCapture
            return hidden

        return forward

    for i in range(num_run):
        originals[i] = layers[i].__dict__.get("forward")
        layers[i].forward = recorder(i)
    embed_device = module_device(model.get_input_embeddings()) if hasattr(model, "get_input_embeddings") else None
    finite = []
    try:
        for b in batches:
            captured.clear()
            ids = b.input_ids.to(embed_device)
            mask = b.attention_mask.to(embed_device) if b.attention_mask is not None else None
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            except _StopCapture:
                pass
            if len(captured) != num_run:
                raise RuntimeError(
                    f"Only {len(captured)} of {num_run} decoder layers were called during the capture forward: "
                    "the model's forward does not run its decoder-layer stack in order."
                )
            memo: dict = {}
            b.hidden = to_device(captured[0][0].detach(), storage, memo, pin)
            b.layer_inputs = {
                i: (to_device(rest, storage, memo, pin), to_device(kw, storage, memo, pin))
                for i, (_, rest, kw) in captured.items()
            }
            finite.append(finite_flag(b.hidden, b))
    finally:
        captured.clear()
        for i, fwd in originals.items():
            if fwd is None:
                layers[i].__dict__.pop("forward", None)
            else:
                layers[i].forward = fwd
    return finite


def run_layer(layer: nn.Module, i: int, batch: Batch, device: torch.device) -> torch.Tensor:
    """Run decoder layer `i` on one batch with the arguments captured for it; returns its hidden states."""
    rest, kwargs = batch.layer_inputs[i]
    memo: dict = {}
    out = layer(
        batch.hidden.to(device, non_blocking=True),
        *to_device(rest, device, memo),
        **to_device(kwargs, device, memo),
    )
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out


def finite_flag(hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
    """A device-side flag (no synchronisation): whether the non-padding activations are all finite."""
    h = hidden
    if batch.attention_mask is not None:
        h = hidden[batch.attention_mask.to(hidden.device).bool()]
    return torch.isfinite(h).all()
