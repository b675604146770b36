"""`hf-ssgr` command line.

```
hf-ssgr prune --model_name_or_path PATH --calibration PATH --output_dir OUT [--method sparsegpt --sparsity 0.5 ...]
hf-ssgr prune --config recipe.yaml [--sparsity 0.6]        # flags override the YAML
hf-ssgr tasks-path                                          # the lm-eval tasks folder, for lm_eval --include_path
```

Configs are dataclasses parsed with `transformers.HfArgumentParser`; `--config` reads a flat YAML mapping of the same
field names.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

import yaml

from .config import PruningConfig

logger = logging.getLogger("hf_ssgr")


@dataclass
class PruneArguments:
    """Inputs and outputs of `hf-ssgr prune`."""

    model_name_or_path: str = field(default=None, metadata={"help": "Hub id or local folder of the model to prune."})
    calibration: str = field(
        default=None,
        metadata={
            "help": "Calibration data: a `save_to_disk` folder, or a .jsonl/.json/.parquet file with input_ids."
        },
    )
    save_dir: str = field(default=None, metadata={"help": "Where the pruned model is written (save_pretrained)."})
    torch_dtype: str = field(default="auto", metadata={"help": "dtype to load the model in: auto, bfloat16, float32."})
    resume: bool = field(default=False, metadata={"help": "Resume from the latest checkpoint in --output_dir."})


def _parse(dataclass_types, argv):
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types)
    parser.add_argument("--config", default=None, help="YAML file with default values for any of the flags.")
    args = argv
    if "--config" in argv:
        i = argv.index("--config")
        with open(argv[i + 1], encoding="utf-8") as f:
            defaults = yaml.safe_load(f) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(defaults) - known)
        if unknown:
            raise SystemExit(f"{argv[i + 1]}: unknown field(s) {unknown}.")
        parser.set_defaults(**defaults)
        args = argv[:i] + argv[i + 2 :]
    namespace = parser.parse_args(args)
    values = vars(namespace)
    values.pop("config", None)
    outputs = []
    for dtype in dataclass_types:
        names = {f for f in dtype.__dataclass_fields__}
        outputs.append(dtype(**{k: v for k, v in values.items() if k in names}))
    return outputs


def load_calibration(path: str):
    """A calibration Dataset from a `save_to_disk` folder or a JSON-lines / JSON / Parquet file."""
    import datasets

    if os.path.isdir(path):
        return datasets.load_from_disk(path)
    ext = os.path.splitext(path)[1].lower()
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(ext)
    if builder is None:
        raise SystemExit(f"Cannot read calibration data from {path}: use a save_to_disk folder or .jsonl/.parquet.")
    return datasets.load_dataset(builder, data_files=path, split="train")


def prune_main(argv):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .hub import save_pruned
    from .pruner import OneShotPruner

    args, config = _parse((PruneArguments, PruningConfig), argv)
    for name in ("model_name_or_path", "calibration", "save_dir"):
        if not getattr(args, name) and not (name == "calibration" and config.method == "magnitude"):
            raise SystemExit(f"hf-ssgr prune: --{name} is required.")
    dtype = args.torch_dtype if args.torch_dtype == "auto" else getattr(torch, args.torch_dtype)
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path, dtype=dtype)
    calibration = load_calibration(args.calibration) if args.calibration else None
    pruner = OneShotPruner(config)
    pruner.prune(model, calibration, resume_from_checkpoint=True if args.resume else None)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    except (OSError, ValueError):
        tokenizer = None
        logger.warning("No tokenizer found next to %s; the pruned folder has none.", args.model_name_or_path)
    save_pruned(
        model,
        args.save_dir,
        tokenizer=tokenizer,
        pruner=pruner,
        calibration=calibration,
        base_model=args.model_name_or_path,
        command="hf-ssgr prune " + " ".join(argv),
    )
    print(f"Pruned model written to {args.save_dir}")


def tasks_path_main(argv):
    """Print the folder of the shipped lm-eval tasks, for `lm_eval --include_path`."""
    from .benchmarks import tasks_path

    print(tasks_path())


COMMANDS = {"prune": prune_main, "tasks-path": tasks_path_main}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(f"usage: hf-ssgr {{{','.join(COMMANDS)}}} [--config recipe.yaml] [flags]\n\n{__doc__}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    COMMANDS[argv[0]](argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
