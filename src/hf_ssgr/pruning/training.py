"""Fine-tuning a pruned model with `transformers.Trainer` without losing its sparsity."""

from __future__ import annotations

import torch
from transformers import TrainerCallback as _HFTrainerCallback

__all__ = ["KeepSparsityCallback"]


class KeepSparsityCallback(_HFTrainerCallback):
    """Keeps a pruned model's zeros at zero while it is fine-tuned with `transformers.Trainer` (or TRL).

    At `on_train_begin` the zero pattern of every `nn.Linear` weight and every fused experts parameter (`gate_up_proj`,
    `down_proj` of a mixture of experts) whose sparsity reaches `min_sparsity` is recorded
    (or of the parameters named in `param_names`); after every optimizer step the masks are applied again, so
    optimizer updates, weight decay and momentum cannot revive pruned weights.

    Args:
        min_sparsity (`float`, *optional*, defaults to `0.05`): a weight is treated as pruned from this fraction of
            zeros on; dense layers are left alone.
        param_names (`list[str]`, *optional*): explicit parameter names to keep sparse instead.
    """

    def __init__(self, min_sparsity: float = 0.05, param_names: list[str] | None = None):
        self.min_sparsity = min_sparsity
        self.param_names = param_names
        self.masks: dict[str, torch.Tensor] = {}
        self._params: dict[str, torch.nn.Parameter] = {}

    def record_masks(self, model: torch.nn.Module) -> None:
        self.masks, self._params = {}, {}
        wanted = set(self.param_names) if self.param_names is not None else None
        from .experts import is_experts_module

        candidates = []
        for module_name, module in model.named_modules():
            dot = f"{module_name}." if module_name else ""
            if isinstance(module, torch.nn.Linear):
                candidates.append((f"{dot}weight", module.weight))
            elif is_experts_module(module):
                candidates += [(f"{dot}{n}", p) for n, p in module.named_parameters(recurse=False) if p.ndim >= 3]
        for name, p in candidates:
            if wanted is not None:
                if name not in wanted:
                    continue
            elif float((p == 0).float().mean()) < self.min_sparsity:
                continue
            self.masks[name] = p.detach() != 0
            self._params[name] = p
        if wanted is not None and wanted - set(self.masks):
            missing = sorted(wanted - set(self.masks))
            raise ValueError(f"KeepSparsityCallback: no linear or experts weight named {missing}.")

    @torch.no_grad()
    def apply_masks(self) -> None:
        for name, mask in self.masks.items():
            p = self._params[name]
            if mask.device != p.device:
                mask = self.masks[name] = mask.to(p.device)
            p.mul_(mask)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("KeepSparsityCallback needs the model in on_train_begin (the Trainer passes it).")
        self.record_masks(model)
        self.apply_masks()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.apply_masks()

    def on_step_end(self, args, state, control, **kwargs):
        self.apply_masks()
