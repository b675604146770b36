"""Mixture-of-experts layers: the fused experts of transformers 5.x as pruning targets.

transformers 5.x stores the experts of a mixture-of-experts layer as 3-D `nn.Parameter`s of one module, not as
`nn.Linear`s. Every such class in the library follows one contract, the one its batched and grouped kernels rely on
(`transformers.integrations.moe.use_experts_implementation`):

- `gate_up_proj` of shape `[E, 2I, H]` (or `up_proj`, `[E, I, H]`, when `has_gate` is false) and `down_proj`,
  `[E, H, I]`; with `is_transposed` they are stored `[E, in, out]` (gpt-oss);
- with `has_bias`, `gate_up_proj_bias` (`up_proj_bias`) and `down_proj_bias`, `[E, out]`;
- `_apply_gate` turns the gate/up product into the input of `down_proj` (concatenated `[gate; up]` or interleaved,
  as the module's `is_concatenated` says, with the family's activation: SwiGLU, or gpt-oss's clamped GLU);
  `act_fn` does it without a gate;
- `forward(hidden_states, top_k_index, top_k_weights)` on flattened tokens: a token goes to the experts of its row of
  `top_k_index` (an index of `E` drops it) and their outputs are summed with the weights.

Each expert's projection is one weight matrix to prune, `[out, in]`, with its own statistics from exactly the tokens
the router sends that expert. The pruner computes the input of `down_proj` itself, from the routed tokens, through
the module's own `_apply_gate`, and checks on the first batch that its reading of the module reproduces the
module's output, so a class that claims the contract but computes something else is refused rather than pruned
from wrong statistics. A module that holds 3-D parameters without this contract is refused by name.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "UnknownExpertsLayoutError",
    "is_experts_module",
    "check_experts_module",
    "expert_projections",
    "expert_weight",
    "expert_input_projection",
    "expert_intermediate",
    "expert_output",
    "routing_inputs",
    "routed_output",
]


class UnknownExpertsLayoutError(ValueError):
    """A decoder layer holds 3-D (fused experts) parameters in a module whose layout the pruner does not know."""


def is_experts_module(module: nn.Module) -> bool:
    """Whether `module` holds fused expert weights: a parameter of its own with 3 or more dimensions, in a module
    that is not a convolution (whose 3-D weights are ordinary kernels)."""
    if isinstance(module, (nn.Linear, nn.Embedding, nn.modules.conv._ConvNd)):
        return False
    return any(p.ndim >= 3 for p in module.parameters(recurse=False))


def _layout_problem(module: nn.Module) -> str | None:
    missing = [a for a in ("has_bias", "is_transposed") if not hasattr(module, a)]
    if missing:
        return f"it has no {' / '.join(missing)} attribute (transformers' experts interface)"
    in_attr = "gate_up_proj" if getattr(module, "has_gate", True) else "up_proj"
    for attr in (in_attr, "down_proj"):
        p = getattr(module, attr, None)
        if not isinstance(p, nn.Parameter) or p.ndim != 3:
            return f"it has no 3-D parameter {attr!r}"
    if module.has_bias:
        for attr in (f"{in_attr}_bias", "down_proj_bias"):
            if not isinstance(getattr(module, attr, None), nn.Parameter):
                return f"has_bias is set but it has no parameter {attr!r}"
    gate = (
        getattr(module, "_apply_gate", None) if getattr(module, "has_gate", True) else getattr(module, "act_fn", None)
    )
    if not callable(gate):
        return "it has no _apply_gate / act_fn to compute the input of down_proj"
    others = [n for n, p in module.named_parameters(recurse=False) if p.ndim >= 3 and n not in (in_attr, "down_proj")]
    if others:
        return f"it also holds 3-D parameters {others} outside the experts interface"
    return None


def check_experts_module(name: str, module: nn.Module) -> None:
    """Refuse a fused-experts module whose layout is not transformers' experts interface, naming it."""
    problem = _layout_problem(module)
    if problem is not None:
        shapes = {n: tuple(p.shape) for n, p in module.named_parameters(recurse=False)}
        raise UnknownExpertsLayoutError(
            f"{name} ({type(module).__name__}, parameters {shapes}) holds fused expert weights in a layout the pruner "
            f"does not know: {problem}. Its experts cannot be pruned from their routed tokens. Load the model with "
            "a transformers version whose modeling class uses @use_experts_implementation, or leave the experts "
            f"dense with exclude=[{name.rsplit('.', 1)[-1]!r}] (the coverage check then reports them)."
        )


def expert_input_projection(module: nn.Module) -> str:
    return "gate_up_proj" if getattr(module, "has_gate", True) else "up_proj"


def expert_projections(module: nn.Module) -> tuple[str, str]:
    """The two projections of every expert, in the order their inputs are computed."""
    return expert_input_projection(module), "down_proj"


def num_experts(module: nn.Module) -> int:
    return int(module.down_proj.shape[0])


def expert_weight(module: nn.Module, attr: str, expert: int) -> torch.Tensor:
    """Expert `expert`'s `attr` weight as an `[out, in]` view of the fused parameter (writes go through)."""
    w = getattr(module, attr).data[expert]
    return w.t() if module.is_transposed else w


def _bias(module: nn.Module, attr: str, expert: int) -> torch.Tensor | None:
    return getattr(module, f"{attr}_bias")[expert] if module.has_bias else None


def expert_intermediate(module: nn.Module, x: torch.Tensor, expert: int) -> torch.Tensor:
    """The input of expert `expert`'s `down_proj` for the tokens `x` (`[tokens, H]`), as the module computes it."""
    attr = expert_input_projection(module)
    h = F.linear(x, expert_weight(module, attr, expert).to(x.dtype), _bias(module, attr, expert))
    return module._apply_gate(h) if getattr(module, "has_gate", True) else module.act_fn(h)


def expert_output(module: nn.Module, x: torch.Tensor, expert: int) -> torch.Tensor:
    h = expert_intermediate(module, x, expert)
    return F.linear(h, expert_weight(module, "down_proj", expert).to(h.dtype), _bias(module, "down_proj", expert))


def routing_inputs(module: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(hidden_states, top_k_index, top_k_weights)` of a call of the experts module, whatever their names."""
    if len(args) >= 3:
        return args[0], args[1], args[2]
    names = list(inspect.signature(module.forward).parameters)[:3]
    values = list(args) + [kwargs[n] for n in names[len(args) :] if n in kwargs]
    if len(values) < 3:
        raise RuntimeError(
            f"{type(module).__name__}.forward was called without its routing ({names}): the pruner cannot tell "
            "which tokens each expert receives."
        )
    return values[0], values[1], values[2]


def routed_output(module: nn.Module, x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The experts' output as the pruner reads the module (to check that reading against the module's forward)."""
    out = torch.zeros_like(x)
    for e in torch.unique(index).tolist():
        if not 0 <= e < num_experts(module):
            continue  # an index of E drops the token (expert parallelism's sentinel)
        pos, tok = torch.where(index.t() == e)
        y = expert_output(module, x[tok], e) * weights[tok, pos, None]
        out.index_add_(0, tok, y.to(out.dtype))
    return out
