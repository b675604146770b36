"""`hf-ssgr` command line.

```
hf-ssgr prune --model_name_or_path PATH --calibration PATH --output_dir OUT [--method sparsegpt --sparsity 0.5 ...]
hf-ssgr prune --config recipe.yaml [--sparsity 0.6]        # flags override the YAML
hf-ssgr tasks-path                                          # the lm-eval tasks folder, for lm_eval --include_path
hf-ssgr calibrate --model tiny --source tiny-arith --policy ssgr --save_dir calib/
hf-ssgr evaluate --model ./pruned --tasks ssgr_tiny_arith --num_samples 4 --output eval.json
hf-ssgr analyze --dense tiny --model_a A/ --model_b B/ --output heatmap.png
hf-ssgr push --model ./pruned --repo_id me/model --report eval.json --baseline dense.json
hf-ssgr run recipes/quickstart.yaml [--output_dir DIR]      # calibrate -> prune -> evaluate -> report, resumable
```

Configs are dataclasses parsed with `transformers.HfArgumentParser`; `--config` reads a flat YAML mapping of the same
field names.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import yaml

from ..pruning.config import PruningConfig

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

    from ..hub.upload import save_pruned
    from ..pruning.pruner import OneShotPruner
    from ..pruning.solvers import get_solver

    args, config = _parse((PruneArguments, PruningConfig), argv)
    for name in ("model_name_or_path", "calibration", "save_dir"):
        if not getattr(args, name) and not (name == "calibration" and not get_solver(config.method).needs_data()):
            raise SystemExit(f"hf-ssgr prune: --{name} is required.")
    dtype = args.torch_dtype if args.torch_dtype == "auto" else getattr(torch, args.torch_dtype)
    from ..utils import resolve_model

    args.model_name_or_path = resolve_model(args.model_name_or_path)
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
    if pruner.state.is_world_process_zero:
        print(f"Pruned model written to {args.save_dir}")


def tasks_path_main(argv):
    """Print the folder of the shipped lm-eval tasks, for `lm_eval --include_path`."""
    from ..evaluation.registry import tasks_path

    print(tasks_path())


def _overrides(argv: list[str], command: str) -> tuple[list[str], dict]:
    """Positional arguments, and `--key value` pairs parsed as YAML scalars (flags override the recipe)."""
    positional, overrides, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            key = arg[2:].replace("-", "_")
            if "=" in key:
                key, value = key.split("=", 1)
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise SystemExit(f"hf-ssgr {command}: {arg} needs a value.")
            overrides[key] = yaml.safe_load(value)
        else:
            positional.append(arg)
        i += 1
    return positional, overrides


def run_main(argv):
    """`hf-ssgr run RECIPE [--output_dir DIR] [--limit N] ...`: calibrate → prune → evaluate → report."""
    from ..recipes import RunConfig, run_recipe

    positional, overrides = _overrides(argv, "run")
    if len(positional) != 1:
        raise SystemExit("usage: hf-ssgr run RECIPE.yaml [--key value ...]  (keys of the recipe override it)")
    try:
        cfg = RunConfig.from_yaml(positional[0], **overrides)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise SystemExit(f"hf-ssgr run: {err}") from err
    result = run_recipe(cfg)
    from ..distributed import is_main_process

    if not is_main_process():
        return
    print(open(result["report"]).read())
    print(f"Everything is in {cfg.output_dir} (report: {result['report']})")


def _with_config(overrides: dict, command: str) -> dict:
    """`--config FILE` gives defaults; the other flags override them."""
    path = overrides.pop("config", None)
    if path is None:
        return overrides
    with open(path, encoding="utf-8") as f:
        base = yaml.safe_load(f) or {}
    if not isinstance(base, dict):
        raise SystemExit(f"hf-ssgr {command}: {path} must be a YAML mapping.")
    return {**base, **overrides}


def _split(values: dict, names: set) -> tuple[dict, dict]:
    """(the values named in `names`, the others)."""
    return {k: v for k, v in values.items() if k in names}, {k: v for k, v in values.items() if k not in names}


def _require(values: dict, keys: list[str], command: str) -> None:
    missing = [k for k in keys if values.get(k) in (None, "")]
    if missing:
        raise SystemExit(f"hf-ssgr {command}: --{' --'.join(missing)} required.")


def calibrate_main(argv):
    """`hf-ssgr calibrate --model M --source S --save_dir DIR [--policy ssgr --num_samples 128 ...]`."""
    import dataclasses as dc

    from ..calibration.calibrator import SSGRCalibrator
    from ..calibration.config import CalibrationConfig
    from ..utils import resolve_model

    _, values = _overrides(argv, "calibrate")
    values = _with_config(values, "calibrate")
    own = {"model", "source", "save_dir", "push_to_hub", "push_rollouts", "private"}
    args, rest = _split(values, own)
    _require(args, ["model", "source", "save_dir"], "calibrate")
    fields = {f.name for f in dc.fields(CalibrationConfig)}
    unknown = sorted(set(rest) - fields)
    if unknown:
        raise SystemExit(f"hf-ssgr calibrate: unknown option(s) {unknown}; valid: {sorted(own | fields)}.")
    try:
        config = CalibrationConfig(**rest)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"hf-ssgr calibrate: {err}") from err
    calibrator = SSGRCalibrator(config)
    ds = calibrator.build(resolve_model(str(args["model"])), args["source"])
    from ..distributed import is_main_process, wait_for_everyone

    if is_main_process():  # under torchrun every process holds the same rows; one writes them
        ds.save_to_disk(args["save_dir"])
        print(f"{len(ds)} calibration rows ({config.policy}) written to {args['save_dir']}")
    wait_for_everyone()
    if not is_main_process():
        return
    if args.get("push_to_hub"):
        from ..hub.upload import push_calibration_to_hub

        rollouts = config.rollouts_dir if args.get("push_rollouts") else None
        info = push_calibration_to_hub(
            ds, args["push_to_hub"], rollouts_dir=rollouts, private=bool(args.get("private"))
        )
        print(f"Pushed to {getattr(info, 'commit_url', args['push_to_hub'])}")


def evaluate_main(argv):
    """`hf-ssgr evaluate --model PATH [--tasks ssgr_reasoning] [--num_samples 4] [--output eval.json]`."""
    from ..evaluation.evaluate import EvalReport, evaluate
    from ..utils import resolve_model

    _, values = _overrides(argv, "evaluate")
    values = _with_config(values, "evaluate")
    _require(values, ["model"], "evaluate")
    model = resolve_model(str(values.pop("model")))
    output = values.pop("output", None)
    baseline = values.pop("baseline", None)
    tasks = values.pop("tasks", ["ssgr_reasoning"])
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    try:
        report = evaluate(model, tasks=tasks, output_path=output, **values)
    except TypeError as err:
        raise SystemExit(f"hf-ssgr evaluate: {err}") from err
    from ..distributed import is_main_process

    if not is_main_process():  # under torchrun every process holds the same report; one prints it
        return
    print(report.table(baseline=EvalReport.load(baseline) if baseline else None))
    if output:
        print(f"Report written to {output}")


def analyze_main(argv):
    """`hf-ssgr analyze --dense D --model_a A --model_b B [--source tiny-arith --num_problems 8] --output heat.png`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..calibration.sources import load_problems
    from ..evaluation.analysis import plot_error_ratio_heatmap, reconstruction_errors
    from ..utils import resolve_model

    _, v = _overrides(argv, "analyze")
    v = _with_config(v, "analyze")
    _require(v, ["dense", "model_a", "model_b", "output"], "analyze")
    paths = {k: resolve_model(str(v[k])) for k in ("dense", "model_a", "model_b")}
    models = {k: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval() for k, p in paths.items()}
    tok = AutoTokenizer.from_pretrained(paths["dense"])
    problems = load_problems(v.get("source", "tiny-arith"), v.get("source_path")).select(
        range(int(v.get("num_problems", 8)))
    )
    labels = (str(v.get("label_a", "A")), str(v.get("label_b", "B")))
    result = reconstruction_errors(models["dense"], models["model_a"], models["model_b"], tok, list(problems),
                                   max_new_tokens=int(v.get("max_new_tokens", 256)), labels=labels)  # fmt: skip
    plot_error_ratio_heatmap(result, v["output"])
    print(json.dumps(result.summary(), indent=2))
    print(f"Heatmap written to {v['output']}")


def push_main(argv):
    """`hf-ssgr push --model PRUNED_DIR --repo_id me/name [--report eval.json --baseline dense.json] [--private]`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..evaluation.evaluate import EvalReport
    from ..hub.upload import push_to_hub
    from ..utils import PRUNING_CONFIG_NAME

    _, v = _overrides(argv, "push")
    _require(v, ["model", "repo_id"], "push")
    folder = str(v["model"])
    meta_path = os.path.join(folder, PRUNING_CONFIG_NAME)
    if not os.path.exists(meta_path):
        raise SystemExit(
            f"hf-ssgr push: {folder} has no {PRUNING_CONFIG_NAME}; pass a folder written by hf-ssgr prune."
        )
    meta = json.load(open(meta_path))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    info = push_to_hub(
        model,
        tok,
        str(v["repo_id"]),
        report=EvalReport.load(v["report"]) if v.get("report") else None,
        baseline=EvalReport.load(v["baseline"]) if v.get("baseline") else None,
        private=bool(v.get("private", False)),
        create_pr=bool(v.get("create_pr", False)),
        config=PruningConfig.from_dict(meta["config"]),
        module_metrics=meta.get("modules"),
        base_model=meta.get("base_model"),
    )
    print(f"Pushed to {getattr(info, 'commit_url', v['repo_id'])}")


COMMANDS = {
    "calibrate": calibrate_main,
    "prune": prune_main,
    "evaluate": evaluate_main,
    "analyze": analyze_main,
    "push": push_main,
    "run": run_main,
    "tasks-path": tasks_path_main,
}


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
