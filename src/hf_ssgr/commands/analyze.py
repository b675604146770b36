"""`hf-ssgr analyze`: the reconstruction error of two pruned models along the dense model's own reasoning (RAC Fig. 2).

```
hf-ssgr analyze --dense tiny --model_a A/ --model_b B/ --output heatmap.png [--source tiny-arith --num_problems 8]
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .parser import CommandError, SsgrParser

__all__ = ["AnalyzeArguments", "make_parser", "main"]


@dataclass
class AnalyzeArguments:
    """Inputs and outputs of `hf-ssgr analyze`."""

    dense: str = field(default=None, metadata={"help": "The dense model (its greedy rollouts fix the sequences)."})
    model_a: str = field(default=None, metadata={"help": "The first pruned model."})
    model_b: str = field(default=None, metadata={"help": "The second pruned model."})
    output: str = field(default=None, metadata={"help": "Where the heatmap is written (PNG, SVG or PDF)."})
    source: str = field(default="tiny-arith", metadata={"help": "Problem source of the rollouts."})
    source_path: str = field(default=None, metadata={"help": "Local copy of the source."})
    num_problems: int = field(default=8, metadata={"help": "Problems (rows of the heatmap)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Length of each greedy rollout."})
    label_a: str = field(default="A", metadata={"help": "Name of model_a in the plot."})
    label_b: str = field(default="B", metadata={"help": "Name of model_b in the plot."})


def make_parser() -> SsgrParser:
    return SsgrParser("hf-ssgr analyze", [AnalyzeArguments], description=__doc__)


def main(argv: list[str]) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..calibration.sources import load_problems
    from ..evaluation.analysis import plot_error_ratio_heatmap, reconstruction_errors
    from ..utils import check_model_path, check_output, resolve_model

    (args,) = make_parser().parse(argv)
    missing = [f"--{n}" for n in ("dense", "model_a", "model_b", "output") if not getattr(args, n)]
    if missing:
        raise CommandError(f"{' '.join(missing)} required.")
    check_output(args.output, "--output", "file")
    paths = {k: resolve_model(getattr(args, k)) for k in ("dense", "model_a", "model_b")}
    for path in paths.values():
        check_model_path(path)
    models = {k: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval() for k, p in paths.items()}
    tok = AutoTokenizer.from_pretrained(paths["dense"])
    problems = load_problems(args.source, args.source_path).select(range(args.num_problems))
    result = reconstruction_errors(models["dense"], models["model_a"], models["model_b"], tok, list(problems),
                                   max_new_tokens=args.max_new_tokens, labels=(args.label_a, args.label_b))  # fmt: skip
    plot_error_ratio_heatmap(result, args.output)
    print(json.dumps(result.summary(), indent=2))
    print(f"Heatmap written to {args.output}")
    return 0
