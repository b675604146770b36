"""What is pruned: the weight matrices of the decoder layers, and the coverage they give.

A [`Target`] is one weight matrix, `[out, in]`: an `nn.Linear`'s weight, or one expert's projection in a fused
mixture-of-experts module (`experts.py`). Targets are named relative to their decoder layer: `self_attn.q_proj`,
`mlp.experts.down_proj.3` (expert 3's `down_proj`). A pattern of `PruningConfig.targets` / `exclude` matches an
expert's projection through the name of its fused parameter too (`mlp.experts`, `mlp.experts.down_proj`, `down_proj`),
so a pattern that names a dense MLP's projection names every expert's as well.

Routers stay dense unless named: an `nn.Linear` called `gate`, `router` or `shared_expert_gate` (in transformers 5.x
the routers of the MoE families are modules of their own, which hold no linear weight, and are never targets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from .experts import (
    check_experts_module,
    expert_projections,
    expert_weight,
    is_experts_module,
    num_experts,
)

__all__ = [
    "Target",
    "ROUTER_NAMES",
    "match_module",
    "layer_candidates",
    "resolve_targets",
    "Coverage",
    "compute_coverage",
    "UNCOVERED_LIMIT",
]

ROUTER_NAMES = ("gate", "router", "shared_expert_gate")
UNCOVERED_LIMIT = 0.10  # share of the pruned layers' weights that may stay untouched without the user saying so


@dataclass(eq=False)
class Target:
    """One weight matrix to prune.

    Args:
        name (`str`): relative to its decoder layer (`mlp.down_proj`, `mlp.experts.down_proj.3`).
        module (`nn.Module`): the `nn.Linear`, or the fused experts module.
        param_name (`str`): the parameter that holds it, relative to the layer (`mlp.experts.down_proj`).
        expert (`int`, *optional*): the expert's index in a fused experts module.
        projection (`str`, *optional*): for an expert, `gate_up_proj` / `up_proj` / `down_proj`.
    """

    name: str
    module: nn.Module
    param_name: str
    expert: int | None = None
    projection: str | None = None

    @property
    def param(self) -> nn.Parameter:
        return self.module.weight if self.expert is None else getattr(self.module, self.projection)

    @property
    def weight(self) -> torch.Tensor:
        """The matrix, `[out, in]` (for an expert a view into the fused parameter)."""
        if self.expert is None:
            return self.module.weight.data
        return expert_weight(self.module, self.projection, self.expert)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)

    def write(self, new: torch.Tensor) -> None:
        self.weight.copy_(new.to(self.weight.dtype))

    @property
    def match_names(self) -> tuple[str, ...]:
        return (self.name,) if self.expert is None else (self.name, self.param_name)


def match_module(name: str, pattern: str) -> bool:
    """peft-like matching of a module name relative to a decoder layer (`self_attn.q_proj`)."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return name == pattern or name.endswith("." + pattern) or name.startswith(pattern + ".")


def _matches(target: Target, pattern: str) -> bool:
    return any(match_module(n, pattern) for n in target.match_names)


def is_router(name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in ROUTER_NAMES


def layer_candidates(layer: nn.Module) -> list[Target]:
    """Every weight matrix of a decoder layer that can be pruned, in module order: its `nn.Linear`s and each expert's
    projections of its fused experts modules (refused if their layout is unknown)."""
    out: list[Target] = []
    for name, module in layer.named_modules():
        if isinstance(module, nn.Linear):
            out.append(Target(name, module, f"{name}.weight"))
        elif is_experts_module(module):
            check_experts_module(name, module)
            for attr in expert_projections(module):
                out.extend(
                    Target(f"{name}.{attr}.{e}", module, f"{name}.{attr}", expert=e, projection=attr)
                    for e in range(num_experts(module))
                )
    return out


def resolve_targets(
    layers: nn.ModuleList, layer_indices: list[int], targets: list[str] | None, exclude: list[str]
) -> dict[int, dict[str, Target]]:
    """For each layer index, the weight matrices to prune, keyed by name relative to the layer, in module order.

    Every pattern must match at least one candidate in some pruned layer; otherwise a `ValueError` lists the
    available names. Routers are left out unless a pattern of `targets` names them.
    """
    candidates = {i: layer_candidates(layers[i]) for i in layer_indices}
    layer_targets = [t for t in (targets or []) if t != "lm_head"]
    for pattern in layer_targets + [e for e in exclude if e != "lm_head"]:
        if not any(_matches(t, pattern) for i in layer_indices for t in candidates[i]):
            available = sorted({t.param_name.removesuffix(".weight") for t in candidates[layer_indices[0]]})
            raise ValueError(
                f"Module pattern {pattern!r} matches no weight of a decoder layer: available names are {available}. "
                "Use one of them, a parent such as 'mlp' or 'self_attn', or a 're:' regular expression."
            )
    out: dict[int, dict[str, Target]] = {}
    for i in layer_indices:
        chosen: dict[str, Target] = {}
        for t in candidates[i]:
            if targets is None:
                if is_router(t.name, t.module):
                    continue
            elif not any(_matches(t, p) for p in layer_targets):
                continue
            if any(_matches(t, e) for e in exclude):
                continue
            chosen[t.name] = t
        out[i] = chosen
    return out


@dataclass
class Coverage:
    """What the targets cover, in parameters (elements).

    Args:
        target_params: the elements of the target matrices.
        layer_params: every parameter element of the decoder layers (norms, biases, routers included).
        model_params: every parameter element of the model (tied weights counted once).
        scope_params: every parameter element of the pruned layers.
        uncovered (`dict[str, int]`): in the pruned layers, the weight tensors (2-D or more) that are not targets, by
            name relative to a layer, with their elements summed over the pruned layers.
    """

    target_params: int
    layer_params: int
    model_params: int
    scope_params: int
    uncovered: dict[str, int]

    @property
    def share(self) -> float:
        """The share of the decoder layers' parameters that the targets hold."""
        return self.target_params / self.layer_params if self.layer_params else 0.0

    @property
    def uncovered_share(self) -> float:
        """The share of the pruned layers' parameters held by weight tensors that are not targets."""
        return sum(self.uncovered.values()) / self.scope_params if self.scope_params else 0.0

    def to_dict(self) -> dict:
        return {
            "target_params": self.target_params,
            "decoder_layer_params": self.layer_params,
            "model_params": self.model_params,
            "coverage_of_decoder_layers": self.share,
            "uncovered": dict(self.uncovered),
            "uncovered_share_of_pruned_layers": self.uncovered_share,
        }


def _unique_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return list(module.named_parameters(remove_duplicate=True))


def compute_coverage(model: nn.Module, layers: nn.ModuleList, targets: dict[int, dict[str, Target]],
                     extra_target_params: int = 0) -> Coverage:  # fmt: skip
    """The coverage of `targets` (and of `extra_target_params` outside the layers, i.e. lm_head)."""
    target_elements = 0
    uncovered: dict[str, int] = {}
    scope = 0
    for i, chosen in targets.items():
        covered: dict[str, int] = {}
        for t in chosen.values():
            covered[t.param_name] = covered.get(t.param_name, 0) + t.weight.numel()
        target_elements += sum(covered.values())
        for name, p in _unique_params(layers[i]):
            scope += p.numel()
            left = p.numel() - covered.get(name, 0)
            if p.ndim >= 2 and left > 0:
                uncovered[name] = uncovered.get(name, 0) + left
    layer_params = sum(p.numel() for layer in layers for _, p in _unique_params(layer))
    model_params = sum(p.numel() for _, p in _unique_params(model))
    return Coverage(target_elements + extra_target_params, layer_params, model_params, scope, uncovered)


def zero_fractions(model: nn.Module, layers: nn.ModuleList, targets: dict[int, dict[str, Target]],
                   head: nn.Module | None = None) -> dict[str, float]:  # fmt: skip
    """Achieved sparsity, measured on the weights: over the targets, over every parameter of the decoder layers, and
    over the whole model (tied weights counted once)."""
    zeros = total = 0
    for chosen in targets.values():
        for t in chosen.values():
            w = t.weight
            zeros += int((w == 0).sum())
            total += w.numel()
    if head is not None:
        zeros += int((head.weight == 0).sum())
        total += head.weight.numel()

    def frac(params) -> float:
        params = list(params)
        n = sum(p.numel() for p in params)
        return sum(int((p.detach() == 0).sum()) for p in params) / n if n else 0.0

    return {
        "targets": zeros / total if total else 0.0,
        "decoder_layers": frac(p for layer in layers for _, p in _unique_params(layer)),
        "model": frac(p for _, p in _unique_params(model)),
    }


def pruning_accounting(model: nn.Module, config) -> dict:
    """What a pruned model's `config` ([`PruningConfig`]) targets in `model`, measured on its weights: the `coverage`
    ([`Coverage.to_dict`]) and the `achieved_sparsity` over the targets, the decoder layers and the whole model."""
    from .config import resolve_layer_scope
    from .modeling import find_decoder_layers

    layers, _ = find_decoder_layers(model)
    scope = resolve_layer_scope(config.layers, len(layers))
    targets = resolve_targets(layers, scope, config.targets, config.exclude)
    head = None
    if config.targets and "lm_head" in config.targets and "lm_head" not in config.exclude:
        head = model.get_output_embeddings()
    coverage = compute_coverage(model, layers, targets, head.weight.numel() if head is not None else 0)
    return {"coverage": coverage.to_dict(), "achieved_sparsity": zero_fractions(model, layers, targets, head)}
