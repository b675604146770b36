"""`hf-ssgr`: the command line.

```
hf-ssgr prune --model_name_or_path PATH --calibration CALIB --save_dir OUT [--method sparsegpt --sparsity 0.5 ...]
hf-ssgr calibrate --model tiny --source tiny-arith --policy ssgr --save_dir calib/
hf-ssgr evaluate --model ./pruned --tasks ssgr_tiny_arith --num_samples 4 --output eval.json
hf-ssgr analyze --dense tiny --model_a A/ --model_b B/ --output heatmap.png
hf-ssgr plan --model_name_or_path deepseek-r1 --num_samples 128 --seq_len 4096 --gpus 1,8 --gpu_memory_gb 80,141
hf-ssgr push --model ./pruned --repo_id me/model --report eval.json --baseline dense.json
hf-ssgr quantize ./pruned ./pruned-fp8 --scheme fp8                 # compressed-tensors FP8_DYNAMIC, data-free
hf-ssgr run recipes/quickstart.yaml [--output_dir DIR]      # calibrate -> prune -> evaluate -> report, resumable
hf-ssgr tasks-path                                          # the lm-eval tasks folder, for lm_eval --include_path
```

Every command takes `--config FILE.yaml` (a mapping of its flags; the flags given override it) and `--help`. A mistake
in the input is one line, `hf-ssgr COMMAND: message`, with exit code 2; set `HF_SSGR_TRACEBACK=1` to see the
traceback of an unexpected error.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from .parser import CommandError

__all__ = ["main", "COMMANDS"]

# command -> (module, one line of help)
COMMANDS = {
    "prune": ("prune", "prune a model with a calibration set and save it"),
    "calibrate": ("calibrate", "build a calibration Dataset (SSGR, RAC, every baseline)"),
    "evaluate": ("evaluate", "pass@1 over k samples on the reasoning benchmarks"),
    "analyze": ("analyze", "reconstruction error along the dense model's reasoning (heatmap)"),
    "push": ("push", "upload a pruned folder to the Hub"),
    "quantize": ("quantize", "export a pruned folder as compressed-tensors FP8 (data-free)"),
    "plan": ("plan", "device/host peak memory, disk and estimated time of a prune, before renting"),
    "run": ("run", "a whole recipe: calibrate -> prune -> evaluate -> report"),
    "tasks-path": ("tasks_path", "the folder of the shipped lm-eval tasks"),
}
# What a user's input can get wrong: one line, exit code 2. Anything else is unexpected, and is said as such.
USER_ERRORS = (CommandError, ValueError, TypeError, KeyError, FileNotFoundError, PermissionError, ImportError, OSError)


def _usage() -> str:
    lines = ["usage: hf-ssgr COMMAND [--config FILE.yaml] [flags]   (hf-ssgr COMMAND --help for its flags)", ""]
    lines += [f"  {name:<11} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hf-ssgr: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    command = importlib.import_module(f".{COMMANDS[name][0]}", __package__)
    if "-h" in rest or "--help" in rest:
        print(command.make_parser().format_help())
        return 0
    try:
        return int(command.main(rest) or 0)
    except KeyboardInterrupt:
        print(f"hf-ssgr {name}: interrupted.", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a command never ends in a traceback unless asked to
        if os.environ.get("HF_SSGR_TRACEBACK"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not isinstance(err, USER_ERRORS):
            message = f"{type(err).__name__}: {message} (unexpected; HF_SSGR_TRACEBACK=1 shows where)"
        print(f"hf-ssgr {name}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
