"""`hf-ssgr push`: upload a folder written by `hf-ssgr prune` to the Hub, its card rebuilt with evaluation reports.

```
hf-ssgr push --model ./pruned --repo_id me/model [--report eval.json --baseline dense.json] [--private]
```
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .parser import CommandError, SsgrParser

__all__ = ["PushArguments", "make_parser", "main"]


@dataclass
class PushArguments:
    """Inputs of `hf-ssgr push`."""

    model: str = field(
        default=None, metadata={"help": "A folder written by hf-ssgr prune (with pruning_config.json)."}
    )
    repo_id: str = field(default=None, metadata={"help": "The Hub repo, namespace/name."})
    report: str = field(default=None, metadata={"help": "The pruned model's evaluation report (JSON)."})
    baseline: str = field(default=None, metadata={"help": "The dense model's evaluation report (JSON)."})
    private: bool = field(default=False, metadata={"help": "Create the repo private."})
    create_pr: bool = field(default=False, metadata={"help": "Open a pull request instead of committing to main."})


def make_parser() -> SsgrParser:
    return SsgrParser("hf-ssgr push", [PushArguments], description=__doc__)


def main(argv: list[str]) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    from ..evaluation.report import EvalReport
    from ..hub.upload import push_to_hub
    from ..pruning.config import PruningConfig
    from ..utils import PRUNING_CONFIG_NAME, load_tokenizer

    (args,) = make_parser().parse(argv)
    missing = [f"--{n}" for n in ("model", "repo_id") if not getattr(args, n)]
    if missing:
        raise CommandError(f"{' '.join(missing)} required.")
    meta_path = os.path.join(args.model, PRUNING_CONFIG_NAME)
    if not os.path.exists(meta_path):
        raise CommandError(f"{args.model} has no {PRUNING_CONFIG_NAME}; pass a folder written by hf-ssgr prune.")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    report = EvalReport.load(args.report) if args.report else None
    baseline = EvalReport.load(args.baseline) if args.baseline else None
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tok = load_tokenizer(args.model, required=False)  # a folder without one pushes none, warned
    info = push_to_hub(model, tok, args.repo_id, report=report, baseline=baseline, private=args.private,
                       create_pr=args.create_pr, config=PruningConfig.from_dict(meta["config"]),
                       module_metrics=meta.get("modules"), base_model=meta.get("base_model"))  # fmt: skip
    print(f"Pushed to {getattr(info, 'commit_url', args.repo_id)}")
    return 0
