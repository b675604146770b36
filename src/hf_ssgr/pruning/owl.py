"""Layer-wise sparsity: OWL (outlier-weighted layer-wise sparsity) and explicit per-layer lists.

OWL (Yin et al., *Outlier Weighed Layerwise Sparsity*, ICML 2024) gives decoder layers with more activation outliers
a lower sparsity. For each pruned decoder layer l, over every entry of every pruned weight of the layer, the Wanda
metric is `A_ij = |W_ij| · ‖X_j‖₂` (X: the calibration inputs of that weight), and the outlier ratio is

    D_l = #{A_ij > M · mean(A)} / #{A}

(the mean over all the layer's pruned weights together). The ratios are min-max scaled to [0, 2λ], shifted so that
their mean is 1 − S (S: the requested sparsity), and layer l is pruned at `1 − that`:

    s_l = 1 − (2λ · (D_l − min D) / (max D − min D) − mean_k(2λ · (D_k − min D) / (max D − min D)) + 1 − S)

so the mean of s_l over layers is exactly S. This is the formula of the paper's reference code (`prune_wanda_outlier`,
`check_outlier_mean`) and of llm-compressor's `sparsity_profile="owl"` (`owl_m`, `owl_lmbda`); the scale of D
(a share or a percentage) and of ‖X‖₂ (a sum or a mean over tokens) cancels out of it.

As in the reference code, the statistics come from a pass of the **dense** model before any pruning (each layer's
inputs are the dense outputs of the layer before); the pruning pass that follows is the usual sequential one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

logger = logging.getLogger("hf_ssgr")

__all__ = ["owl_layer_sparsities", "outlier_ratio", "wanda_outlier_ratio", "check_layer_sparsities"]


def wanda_outlier_ratio(weights: Sequence[torch.Tensor], sq_norms: Sequence[torch.Tensor], m: float) -> float:
    """D_l of one decoder layer: the share of the entries of `|W| · ‖X‖₂` over all of `weights` (each `[out, in]`,
    with `sq_norms[k]` its inputs' squared column norms, `[in]`) that exceed `m` times their joint mean.

    Computed in two passes (the joint mean, then a count per weight), so no concatenated copy of the layer's metric
    is made."""
    if len(weights) != len(sq_norms) or not weights:
        raise ValueError("wanda_outlier_ratio needs one squared-norm vector per weight, and at least one weight.")
    total, count = 0.0, 0
    metrics = []
    for w, sq in zip(weights, sq_norms):
        metric = w.detach().float().abs() * sq.to(w.device, torch.float32).clamp_min(0).sqrt().unsqueeze(0)
        total += float(metric.sum(dtype=torch.float64))
        count += metric.numel()
        metrics.append(metric)
    threshold = m * total / count
    above = sum(int((metric > threshold).sum()) for metric in metrics)
    return above / count


def outlier_ratio(metric: torch.Tensor, m: float) -> float:
    """The share of the entries of `metric` above `m` times its mean (the reference's `check_outlier_mean`, as a
    fraction rather than a percentage)."""
    metric = metric.float()
    return float((metric > metric.mean(dtype=torch.float64) * m).sum()) / metric.numel()


def owl_layer_sparsities(ratios: Sequence[float], sparsity: float, lam: float) -> list[float]:
    """Per-layer sparsities from the layers' outlier ratios D_l (the OWL formula in the module docstring).

    When every layer has the same ratio, the min-max scaling is undefined (the references divide by zero); every
    layer then gets `sparsity`, with a warning. Raises if a layer would fall outside [0, 1) (lower `owl_lambda`)."""
    if not ratios:
        raise ValueError("OWL needs the outlier ratio of at least one pruned decoder layer.")
    d = torch.tensor([float(r) for r in ratios], dtype=torch.float64)
    spread = float(d.max() - d.min())
    if spread == 0.0:
        logger.warning(
            "OWL: every pruned layer has the same outlier ratio (%.4g), so the allocation is uniform at %g.",
            float(d[0]),
            sparsity,
        )
        return [float(sparsity)] * len(ratios)
    scaled = (d - d.min()) * (2.0 * lam / spread)
    density = scaled - scaled.mean() + (1.0 - sparsity)
    out = [float(1.0 - x) for x in density]
    bad = [(i, s) for i, s in enumerate(out) if not 0.0 <= s < 1.0]
    if bad:
        i, s = bad[0]
        raise ValueError(
            f"OWL gives layer position {i} a sparsity of {s:.4f}, outside [0, 1), at sparsity={sparsity:g} with "
            f"owl_lambda={lam:g}: lower owl_lambda (the sparsities span sparsity +- 2 * owl_lambda)."
        )
    return out


def check_layer_sparsities(values: Sequence[float], pruned: Sequence[int], layers_name: str) -> dict[str, float]:
    """Pair an explicit `layer_sparsities` list with the pruned decoder layers (same order); the result maps each
    layer index, as a string (JSON keys), to its sparsity. A length mismatch is refused with both lengths named."""
    if len(values) != len(pruned):
        raise ValueError(
            f"layer_sparsities has {len(values)} values but {len(pruned)} decoder layers are pruned "
            f"({layers_name} {list(pruned)}): give one sparsity per pruned layer, in layer order."
        )
    return {str(i): float(s) for i, s in zip(pruned, values)}
