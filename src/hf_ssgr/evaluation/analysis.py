"""Where pruned models drift from the dense one while they reason (RAC, Fig. 2).

The dense model's greedy rollout of each held-out problem is the fixed sequence. At every token t, the error of a
pruned model is the L2 distance between its last-layer hidden state at t and the dense model's (the model's output
`hidden_states[-1]`, after the final norm: the state the LM head reads). A causal model's state at t is the
last-token state of the prefix up to t, so one forward over the whole sequence gives every prefix's error.

`reconstruction_errors` returns e_A, e_B and their ratio e_A/e_B per token; `plot_error_ratio_heatmap` draws
log2(e_A/e_B) with problems as rows, token index as columns, and each row's prompt/decode boundary marked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..calibration.engines import TransformersEngine
from ..calibration.prompts import encode_prompt

__all__ = [
    "ReconstructionErrors",
    "reconstruction_errors",
    "last_hidden_errors",
    "error_ratio_figure",
    "plot_error_ratio_heatmap",
]


@dataclass
class ReconstructionErrors:
    """Per problem: the token ids of the dense rollout, the prompt length, and per-token errors of A and B."""

    problem_ids: list[str]
    sequences: list[list[int]]
    prompt_lengths: list[int]
    errors_a: list[np.ndarray]
    errors_b: list[np.ndarray]
    labels: tuple[str, str] = ("A", "B")
    settings: dict = field(default_factory=dict)

    @property
    def ratios(self) -> list[np.ndarray]:
        """e_A / e_B per token (NaN where e_B is 0)."""
        out = []
        for a, b in zip(self.errors_a, self.errors_b):
            with np.errstate(divide="ignore", invalid="ignore"):
                out.append(np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan))
        return out

    def summary(self) -> dict[str, float]:
        """Mean errors of A and B over prompt tokens and over decoded (reasoning) tokens, and the mean ratios."""
        out = {}
        for part in ("prompt", "decode"):
            ea, eb, rr = [], [], []
            for a, b, r, p in zip(self.errors_a, self.errors_b, self.ratios, self.prompt_lengths):
                sl = slice(0, p) if part == "prompt" else slice(p, None)
                ea.extend(a[sl].tolist())
                eb.extend(b[sl].tolist())
                rr.extend(x for x in r[sl].tolist() if not math.isnan(x))
            out[f"{part}_error_{self.labels[0]}"] = float(np.mean(ea)) if ea else float("nan")
            out[f"{part}_error_{self.labels[1]}"] = float(np.mean(eb)) if eb else float("nan")
            out[f"{part}_mean_ratio"] = float(np.mean(rr)) if rr else float("nan")
        return out


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def last_hidden_errors(reference, model, input_ids: Sequence[int]) -> np.ndarray:
    """‖h_model(t) − h_reference(t)‖₂ for every position t of one sequence (last layer, float32)."""
    ids = torch.tensor([list(input_ids)], dtype=torch.long)
    h_ref = reference(input_ids=ids.to(_device(reference)), output_hidden_states=True).hidden_states[-1][0]
    h = model(input_ids=ids.to(_device(model)), output_hidden_states=True).hidden_states[-1][0]
    return torch.linalg.vector_norm(h.float().cpu() - h_ref.float().cpu(), dim=-1).numpy()


@torch.no_grad()
def reconstruction_errors(
    dense,
    model_a,
    model_b,
    tokenizer,
    problems: Sequence[str] | Sequence[dict],
    max_new_tokens: int = 1024,
    labels: tuple[str, str] = ("A", "B"),
    chat_template: str | None = None,
) -> ReconstructionErrors:
    """Per-token last-layer hidden-state errors of two pruned models against the dense one, on the dense model's
    greedy rollouts.

    Args:
        dense, model_a, model_b: causal LMs sharing one tokenizer (e.g. pruned with RAC and with C4 calibration).
        problems: problem texts, or dicts with `problem` (and optionally `problem_id`), e.g. rows of
            `hf_ssgr.evaluation.registry.load_benchmark(...)` or `hf_ssgr.calibration.sources.load_problems(...)`.
        max_new_tokens: the length of the greedy rollout (it stops earlier at EOS).
    """
    if not problems:
        raise ValueError("No problems given.")
    engine = TransformersEngine(dense, tokenizer, temperature=0.0, max_new_tokens=max_new_tokens, batch_size=1)
    pids, seqs, plens, ea, eb = [], [], [], [], []
    for i, p in enumerate(problems):
        text = p["problem"] if isinstance(p, dict) else str(p)
        pid = str(p.get("problem_id", i)) if isinstance(p, dict) else str(i)
        prompt = encode_prompt(tokenizer, text, chat_template)
        sample = engine.generate([prompt], 1, seed=0)[0][0]
        seq = prompt + list(sample.response_ids)
        pids.append(pid)
        seqs.append(seq)
        plens.append(len(prompt))
        ea.append(last_hidden_errors(dense, model_a, seq))
        eb.append(last_hidden_errors(dense, model_b, seq))
    return ReconstructionErrors(
        pids, seqs, plens, ea, eb, labels=tuple(labels), settings={"max_new_tokens": max_new_tokens}
    )


def error_ratio_figure(result: ReconstructionErrors, max_tokens: int | None = None, title: str | None = None):
    """The figure of `plot_error_ratio_heatmap`, as a matplotlib `Figure`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import patheffects
        from matplotlib.colors import LogNorm
    except ImportError as err:
        raise ImportError("Plots need matplotlib: pip install 'hf-ssgr[plot]'.") from err
    ratios = result.ratios
    width = max(len(r) for r in ratios)
    if max_tokens is not None:
        width = min(width, max_tokens)
    grid = np.full((len(ratios), width), np.nan)
    for i, r in enumerate(ratios):
        n = min(len(r), width)
        grid[i, :n] = r[:n]
    grid[~(grid > 0)] = np.nan  # a ratio of 0 or inf (one error exactly 0) has no place on a log scale
    finite = np.abs(np.log2(grid[np.isfinite(grid)]))
    bound = float(2 ** np.percentile(finite, 98)) if finite.size else 2.0
    bound = bound if bound > 1 else 2.0
    fig, ax = plt.subplots(figsize=(min(14.0, 3.5 + width / 60), 1.4 + 0.35 * len(ratios)), layout="constrained")
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="lightgrey")
    # log scale symmetric about 1: a ratio r and 1/r are equally far from white, in opposite colours
    norm = LogNorm(vmin=1 / bound, vmax=bound, clip=True)
    im = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    for i, p in enumerate(result.prompt_lengths):
        if p < width:
            ax.plot([p - 0.5, p - 0.5], [i - 0.5, i + 0.5], color="black", linewidth=2.5,
                    path_effects=[patheffects.withStroke(linewidth=4.5, foreground="white")])  # fmt: skip
    a, b = result.labels
    ax.set_xlabel("token index — black bar: where the prompt ends and decoding begins (left: prompt, right: decode)")
    ax.set_ylabel("problem")
    ax.set_yticks(range(len(ratios)))
    ax.set_yticklabels(result.problem_ids, fontsize=6)
    ax.set_title(title or f"e_{a} / e_{b}: last-layer hidden-state error against the dense model, per token\n"
                 f"blue: {a} reconstructs better, red: {b} does, white: equal", fontsize=10)  # fmt: skip
    bar = fig.colorbar(im, ax=ax, label=f"e_{a} / e_{b} (log scale)")
    ticks = [t for t in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8) if 1 / bound <= t <= bound]
    bar.set_ticks(ticks, labels=[f"{t:g}" if t >= 1 else f"1/{1 / t:g}" for t in ticks])
    bar.minorticks_off()
    return fig


def plot_error_ratio_heatmap(
    result: ReconstructionErrors, path: str, max_tokens: int | None = None, title: str | None = None
) -> str:
    """A heatmap of e_A/e_B per token: rows are problems, columns token index. The diverging colormap is centred at
    ratio 1 on a log scale (white: equal errors; blue where A reconstructs the dense model better, red where B does,
    r and 1/r equally saturated; the colour range is the 98th percentile of |log ratio|, beyond it saturated). A
    black bar marks where each row's prompt ends and decoding begins; grey: no token (or a ratio of 0 or inf)."""
    import matplotlib.pyplot as plt

    fig = error_ratio_figure(result, max_tokens=max_tokens, title=title)
    try:
        fig.savefig(path, dpi=150)
    finally:
        plt.close(fig)
    return path
