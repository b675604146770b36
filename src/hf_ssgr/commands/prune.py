"""`hf-ssgr prune`: prune a model with a calibration set and save it with its metadata and card.

```
hf-ssgr prune --model_name_or_path PATH --calibration CALIB --save_dir OUT [--method sparsegpt --sparsity 0.5 ...]
hf-ssgr prune --config recipes/prune_sparsegpt_2of4.yaml --save_dir OUT      # flags override the YAML
```

The model is streamed from its safetensors shards one decoder layer at a time (`OneShotPruner.prune_pretrained`), so
a model larger than memory prunes; `--stream false` loads it whole (`prune()` then `save_pruned`). Both give the same
weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..pruning.config import PruningConfig
from .parser import CommandError, SsgrParser

logger = logging.getLogger("hf_ssgr")

__all__ = ["PruneArguments", "make_parser", "main", "load_calibration"]


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
    resume: bool = field(
        default=False,
        metadata={
            "help": "In memory (--stream false): resume from the latest checkpoint in --output_dir if there is one "
            "(else start at the first layer), so the same command serves the first run and a rerun. A streamed run "
            "resumes by itself from the unfinished folder beside --save_dir."
        },
    )
    stream: bool = field(
        default=True,
        metadata={
            "help": "Stream the model from its safetensors shards one decoder layer at a time (host memory: the "
            "embeddings, two layers and the activations), writing each pruned layer as it goes. false loads it whole."
        },
    )
    restart: bool = field(
        default=False, metadata={"help": "Streamed run: discard an unfinished run beside --save_dir, start over."}
    )


def make_parser() -> SsgrParser:
    return SsgrParser("hf-ssgr prune", [PruneArguments, PruningConfig], description=__doc__)


def load_calibration(path: str):
    """A calibration Dataset from a `save_to_disk` folder or a JSON-lines / JSON / Parquet file."""
    import datasets

    from ..calibration.sources import load_nonempty
    from ..utils import recover_folder

    if not os.path.exists(path):
        recover_folder(path)  # hidden by a save killed between its two renames: put back
    if not os.path.exists(path):
        raise CommandError(f"--calibration {path}: no such file or folder.")
    if os.path.isdir(path):
        return load_nonempty(lambda: datasets.load_from_disk(path), f"--calibration {path}")
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(os.path.splitext(path)[1].lower())
    if builder is None:
        raise CommandError(f"Cannot read calibration data from {path}: use a save_to_disk folder or .jsonl/.parquet.")
    return load_nonempty(lambda: datasets.load_dataset(builder, data_files=path, split="train"), f"--calibration {path}")


def main(argv: list[str]) -> int:
    from transformers import AutoModelForCausalLM

    from ..hub.upload import save_pruned
    from ..pruning.pruner import OneShotPruner
    from ..pruning.solvers import get_solver
    from ..utils import check_model_path, check_output, load_tokenizer, parse_torch_dtype, resolve_model

    args, config = make_parser().parse(argv)
    for name in ("model_name_or_path", "calibration", "save_dir"):
        if not getattr(args, name) and not (name == "calibration" and not get_solver(config.method).needs_data()):
            raise CommandError(f"--{name} is required.")
    dtype = parse_torch_dtype(args.torch_dtype, "--torch_dtype")
    check_output(args.save_dir, "--save_dir")
    model_path = resolve_model(args.model_name_or_path)
    check_model_path(model_path)
    calibration = load_calibration(args.calibration) if args.calibration else None
    pruner = OneShotPruner(config)
    command = "hf-ssgr prune " + " ".join(argv)
    if args.stream:
        if args.resume:
            logger.info("--resume: a streamed run resumes by itself from the unfinished folder beside --save_dir.")
        pruner.prune_pretrained(model_path, calibration, args.save_dir, dtype=dtype, restart=args.restart,
                                base_model=model_path, command=command)  # fmt: skip
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        pruner.prune(model, calibration, resume_from_checkpoint=True if args.resume else None)
        tokenizer = load_tokenizer(model_path, required=False)  # a folder without one gets none, warned
        save_pruned(model, args.save_dir, tokenizer=tokenizer, pruner=pruner, calibration=calibration,
                    base_model=model_path, command=command)  # fmt: skip
    if pruner.state.is_world_process_zero:
        a, cov = pruner.state.achieved_sparsity, pruner.state.coverage
        print(
            f"Sparsity {a['targets']:.4f} over the pruned weights ({100 * cov['coverage_of_decoder_layers']:.1f}% of "
            f"the decoder layers' parameters), {a['decoder_layers']:.4f} over the decoder layers, {a['model']:.4f} "
            "over the whole model."
        )
        print(f"Pruned model written to {args.save_dir}")
    return 0
