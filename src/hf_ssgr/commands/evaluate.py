"""`hf-ssgr evaluate`: pass@1 over k samples, lengths and truncation on the reasoning benchmarks.

```
hf-ssgr evaluate --model ./pruned --tasks ssgr_tiny_arith --num_samples 4 --output eval.json [--baseline dense.json]
```
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..evaluation.config import EvalConfig
from .parser import CommandError, SsgrParser

__all__ = ["EvaluateArguments", "make_parser", "main"]


@dataclass
class EvaluateArguments:
    """Inputs and outputs of `hf-ssgr evaluate`."""

    model: str = field(default=None, metadata={"help": "The model to evaluate (Hub id, folder, or `tiny`)."})
    output: str = field(default=None, metadata={"help": "Write the report there as JSON."})
    baseline: str = field(default=None, metadata={"help": "A dense model's report (JSON) to show recovery against."})
    model_name: str = field(default=None, metadata={"help": "The name the report carries (default: the path)."})


def make_parser() -> SsgrParser:
    return SsgrParser("hf-ssgr evaluate", [EvaluateArguments, EvalConfig], description=__doc__)


def main(argv: list[str]) -> int:
    from ..distributed import is_main_process
    from ..evaluation.evaluate import evaluate
    from ..evaluation.report import EvalReport
    from ..utils import check_output, resolve_model

    args, config = make_parser().parse(argv)
    if not args.model:
        raise CommandError("--model is required.")
    if args.output:
        check_output(args.output, "--output", "file")
    baseline = EvalReport.load(args.baseline) if args.baseline else None
    report = evaluate(resolve_model(args.model), config=config, model_name=args.model_name, output_path=args.output)
    if is_main_process():  # under torchrun every process holds the same report; one prints it
        print(report.table(baseline=baseline))
        if args.output:
            print(f"Report written to {args.output}")
    return 0
