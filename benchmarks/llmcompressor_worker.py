"""Prune with llm-compressor's `oneshot` (SparseGPT or Wanda), for `bench_vs_llmcompressor.py`.

Runs in llm-compressor's own venv (it pins transformers 5.15-5.17) and imports nothing from hf_ssgr:

    python -m venv .venv-llmc && .venv-llmc/bin/pip install torch==2.13.0 && .venv-llmc/bin/pip install "llmcompressor==0.14.*"
    .venv-llmc/bin/python benchmarks/llmcompressor_worker.py --model DIR --calibration rows.jsonl --method sparsegpt \\
        --out OUT

The model folder must hold a tokenizer (llm-compressor loads one). Calibration rows (JSON lines with `input_ids`) are
used in file order (`shuffle_calibration_samples=False`), all of them, untruncated; every `Linear` of the decoder
layers is pruned and `lm_head` is ignored (llm-compressor would prune it otherwise). The wall time of the `oneshot`
call alone and the process's peak RSS go to `OUT/result.json`, the pruned parameters to `OUT/model.safetensors`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--calibration", required=True)
    parser.add_argument("--method", required=True, choices=["sparsegpt", "wanda"])
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--sparsity-type", default="unstructured")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    import datasets
    import llmcompressor
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
        rows = [json.loads(line)["input_ids"] for line in f]
    data = datasets.Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})
    structure = "0:0" if args.sparsity_type == "unstructured" else args.sparsity_type
    common = dict(sparsity=args.sparsity, mask_structure=structure, targets=["Linear"], ignore=["re:.*lm_head"])
    modifier = SparseGPTModifier(**common) if args.method == "sparsegpt" else WandaPruningModifier(**common)
    before = rss_mib()
    t0 = time.perf_counter()
    oneshot(
        model=model,
        tokenizer=tokenizer,
        dataset=data,
        recipe=modifier,
        num_calibration_samples=len(rows),
        max_seq_length=max(len(r) for r in rows),
        shuffle_calibration_samples=False,
        batch_size=1,
    )
    seconds = time.perf_counter() - t0
    os.makedirs(args.out, exist_ok=True)
    save_file({n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters()},
              os.path.join(args.out, "model.safetensors"))  # fmt: skip
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump({"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "rss_before_mib": before, "method": args.method, "sparsity": args.sparsity,
                   "sparsity_type": args.sparsity_type, "dtype": args.dtype, "rows": len(rows),
                   "tokens": sum(len(r) for r in rows), "llmcompressor_version": llmcompressor.__version__,
                   "transformers_version": transformers.__version__, "torch_version": torch.__version__,
                   "threads": torch.get_num_threads()}, f, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
