"""Prune with llm-compressor's `oneshot` (SparseGPT or Wanda), for `bench_vs_llmcompressor.py`.

Runs in llm-compressor's own venv (it pins transformers 5.15-5.17) and imports nothing from hf_ssgr, only torch,
transformers, datasets, safetensors, llmcompressor and the standard library. Set-up, from the repository root (torch
first: a bare torch requirement would pull the multi-GB CUDA build):

    python -m venv .venv-llmc
    .venv-llmc/bin/pip install torch==2.13.0
    .venv-llmc/bin/pip install "llmcompressor==0.14.*"
    .venv-llmc/bin/pip uninstall -y torchvision torchaudio torchcodec   # only if they got in and break imports

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv-llmc/bin/python benchmarks/llmcompressor_worker.py \\
        --model DIR --calibration rows.jsonl --method sparsegpt --sparsity-type unstructured --out OUT

The model folder must hold a tokenizer (llm-compressor loads one). Calibration rows are JSON lines with `input_ids`
(lengths may differ); every row is used, one row per batch, with an all-ones attention mask, never padded or truncated.
By default (`--row-order file`) they reach llm-compressor in file order through a plain DataLoader; with
`--row-order length` the Dataset goes to `oneshot` itself (`shuffle_calibration_samples=False`, `max_seq_length` = the
longest row), whose sampler visits rows longest first, in an unstable order among rows of equal length. Every Linear
inside the decoder layers (the model's `_no_split_modules` classes, which the sequential pipeline also uses) is
pruned; `lm_head` is ignored (llm-compressor 0.14 would prune it otherwise) and so are the embeddings. `unstructured`
means mask structure "0:0"; "N:M" zeroes N of every M consecutive input weights (`--sparsity` is then unused).
SparseGPT runs with llm-compressor's defaults (block_size 128, dampening_frac 0.01).

`OUT/result.json` gets the wall time of the `oneshot` call alone, the process's peak RSS and its RSS just before
`oneshot`, and a split of that time: seconds inside the modifier's calibration hooks (Hessian / activation-norm
accumulation), inside its `compress_modules` (the solves) and inside the pipeline's subgraph tracing; the rest is
forward passes and set-up. The pruned parameters go to `OUT/model.safetensors`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections import defaultdict


def status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib() -> float:
    return status_mib("VmRSS")


def add_timer(owner, attr: str, totals: dict, key: str) -> None:
    """Replace `owner.attr` by a wrapper that adds its wall seconds to `totals[key]`."""
    original = getattr(owner, attr)

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0

    setattr(owner, attr, timed)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="saved HF causal LM folder, with a tokenizer")
    parser.add_argument("--calibration", required=True, help='JSON lines, each {"input_ids": [...]}')
    parser.add_argument("--method", required=True, choices=["sparsegpt", "wanda"])
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--sparsity-type", default="unstructured", help="unstructured, 2:4, 4:8, ... (N:M)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--row-order", default="file", choices=["file", "length"])
    args = parser.parse_args()
    if args.sparsity_type != "unstructured" and not re.fullmatch(r"\d+:\d+", args.sparsity_type):
        parser.error("--sparsity-type must be unstructured or N:M")

    import datasets
    import llmcompressor
    import llmcompressor.pipelines.sequential.pipeline as sequential_pipeline
    import torch
    import transformers
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    with open(args.calibration) as f:
        rows = [json.loads(line)["input_ids"] for line in f if line.strip()]
    data = datasets.Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})
    if args.row_order == "file":
        data = torch.utils.data.DataLoader(data.with_format("torch"), batch_size=1, shuffle=False)

    layer_classes = list(getattr(model, "_no_split_modules", None) or [])
    structure = "0:0" if args.sparsity_type == "unstructured" else args.sparsity_type
    common = dict(sparsity=args.sparsity, mask_structure=structure, targets=layer_classes or ["Linear"],
                  ignore=["re:.*lm_head"])  # fmt: skip
    modifier_class = SparseGPTModifier if args.method == "sparsegpt" else WandaPruningModifier
    totals = defaultdict(float)
    add_timer(modifier_class, "calibrate_module", totals, "calibrate_hook_seconds")
    add_timer(modifier_class, "compress_modules", totals, "compress_seconds")
    add_timer(sequential_pipeline, "trace_subgraphs", totals, "trace_seconds")
    modifier = modifier_class(**common)

    before = rss_mib()
    t0 = time.perf_counter()
    oneshot(
        model=model,
        tokenizer=tokenizer,
        dataset=data,
        recipe=modifier,
        pipeline="sequential",
        batch_size=1,
        num_calibration_samples=len(rows),
        shuffle_calibration_samples=False,
        max_seq_length=max(len(r) for r in rows),
    )
    seconds = time.perf_counter() - t0
    # VmHWM is this process's own high-water mark: ru_maxrss would carry the parent's RSS over the exec
    peak = status_mib("VmHWM")

    os.makedirs(args.out, exist_ok=True)
    save_file({n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters()},
              os.path.join(args.out, "model.safetensors"))  # fmt: skip
    result = {
        "seconds": seconds,
        "peak_rss_mib": peak,
        "rss_before_mib": before,
        "method": args.method,
        "sparsity": args.sparsity,
        "sparsity_type": args.sparsity_type,
        "dtype": args.dtype,
        "rows": len(rows),
        "tokens": sum(len(r) for r in rows),
        "llmcompressor_version": llmcompressor.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "row_order": args.row_order,
        "targets": common["targets"],
        "mask_structure": structure,
        **{k: getattr(modifier, k) for k in ("block_size", "dampening_frac") if hasattr(modifier, k)},
        "calibrate_hook_seconds": totals["calibrate_hook_seconds"],
        "compress_seconds": totals["compress_seconds"],
        "trace_seconds": totals["trace_seconds"],
    }
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
