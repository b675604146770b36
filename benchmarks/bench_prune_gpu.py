"""GPU checks and timings of `OneShotPruner` (needs a CUDA device).

Three parts, each optional:

* `--check`: the pruner on CUDA against the pruner on CPU, for every method, on a small random Qwen2 in float32:
  mask agreement and largest weight difference. Also the streaming set-up for big models (model on the CPU,
  `device="cuda"`, `offload_activations=True`), which must give the same weights as the all-GPU run.
* `--scale`: a DeepSeek-R1-Distill-Qwen-7B-shaped model with random weights (Qwen2Config: hidden 3584, 28 layers,
  intermediate 18944, 28/4 heads, vocab 152064) in bfloat16 on the GPU, `--rows` × `--seq-len` random calibration
  tokens, one method: time per phase (capture, statistics, solves, propagation) and peak GPU memory.
* `--semi-structured`: speed of 2:4 linear layers through `torch.sparse.to_sparse_semi_structured` against dense,
  at the 7B model's shapes.

    python benchmarks/bench_prune_gpu.py --check --scale --rows 128 --seq-len 16384 --semi-structured

Prints Markdown tables and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from hf_ssgr import OneShotPruner, PrunerCallback, PruningConfig  # noqa: E402

R1_DISTILL_QWEN_7B = dict(
    hidden_size=3584,
    num_hidden_layers=28,
    intermediate_size=18944,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    max_position_embeddings=131072,
    rope_theta=10000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)


def qwen2(device, dtype, seed=0, **kwargs):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(**kwargs)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build directly in the target dtype: no float32 copy of a 7B model
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config).to(dtype)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def linear_weights(model):
    return {n: m.weight.detach().float().cpu() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def check(results):
    small = dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=512,
        max_position_embeddings=1024,
    )
    g = torch.Generator().manual_seed(1)
    calib = [torch.randint(0, 512, (256,), generator=g).tolist() for _ in range(8)]
    rows = []
    for method in ("magnitude", "wanda", "sparsegpt", "alps"):
        for pattern in ("unstructured", "2:4"):
            outs = {}
            for where in ("cpu", "cuda", "stream"):
                model = qwen2("cpu", torch.float32, **small)  # same weights everywhere (CPU RNG)
                if where == "cuda":
                    model.to("cuda")
                cfg = PruningConfig(
                    method=method,
                    sparsity=0.5,
                    sparsity_type=pattern,
                    device="cuda" if where == "stream" else None,
                    offload_activations=where == "stream",
                )
                t0 = time.perf_counter()
                pruner = OneShotPruner(cfg, progress_bar=False)
                pruner.prune(model, calib)
                torch.cuda.synchronize()
                errors = [m["error"] for m in pruner.state.module_metrics.values()]
                outs[where] = (linear_weights(model), time.perf_counter() - t0, sum(errors) / len(errors))
                if where == "stream":
                    assert next(model.parameters()).device.type == "cpu", "layers must go back to the CPU"
            ref = outs["cpu"][0]
            for where in ("cuda", "stream"):
                w = outs[where][0]
                agree = sum(int(((w[n] == 0) == (ref[n] == 0)).sum()) for n in ref) / sum(ref[n].numel() for n in ref)
                diff = max(float((w[n] - ref[n]).abs().max()) for n in ref)
                same_as_gpu = all(torch.equal(w[n], outs["cuda"][0][n]) for n in ref)
                rows.append(
                    dict(
                        method=method,
                        pattern=pattern,
                        run=where,
                        mask_agreement=agree,
                        max_abs_diff=diff,
                        identical_to_all_gpu=same_as_gpu,
                        seconds=outs[where][1],
                        cpu_seconds=outs["cpu"][1],
                        mean_error=outs[where][2],
                        cpu_mean_error=outs["cpu"][2],
                    )
                )
    print("\n### CUDA vs CPU (3-layer Qwen2, hidden 256, fp32, 8 x 256 tokens)\n")
    print(
        "| method | pattern | run | mask agreement | max abs diff | identical to all-GPU | mean err | CPU mean err "
        "| s | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['pattern']} | {r['run']} | {r['mask_agreement']:.5f} | {r['max_abs_diff']:.2e} "
            f"| {r['identical_to_all_gpu']} | {r['mean_error']:.5f} | {r['cpu_mean_error']:.5f} "
            f"| {r['seconds']:.2f} | {r['cpu_seconds']:.2f} |"
        )
    results["check"] = rows


class PhaseTimer(PrunerCallback):
    """Wall time per phase, with CUDA synchronisation at every boundary."""

    def __init__(self, log_path=None):
        self.t = time.perf_counter()
        self.phases = {"capture": 0.0, "stats": 0.0, "solve": 0.0, "propagate": 0.0}
        self.layers = []
        self.log_path = log_path

    def _lap(self):
        torch.cuda.synchronize()
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt

    def on_prune_begin(self, config, state, control, **kwargs):
        self.phases["capture"] += self._lap()

    def on_layer_begin(self, config, state, control, **kwargs):
        self._lap()
        self.current = {"layer": kwargs["layer_index"]}

    def on_stats_collected(self, config, state, control, **kwargs):
        self.current["stats"] = self._lap()

    def on_layer_end(self, config, state, control, **kwargs):
        rest = self._lap()
        solve = sum(m["seconds"] for m in (kwargs.get("layer_metrics") or {}).values())
        self.current["solve"] = solve
        self.current["propagate"] = rest - solve
        self.current["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        for k in ("stats", "solve", "propagate"):
            self.phases[k] += self.current.get(k, 0.0)
        self.layers.append(self.current)
        line = json.dumps(self.current)
        print(line, flush=True)
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(line + "\n")


def scale(args, results):
    shape = dict(R1_DISTILL_QWEN_7B)
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = qwen2("cpu" if args.stream else "cuda", torch.bfloat16, **shape)
    torch.cuda.synchronize()
    build = time.perf_counter() - t0
    model_gib = torch.cuda.memory_allocated() / 2**30
    g = torch.Generator().manual_seed(0)
    calib = torch.randint(0, shape["vocab_size"], (args.rows, args.seq_len), generator=g)
    timer = PhaseTimer(os.path.join(args.out_dir, "scale_layers.jsonl") if args.out_dir else None)
    cfg = PruningConfig(
        method=args.method,
        sparsity=0.5,
        sparsity_type=args.sparsity_type,
        device="cuda" if args.stream else None,
        offload_activations=args.stream,
    )
    torch.cuda.reset_peak_memory_stats()
    timer.t = time.perf_counter()
    start = timer.t
    pruner = OneShotPruner(cfg, callbacks=[timer], progress_bar=False)
    pruner.prune(model, calib)
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    errors = [m["error"] for m in pruner.state.module_metrics.values()]
    import resource

    row = dict(
        method=args.method,
        pattern=args.sparsity_type,
        stream=args.stream,
        peak_host_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        layers=shape["num_hidden_layers"],
        rows=args.rows,
        seq_len=args.seq_len,
        build_s=build,
        model_gib=model_gib,
        total_s=total,
        peak_gib=torch.cuda.max_memory_allocated() / 2**30,
        mean_error=sum(errors) / len(errors),
        **{f"{k}_s": v for k, v in timer.phases.items()},
        per_layer=timer.layers,
    )
    where = "model and activations on the CPU, one layer at a time on the GPU" if args.stream else "all on the GPU"
    print(
        f"\n### {args.method} {args.sparsity_type}, R1-Distill-Qwen-7B shape ({row['layers']} layers), "
        f"{args.rows} x {args.seq_len} tokens, bf16, {where}, {torch.cuda.get_device_name()}\n"
    )
    print(
        "| total s | capture s | stats s | solve s | propagate s | peak GPU GiB | model GiB on GPU | peak host RSS GiB "
        "| mean rel. error |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {total:.1f} | {row['capture_s']:.1f} | {row['stats_s']:.1f} | {row['solve_s']:.1f} | "
        f"{row['propagate_s']:.1f} | {row['peak_gib']:.1f} | {model_gib:.1f} | {row['peak_host_rss_gib']:.1f} "
        f"| {row['mean_error']:.4f} |"
    )
    results.setdefault("scale", []).append(row)
    del model, pruner
    torch.cuda.empty_cache()


def semi_structured(args, results):
    from torch.sparse import to_sparse_semi_structured

    h, i = R1_DISTILL_QWEN_7B["hidden_size"], R1_DISTILL_QWEN_7B["intermediate_size"]
    kv = h // R1_DISTILL_QWEN_7B["num_attention_heads"] * R1_DISTILL_QWEN_7B["num_key_value_heads"]
    shapes = {"q_proj/o_proj": (h, h), "k_proj/v_proj": (kv, h), "gate_proj/up_proj": (i, h), "down_proj": (h, i)}
    rows = []
    for tokens in args.tokens:
        for name, (out_f, in_f) in shapes.items():
            w = torch.randn(out_f, in_f, device="cuda", dtype=torch.bfloat16)
            mask = torch.tensor([0, 0, 1, 1], device="cuda", dtype=torch.bool).tile(out_f, in_f // 4)
            w = w * mask
            x = torch.randn(tokens, in_f, device="cuda", dtype=torch.bfloat16)
            try:
                ws = to_sparse_semi_structured(w)
            except Exception as err:  # noqa: BLE001 - report whatever the backend says
                rows.append(dict(tokens=tokens, module=name, error=str(err)[:200]))
                continue

            def bench(fn, reps=20):
                for _ in range(3):
                    fn()
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(reps):
                    fn()
                torch.cuda.synchronize()
                return (time.perf_counter() - t) / reps * 1e3

            dense_ms = bench(lambda x=x, w=w: torch.nn.functional.linear(x, w))
            sparse_ms = bench(lambda x=x, ws=ws: torch.nn.functional.linear(x, ws))
            err = float((torch.nn.functional.linear(x, ws) - torch.nn.functional.linear(x, w)).abs().max())
            rows.append(
                dict(
                    tokens=tokens,
                    module=name,
                    shape=[out_f, in_f],
                    dense_ms=dense_ms,
                    sparse_ms=sparse_ms,
                    speedup=dense_ms / sparse_ms,
                    max_abs_diff=err,
                )
            )
    print("\n### 2:4 semi-structured linear vs dense (bf16, R1-Distill-Qwen-7B shapes)\n")
    print("| tokens | module | shape | dense ms | 2:4 ms | speed-up |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['tokens']} | {r['module']} | - | - | - | failed: {r['error']} |")
        else:
            print(
                f"| {r['tokens']} | {r['module']} | {r['shape']} | {r['dense_ms']:.3f} | {r['sparse_ms']:.3f} "
                f"| {r['speedup']:.2f}x |"
            )
    results["semi_structured"] = rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--semi-structured", action="store_true")
    parser.add_argument("--method", default="sparsegpt")
    parser.add_argument("--sparsity-type", default="unstructured")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=16384)
    parser.add_argument("--layers", type=int, default=None, help="fewer decoder layers than the real 28")
    parser.add_argument(
        "--stream",
        action="store_true",
        help="keep the model and the cached activations on the CPU; move one layer at a time to the GPU",
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[16384])
    parser.add_argument("--out", default="benchmarks/results/prune_gpu.json")
    parser.add_argument("--out-dir", default=None, help="also append per-layer lines to OUT_DIR/scale_layers.jsonl")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_prune_gpu.py needs a CUDA device.")
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "args": vars(args)}
    if args.check:
        check(results)
    if args.semi_structured:
        semi_structured(args, results)
    if args.scale:
        scale(args, results)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
