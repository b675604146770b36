"""Serving throughput of what pruning and FP8 buy: prefill and decode tokens/s at batch 1 and batch 32.

Five variants of one Qwen2-shaped model with random weights, every decoder linear (attention and MLP) replaced:

* `dense bf16`: the model as it is.
* `2:4 bf16 (dense kernels)`: magnitude-pruned to 2:4, served with the ordinary dense kernels (how vLLM serves a
  pruned checkpoint today: it removed its 2:4 kernels).
* `2:4 semi-structured`: the 2:4 weights through `torch.sparse.to_sparse_semi_structured` (cuSPARSELt / CUTLASS;
  CUDA only).
* `fp8 (torch._scaled_mm)`: FP8 E4M3 weights with per-output-channel scales and dynamic per-token FP8 activations,
  the compressed-tensors FP8_DYNAMIC scheme that `save_pruned(..., quantization="fp8")` exports, multiplied by
  `torch._scaled_mm` with row-wise scales.
* `2:4 + fp8`: the FP8 2:4 weights through cuSPARSELt (`torch._cslt_sparse_mm` with a per-channel alpha vector; CUDA
  only).

A variant whose kernel does not run on the device is reported as "not available on this device: <reason>", never as
a number. Prefill: one forward pass over `batch x prompt` tokens. Decode: `--decode-steps` single-token steps on the
KV cache after that prefill. Median of `--repeats` timed runs after a warm-up.

    python benchmarks/bench_serving.py                                   # tiny shapes, any CPU (shows it runs)
    python benchmarks/bench_serving.py --shape r1-distill-qwen-7b --device cuda --out benchmarks/measured/h100_serving

The ratios against dense are printed next to RAC's Table 6 (R1-Distill-14B served by vLLM on GPUs: dense 1426 tok/s,
RAC 2:4 whole model 1740 = 1.22x, RAC 2:4 + FP8 1823 = 1.28x).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

SHAPES = {
    "tiny": dict(hidden_size=256, num_hidden_layers=4, intermediate_size=1024, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024),
    # DeepSeek-R1-Distill-Qwen-7B (Qwen2): src/hf_ssgr/pruning/shapes/r1-distill-qwen-7b.json
    "r1-distill-qwen-7b": dict(hidden_size=3584, num_hidden_layers=28, intermediate_size=18944, num_attention_heads=28,
                               num_key_value_heads=4, vocab_size=152064),
}  # fmt: skip
RAC_TABLE6 = {"2:4 bf16 (dense kernels)": None, "2:4 semi-structured": 1.22, "2:4 + fp8": 1.28}
RAC_NOTE = "RAC Table 6: vLLM, R1-Distill-14B, 2:4 on the whole model 1740/1426 = 1.22x, 2:4 + FP8 1823/1426 = 1.28x"


def build(shape: str, device: str, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """A Qwen2 causal LM of `shape` with random weights, built directly on `device` in `dtype`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096, tie_word_embeddings=False)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def decoder_linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, linear) of every nn.Linear in the decoder layers (lm_head stays as it is)."""
    out = []
    for layer in model.model.layers:
        for parent in layer.modules():
            for attr, child in parent.named_children():
                if isinstance(child, nn.Linear):
                    out.append((parent, attr, child))
    return out


def prune_2of4(model: nn.Module) -> None:
    """Magnitude 2:4 on every decoder linear, with the library's pruner (no calibration needed)."""
    from hf_ssgr import OneShotPruner, PruningConfig

    OneShotPruner(PruningConfig(method="magnitude", sparsity=0.5, sparsity_type="2:4")).prune(model)


def fp8_rowwise(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E4M3 values and float32 scales (absmax / 448) along the last dimension."""
    scale = (t.abs().amax(-1, keepdim=True).float() / 448).clamp_min(1e-12)
    return (t.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn), scale


class Fp8Linear(nn.Module):
    """FP8_DYNAMIC linear: static per-output-channel FP8 weights, per-token FP8 activations, `torch._scaled_mm`."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w, s = fp8_rowwise(linear.weight.detach())
        self.register_buffer("weight_t", w.t())  # [in, out], column-major as _scaled_mm wants its second operand
        self.register_buffer("scale_b", s.t().contiguous())  # [1, out]
        self.bias = linear.bias
        self.out_dtype = linear.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xq, sx = fp8_rowwise(x.reshape(-1, shape[-1]))
        y = torch._scaled_mm(xq, self.weight_t, scale_a=sx, scale_b=self.scale_b, out_dtype=self.out_dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], -1)


class SparseFp8Linear(nn.Module):
    """2:4 FP8 weights compressed for cuSPARSELt; output scaled by the per-channel alpha vector and per-token scale."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w, s = fp8_rowwise(linear.weight.detach())
        self.register_buffer("compressed", torch._cslt_compress(w))
        self.register_buffer("alpha", s.reshape(-1).float())
        self.bias = linear.bias
        self.out_dtype = linear.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xq, sx = fp8_rowwise(x.reshape(-1, shape[-1]))
        y = torch._cslt_sparse_mm(self.compressed, xq.t(), alpha=self.alpha, out_dtype=self.out_dtype)  # [out, tokens]
        y = (y.t().float() * sx).to(self.out_dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], -1)


def to_semi_structured(model: nn.Module) -> None:
    from torch.sparse import to_sparse_semi_structured

    for _, _, lin in decoder_linears(model):
        lin.weight = nn.Parameter(to_sparse_semi_structured(lin.weight.detach()), requires_grad=False)


def replace_linears(model: nn.Module, cls) -> None:
    for parent, attr, lin in decoder_linears(model):
        setattr(parent, attr, cls(lin))


def check_close(variant: nn.Module, reference: nn.Module, vocab: int, device: str) -> float:
    """Relative error of the variant's logits against `reference` (a sanity check that the kernels compute it)."""
    ids = torch.randint(0, vocab, (2, 16), device=device)
    with torch.no_grad():
        a, b = variant(ids).logits.float(), reference(ids).logits.float()
    return float((a - b).norm() / b.norm())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_it(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def throughput(model: nn.Module, batch: int, prompt: int, steps: int, vocab: int, device: str, repeats: int):
    """(prefill tokens/s, decode tokens/s) at `batch`."""
    from transformers import DynamicCache

    ids = torch.randint(0, vocab, (batch, prompt), device=device)

    @torch.no_grad()
    def prefill():
        return model(ids, use_cache=True, past_key_values=DynamicCache())

    @torch.no_grad()
    def decode():
        out = prefill()
        cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            out = model(nxt, past_key_values=cache, use_cache=True)
            cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        sync(device)
        return time.perf_counter() - t

    t_prefill = time_it(prefill, device, repeats)
    decode()  # warm-up
    t_decode = statistics.median(decode() for _ in range(repeats))
    return batch * prompt / t_prefill, batch * steps / t_decode


def variants(dense: nn.Module, device: str):
    """(name, build) of the five variants; build returns the model or raises with the reason it cannot run."""
    pruned = copy.deepcopy(dense)
    prune_2of4(pruned)

    def semi():
        if not device.startswith("cuda"):
            raise RuntimeError(
                "torch.sparse.to_sparse_semi_structured runs on CUDA GPUs only (compute capability 8.0+)"
            )
        m = copy.deepcopy(pruned)
        to_semi_structured(m)
        return m

    def fp8():
        m = copy.deepcopy(dense)
        replace_linears(m, Fp8Linear)
        return m

    def sparse_fp8():
        if not device.startswith("cuda"):
            raise RuntimeError("2:4 x FP8 needs cuSPARSELt (torch._cslt_sparse_mm), CUDA only")
        m = copy.deepcopy(pruned)
        replace_linears(m, SparseFp8Linear)
        return m

    return [
        ("dense bf16", lambda: dense, dense),
        ("2:4 bf16 (dense kernels)", lambda: pruned, pruned),
        ("2:4 semi-structured", semi, pruned),
        ("fp8 (torch._scaled_mm)", fp8, dense),
        ("2:4 + fp8", sparse_fp8, pruned),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--prompt", type=int, default=None, help="prompt tokens per sequence (tiny 64, 7B 512)")
    ap.add_argument("--decode-steps", type=int, default=None, help="decode steps (tiny 16, 7B 64)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args()
    tiny = args.shape == "tiny"
    prompt = args.prompt or (64 if tiny else 512)
    steps = args.decode_steps or (16 if tiny else 64)
    batches = [int(b) for b in args.batches.split(",")]
    vocab = SHAPES[args.shape]["vocab_size"]
    dense = build(args.shape, args.device, torch.bfloat16)
    rows, notes = [], {}
    base: dict[int, tuple[float, float]] = {}
    for name, make, reference in variants(dense, args.device):
        try:
            model = make()
            error = check_close(model, reference, vocab, args.device) if model is not reference else 0.0
        except Exception as err:  # noqa: BLE001 - the reason a kernel is missing is the result
            notes[name] = f"not available on this device: {str(err).splitlines()[0][:200]}"
            print(f"{name}: {notes[name]}", flush=True)
            continue
        for batch in batches:
            prefill, decode = throughput(model, batch, prompt, steps, vocab, args.device, args.repeats)
            base.setdefault(batch, (prefill, decode))
            rows.append({"variant": name, "batch": batch, "prefill_tok_s": prefill, "decode_tok_s": decode,
                         "prefill_x": prefill / base[batch][0], "decode_x": decode / base[batch][1],
                         "rel_logit_error": error, "rac_table6_x": RAC_TABLE6.get(name)})  # fmt: skip
            print(f"{name} batch {batch}: prefill {prefill:.0f} tok/s, decode {decode:.1f} tok/s", flush=True)
        if model is not dense and model is not reference:
            del model
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    head = (f"Shape `{args.shape}` (random weights, bfloat16), {args.device} ({device_name}, torch {torch.__version__},"
            f" {torch.get_num_threads()} threads); prompt {prompt} tokens, {steps} decode steps; median of "
            f"{args.repeats}; load average {os.getloadavg()[0]:.1f} at the end.")  # fmt: skip
    lines = [head, "", "| variant | batch | prefill tok/s | decode tok/s | prefill vs dense | decode vs dense | "
             "RAC Table 6 | rel. logit error |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        rac = f"{r['rac_table6_x']:.2f}x" if r["rac_table6_x"] else "–"
        lines.append(f"| {r['variant']} | {r['batch']} | {r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.1f} | "
                     f"{r['prefill_x']:.2f}x | {r['decode_x']:.2f}x | {rac} | {r['rel_logit_error']:.4f} |")  # fmt: skip
    lines += [""] + [f"- {k}: {v}" for k, v in notes.items()]
    lines += ["", "rel. logit error: the variant's logits against the same weights run by the dense bf16 kernels (the "
              "FP8 rows include FP8 rounding; a check that each kernel computes the model).", "", RAC_NOTE]
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        with open(args.out + ".md", "w", encoding="utf-8") as f:
            f.write(text + "\n")
        with open(args.out + ".json", "w", encoding="utf-8") as f:
            json.dump({"setup": head, "rows": rows, "not_available": notes, "rac_table6": RAC_NOTE}, f, indent=2)


if __name__ == "__main__":
    main()
