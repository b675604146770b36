"""Prune side by side with llm-compressor: same model, same calibration rows, same machine, one run.

For each method (SparseGPT, Wanda) this prunes one saved random-weight Qwen2 model three or four ways, each in a
fresh process so that its peak RSS is its own:

- llm-compressor's `oneshot` with `SparseGPTModifier` / `WandaPruningModifier` (its own venv, through
  `llmcompressor_worker.py`; `lm_head` ignored, rows not shuffled);
- `hf_ssgr.OneShotPruner` in one process;
- `hf_ssgr.OneShotPruner` in two processes (`torchrun --nproc_per_node 2`, gloo), unless `--no-distributed`;
- for SparseGPT, `hf_ssgr.OneShotPruner` with `gram_dtype="bfloat16"` (bfloat16 `XᵀX` products summed in float32)
  in one process, when `--gram-dtypes` lists it (the default lists both).

hf-ssgr runs with its defaults, its per-module error metric included (exact for SparseGPT, which has XᵀX anyway;
estimated on 1024 sampled tokens for Wanda). `--module-error off` leaves it out, as llm-compressor records none;
`--module-error exact` computes Wanda's exactly from an XᵀX (`error_sample_tokens=0`).

`--chunk-sizes 4096 1000` adds hf-ssgr runs that sum XᵀX in another order (the same algorithm, other float32
rounding): their spread is the noise floor against which a difference between the tools can be read.

Then it measures, for every result, the per-layer reconstruction error on the calibration rows in one common way:
each pruned model is run over the rows, and every decoder-layer linear's relative error ‖(W − Ŵ)X‖² / ‖WX‖² is
accumulated on the inputs X it sees in that pruned model (the quantity both tools minimise layer by layer), together
with the relative error of each decoder layer's output hidden state against the dense model's, on those rows and on
`--heldout-rows` rows of the same kind that no run calibrated on.

Set-up of the llm-compressor venv (it pins transformers 5.15-5.17):

    python -m venv .venv-llmc && .venv-llmc/bin/pip install torch==2.13.0 && .venv-llmc/bin/pip install "llmcompressor==0.14.*"

Run:

    python benchmarks/bench_vs_llmcompressor.py --shape qwen2-100m          # ~100M parameters, 64 x 512 tokens
    python benchmarks/bench_vs_llmcompressor.py --shape qwen2.5-0.5b        # the Qwen2.5-0.5B shape

Add `--ours-python .venv-llmc/bin/python` to run hf-ssgr (from `src/`) in llm-compressor's venv too: the same torch
and transformers for both, so the peak RSS compares the tools rather than what each venv imports (transformers
imports scikit-learn, scipy and pandas when they are installed, about 200 MiB more in hf-ssgr's test venv).

Prints Markdown tables and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHAPES = {
    # ~100M parameters in the decoder layers (126M with the tied 32k embedding)
    "qwen2-100m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=2,
                       intermediate_size=3072, vocab_size=32000, max_position_embeddings=4096,
                       tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768,
                         tie_word_embeddings=True),
    # a smoke test of the script itself
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=1000, max_position_embeddings=4096, tie_word_embeddings=True),
}  # fmt: skip


def status_mib(field: str) -> float:
    """A memory field of /proc/self/status in MiB: `VmRSS` now, `VmHWM` this process's own peak (`ru_maxrss` would
    carry the parent's RSS over the exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------------------------------------------------
# Inputs


def build_inputs(args, work: str) -> tuple[str, str, str]:
    """Save the seeded random-weight model (with a tokenizer, which llm-compressor wants), the calibration rows and
    `--heldout-rows` rows of the same kind that no run calibrates on."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, os.path.join(ROOT, "src"))
    from hf_ssgr.tiny_reasoner import build_tokenizer

    model_dir = os.path.join(work, "dense")
    calib = os.path.join(work, "calibration.jsonl")
    shape = SHAPES[args.shape]
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**shape)).to(getattr(torch, args.dtype)).eval()
    model.save_pretrained(model_dir)
    build_tokenizer().save_pretrained(model_dir)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, shape["vocab_size"], (args.rows, args.seq_len), generator=g)
    with open(calib, "w") as f:
        for row in ids.tolist():
            f.write(json.dumps({"input_ids": row}) + "\n")
    heldout = os.path.join(work, "heldout.jsonl")
    held = torch.randint(0, shape["vocab_size"], (args.heldout_rows, args.seq_len), generator=g)
    with open(heldout, "w") as f:
        for row in held.tolist():
            f.write(json.dumps({"input_ids": row}) + "\n")
    return model_dir, calib, heldout


# --------------------------------------------------------------------------------------------------------------------
# hf-ssgr worker (one process, or one of several under torchrun)


def ours(args) -> None:
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, os.path.join(ROOT, "src"))
    from hf_ssgr import OneShotPruner, PruningConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).eval()
    with open(args.calibration) as f:
        rows = [json.loads(line)["input_ids"] for line in f]
    before = status_mib("VmRSS")
    config = PruningConfig(
        method=args.method,
        sparsity=args.sparsity,
        sparsity_type=args.sparsity_type,
        reconstruction_error=args.module_error != "off",
        error_sample_tokens=0 if args.module_error == "exact" else PruningConfig.error_sample_tokens,
        gram_dtype=args.gram_dtype,
        chunk_size=args.chunk_size,
    )
    pruner = OneShotPruner(config, progress_bar=False)
    t0 = time.perf_counter()
    pruner.prune(model, rows)
    seconds = time.perf_counter() - t0
    state = pruner.state
    if state.is_world_process_zero:
        os.makedirs(args.save, exist_ok=True)
        save_file({n: p.detach().contiguous() for n, p in model.named_parameters()},
                  os.path.join(args.save, "model.safetensors"))  # fmt: skip
        metrics = state.module_metrics.values()
        with open(os.path.join(args.save, "result.json"), "w") as f:
            json.dump({"seconds": seconds, "peak_rss_mib": status_mib("VmHWM"), "rss_before_mib": before,
                       "solve_seconds": sum(m["seconds"] for m in metrics), "processes": state.world_size,
                       "threads": torch.get_num_threads(), "transformers_version": transformers.__version__,
                       "python": sys.executable}, f)  # fmt: skip


def run_ours(args, model_dir, calib, method, save, processes, gram_dtype="float32", chunk_size=4096) -> dict:
    cmd = ["--worker", "--model", model_dir, "--calibration", calib, "--method", method, "--save", save,
           "--sparsity", str(args.sparsity), "--sparsity-type", args.sparsity_type, "--dtype", args.dtype,
           "--gram-dtype", gram_dtype, "--chunk-size", str(chunk_size)]  # fmt: skip
    cmd += ["--module-error", args.module_error]
    env = dict(os.environ)
    python = args.ours_python or sys.executable
    if processes == 1:
        full = [python, os.path.abspath(__file__), *cmd]
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        full = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_port", str(port), os.path.abspath(__file__), *cmd]  # fmt: skip
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    t0 = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"hf-ssgr {method} ({processes} processes) failed:\n{proc.stderr[-4000:]}")
    with open(os.path.join(save, "result.json")) as f:
        result = json.load(f)
    result["process_seconds"] = time.perf_counter() - t0
    if processes > 1:  # every process holds the same peak; the machine holds their sum
        result["peak_rss_mib_note"] = "per process"
    return result


def run_llmc(args, model_dir, calib, method, save) -> dict:
    worker = os.path.join(HERE, "llmcompressor_worker.py")
    cmd = [args.llmc_python, worker, "--model", model_dir, "--calibration", calib, "--method", method,
           "--sparsity", str(args.sparsity), "--sparsity-type", args.sparsity_type, "--dtype", args.dtype,
           "--out", save]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"llm-compressor {method} failed:\n{proc.stderr[-4000:]}")
    with open(os.path.join(save, "result.json")) as f:
        result = json.load(f)
    result["process_seconds"] = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------------------------------------------------
# Common error measurement


def hidden_state_errors(model, ids, dense_states) -> list[float]:
    """Relative error ‖h − h_dense‖² / ‖h_dense‖² of every decoder layer's output (the last after the final norm)."""
    import torch

    num, den = {}, {}
    with torch.no_grad():
        for r, dense_h in zip(ids, dense_states):
            states = model(torch.tensor([r]), output_hidden_states=True).hidden_states[1:]
            for i, (h, d) in enumerate(zip(states, dense_h)):
                num[i] = num.get(i, 0.0) + float((h.float() - d.float()).pow(2).sum())
                den[i] = den.get(i, 0.0) + float(d.float().pow(2).sum())
    return [num[i] / den[i] for i in sorted(num)]


def measure_errors(model_dir, calib, heldout, results: dict[str, str], rows: int, dtype: str) -> dict[str, dict]:
    """Per decoder layer: mean relative error of its linears on their own inputs in each pruned model, and the
    relative error of the layer's output hidden state against the dense model's, on the first `rows` calibration
    rows; and the hidden-state errors on the held-out rows."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    dense = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    dense_w = {n: m.weight.detach().clone() for n, m in dense.named_modules() if isinstance(m, torch.nn.Linear)}
    with open(calib) as f:
        ids = [json.loads(line)["input_ids"] for _, line in zip(range(rows), f)]
    with open(heldout) as f:
        held_ids = [json.loads(line)["input_ids"] for line in f]
    with torch.no_grad():
        dense_states = [dense(torch.tensor([r]), output_hidden_states=True).hidden_states[1:] for r in ids]
        held_states = [dense(torch.tensor([r]), output_hidden_states=True).hidden_states[1:] for r in held_ids]
    out = {}
    for name, folder in results.items():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
        state = load_file(os.path.join(folder, "model.safetensors"))
        model.load_state_dict(state, strict=False)
        num, den, hooks = {}, {}, []
        for mod_name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in mod_name:
                w_dense = dense_w[mod_name]

                def hook(mod, inputs, output, mod_name=mod_name, w_dense=w_dense, num=num, den=den):
                    x = inputs[0].reshape(-1, inputs[0].shape[-1])
                    ref = (x @ w_dense.t()).float()
                    diff = (x @ (mod.weight - w_dense).t()).float()  # the bias cancels
                    num[mod_name] = num.get(mod_name, 0.0) + float(diff.pow(2).sum())
                    den[mod_name] = den.get(mod_name, 0.0) + float(ref.pow(2).sum())

                hooks.append(module.register_forward_hook(hook))
        layer_output_error = hidden_state_errors(model, ids, dense_states)
        for h in hooks:
            h.remove()
        heldout_error = hidden_state_errors(model, held_ids, held_states)
        per_layer: dict[int, list[float]] = {}
        for mod_name in num:
            layer = int(mod_name.split(".layers.")[1].split(".")[0])
            per_layer.setdefault(layer, []).append(num[mod_name] / den[mod_name])
        zeros = [
            float((p == 0).float().mean()) for n, p in state.items() if ".layers." in n and n.endswith("proj.weight")
        ]
        out[name] = {
            "module_error_per_layer": [sum(v) / len(v) for _, v in sorted(per_layer.items())],
            "mean_module_error": sum(num[m] / den[m] for m in num) / len(num),
            "layer_output_error": layer_output_error,
            "heldout_layer_output_error": heldout_error,
            "sparsity": sum(zeros) / len(zeros),
            "lm_head_changed": bool(
                "lm_head.weight" in state and not torch.equal(state["lm_head.weight"], dense.lm_head.weight)
            ),
        }
        del model
    return out


def compare_weights(folders: dict[str, str], methods: list[str]) -> dict[str, dict]:
    """How far every other run (llm-compressor, two processes, bfloat16 XᵀX, another chunk size) is from hf-ssgr's
    one-process float32 result: mask agreement over all decoder-layer weights and per layer. Layer 0 sees the same
    inputs in every run, so its agreement is what the solvers alone give; later layers add what earlier flips
    propagate."""
    from safetensors.torch import load_file

    out = {}
    for method in methods:
        one = folders.get(f"hf-ssgr {method}")
        if not one:
            continue
        a = load_file(os.path.join(one, "model.safetensors"))
        for variant, other in folders.items():
            if variant == f"hf-ssgr {method}" or not (variant.endswith(f" {method}") or f" {method} " in variant):
                continue
            b = load_file(os.path.join(other, "model.safetensors"))
            agree = total = 0
            diff = 0.0
            per_layer: dict[int, list[int]] = {}
            for key, wa in a.items():
                if ".layers." not in key or not key.endswith("proj.weight"):
                    continue
                wb = b[key]
                same = int(((wa == 0) == (wb == 0)).sum())
                layer = per_layer.setdefault(int(key.split(".layers.")[1].split(".")[0]), [0, 0])
                layer[0] += same
                layer[1] += wa.numel()
                agree += same
                total += wa.numel()
                diff = max(diff, float((wa.float() - wb.float()).abs().max()))
            out[variant] = {"mask_agreement": agree / total, "identical_masks": agree == total, "max_abs_diff": diff,
                            "mask_agreement_per_layer": [v[0] / v[1] for _, v in sorted(per_layer.items())]}  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="qwen2-100m", choices=sorted(SHAPES))
    parser.add_argument("--methods", nargs="+", default=["sparsegpt", "wanda"])
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--sparsity-type", default="unstructured")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--error-rows", type=int, default=8, help="rows used for the common error measurement")
    parser.add_argument("--heldout-rows", type=int, default=4, help="rows of the same kind that no run calibrates on")
    parser.add_argument(
        "--chunk-sizes",
        nargs="+",
        type=int,
        default=[4096],
        help="hf-ssgr runs with these chunk_size values (the first is the main run): another chunk size sums XᵀX "
        "in another order, the same algorithm with other float32 rounding, so its spread is the noise floor",
    )
    parser.add_argument("--llmc-python", default=os.path.join(ROOT, ".venv-llmc", "bin", "python"))
    parser.add_argument(
        "--ours-python",
        default=None,
        help="interpreter for the hf-ssgr runs (default: this one); pass the llm-compressor venv's python to run both "
        "tools on the same torch and transformers install, so that peak RSS compares the tools, not the venvs",
    )
    parser.add_argument("--no-llmc", action="store_true", help="skip llm-compressor")
    parser.add_argument("--no-distributed", action="store_true", help="skip the two-process run")
    parser.add_argument(
        "--module-error",
        default="default",
        choices=["default", "off", "exact"],
        help="hf-ssgr's own per-module error metric while pruning: its default (exact for SparseGPT, sampled for "
        "Wanda), off (llm-compressor records none), or exact for Wanda too (an XᵀX)",
    )
    parser.add_argument(
        "--gram-dtypes",
        nargs="+",
        default=["float32", "bfloat16"],
        choices=["float32", "bfloat16"],
        help="hf-ssgr SparseGPT runs: XᵀX products in float32 (the reference) and/or bfloat16",
    )
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--out", default=None)
    # worker mode
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--calibration", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--gram-dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--chunk-size", type=int, default=4096, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return ours(args)

    import tempfile

    work = args.workdir or tempfile.mkdtemp(prefix="bench_llmc_")
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    model_dir, calib, heldout = build_inputs(args, work)
    print(f"model and calibration saved in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    runs: dict[str, dict] = {}
    folders: dict[str, str] = {}
    for method in args.methods:
        gram_dtypes = args.gram_dtypes if method == "sparsegpt" else ["float32"]
        main_chunk = args.chunk_sizes[0]
        plan = [("hf-ssgr", 1, d, main_chunk) for d in gram_dtypes]
        if "float32" in gram_dtypes and not args.no_distributed:
            plan.insert(1, ("hf-ssgr", 2, "float32", main_chunk))
        plan += [("hf-ssgr", 1, "float32", c) for c in args.chunk_sizes[1:]]
        if not args.no_llmc:
            plan.insert(0, ("llm-compressor", 1, None, None))
        for tool, processes, gram_dtype, chunk in plan:
            name = f"{tool} {method}" + (f" x{processes}" if processes > 1 else "")
            name += " bf16-XᵀX" if gram_dtype == "bfloat16" else ""
            name += f" chunk{chunk}" if tool == "hf-ssgr" and chunk != main_chunk else ""
            save = os.path.join(work, name.replace(" ", "_").replace("ᵀ", "T"))
            if tool == "llm-compressor":
                runs[name] = run_llmc(args, model_dir, calib, method, save)
            else:
                runs[name] = run_ours(args, model_dir, calib, method, save, processes, gram_dtype, chunk)
            runs[name].update(tool=tool, method=method, processes=processes, gram_dtype=gram_dtype, chunk_size=chunk)
            folders[name] = save
            print(f"{name}: {runs[name]['seconds']:.1f} s", file=sys.stderr, flush=True)
    errors = measure_errors(model_dir, calib, heldout, folders, args.error_rows, args.dtype)
    for name in runs:
        runs[name].update(errors[name])
    equality = compare_weights(folders, args.methods)

    shape = SHAPES[args.shape]
    print(f"\n### Prune on CPU, side by side: {args.shape} (hidden {shape['hidden_size']}, "
          f"{shape['num_hidden_layers']} layers), {args.rows} x {args.seq_len} tokens, {args.dtype}, "
          f"{args.sparsity:g} {args.sparsity_type}, {os.cpu_count()} cores\n")  # fmt: skip
    print(
        "| run | prune s | vs llm-compressor | peak RSS MiB | mean module error | final hidden-state error, "
        "calibration rows | held-out rows | sparsity |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        ref = runs.get(f"llm-compressor {r['method']}")
        ratio = f"{r['seconds'] / ref['seconds']:.2f}x" if ref else "-"
        rss = f"{r['peak_rss_mib']:.0f}" + (" per process" if r["processes"] > 1 else "")
        print(f"| {name} | {r['seconds']:.1f} | {ratio} | {rss} | {r['mean_module_error']:.4f} | "
              f"{r['layer_output_error'][-1]:.4f} | {r['heldout_layer_output_error'][-1]:.4f} | "
              f"{r['sparsity']:.3f} |")  # fmt: skip
    print("\nHeld-out hidden-state error after each decoder layer (the last after the final norm):\n")
    print("| layer | " + " | ".join(runs) + " |")
    print("|---|" + "---|" * len(runs))
    for i in range(shape["num_hidden_layers"]):
        print(f"| {i} | " + " | ".join(f"{runs[n]['heldout_layer_output_error'][i]:.5f}" for n in runs) + " |")
    print("\nMean relative module error per decoder layer:\n")
    names = list(runs)
    print("| layer | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for i in range(shape["num_hidden_layers"]):
        print(f"| {i} | " + " | ".join(f"{runs[n]['module_error_per_layer'][i]:.4f}" for n in names) + " |")
    if equality:
        print("\nAgainst `hf-ssgr <method>` in one process, float32 XᵀX (pruned weights of the decoder layers):\n")
        print("| run | identical masks | mask agreement | layer 0 | last layer | max abs weight difference |")
        print("|---|---|---|---|---|---|")
        for variant, e in equality.items():
            layers = e["mask_agreement_per_layer"]
            print(f"| {variant} | {e['identical_masks']} | {e['mask_agreement']:.6f} | {layers[0]:.6f} | "
                  f"{layers[-1]:.6f} | {e['max_abs_diff']:.2e} |")  # fmt: skip
    out = args.out or os.path.join(HERE, "results", f"vs_llmcompressor_{args.shape}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
                   "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "model", "calibration",
                                "method", "save", "threads")},
                   "shape": shape, "runs": runs, "against_one_process_float32": equality}, f, indent=2)  # fmt: skip
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
