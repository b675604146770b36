"""`hf-ssgr plan`: device and host peak memory, disk traffic and an estimated time of a pruning run, before renting.

```
hf-ssgr plan --model_name_or_path deepseek-r1 --num_samples 128 --seq_len 4096 --gpus 1,8 --gpu_memory_gb 80,141
hf-ssgr plan --model_config ./my-model/config.json --num_samples 64 --seq_len 2048 --mode streamed,in_memory
```

`--model_name_or_path` takes a local folder with a config.json, a shipped shape (r1-distill-qwen-7b,
r1-distill-llama-70b, qwen3-30b-a3b, qwen3-235b-a22b, deepseek-r1, gpt-oss-120b, or their Hub ids), or a Hub id
whose config.json is in the local Hugging Face cache; nothing is downloaded. Modes: `streamed` (`hf-ssgr prune`'s
default, one layer at a time from the shards), `in_memory` (`--stream false`: the model on the host, one layer on
the GPU), `on_device` (the whole model on the GPU). Every time is an estimate scaled from measured per-layer rates
(`hf_ssgr.pruning.memory.RATE_BASES`); "fits" means the device peak is at most 90% of the GPU's memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..pruning.config import PruningConfig
from ..pruning.memory import SHAPES_DIR
from .parser import CommandError, SsgrParser

__all__ = ["PlanArguments", "make_parser", "main", "SHAPES", "load_model_config", "plan_rows"]

# short name -> (shape file, display name); the file's `_name_or_path` is the Hub id it stands for
SHAPES = {
    "r1-distill-qwen-7b": ("r1-distill-qwen-7b.json", "R1-Distill-Qwen-7B"),
    "r1-distill-llama-70b": ("r1-distill-llama-70b.json", "R1-Distill-Llama-70B"),
    "qwen3-30b-a3b": ("qwen3-30b-a3b.json", "Qwen3-30B-A3B"),
    "qwen3-235b-a22b": ("qwen3-235b-a22b.json", "Qwen3-235B-A22B"),
    "deepseek-r1": ("deepseek-r1.json", "DeepSeek-R1"),
    "gpt-oss-120b": ("gpt-oss-120b.json", "gpt-oss-120b"),
}
MODES = ("streamed", "in_memory", "on_device")
FIT_FRACTION = 0.9  # of the GPU's memory: CUDA context, allocator fragmentation
# The one configuration a measured run backs (benchmarks/measured/h100_sparsegpt_7b_128x16k.json).
MEASURED = dict(shape="r1-distill-qwen-7b", rows=128, tokens=16384, gpus=1, gpu_gb=80.0, mode="on_device",
                method="sparsegpt", sparsity_type="unstructured", text="measured (in memory): 393 s, 40.3 GiB")  # fmt: skip


@dataclass
class PlanArguments:
    """Inputs of `hf-ssgr plan`."""

    model_name_or_path: str = field(
        default=None,
        metadata={
            "help": "A local folder with config.json, a shipped shape (e.g. r1-distill-qwen-7b) or a cached Hub id."
        },
    )
    model_config: str = field(default=None, metadata={"help": "A config.json file (instead of --model_name_or_path)."})
    num_samples: int = field(default=128, metadata={"help": "Calibration rows."})
    seq_len: int = field(default=4096, metadata={"help": "Tokens per calibration row (the longest)."})
    gpus: str = field(default="1", metadata={"help": "Comma-separated numbers of GPUs (processes), e.g. '1,8'."})
    gpu_memory_gb: str = field(default="80", metadata={"help": "Comma-separated GPU memories in GB, e.g. '80,141'."})
    mode: str = field(default="streamed", metadata={"help": f"Comma-separated modes: {', '.join(MODES)}."})
    dtype_bytes: int = field(default=2, metadata={"help": "Bytes per weight of the compute dtype (2: bf16)."})
    host_memory_gb: float = field(default=None, metadata={"help": "Host memory per node in GB (checked if given)."})
    disk_gbps: float = field(default=2.0, metadata={"help": "Assumed disk read and write bandwidth, GB/s."})


def make_parser() -> SsgrParser:
    return SsgrParser("hf-ssgr plan", [PlanArguments, PruningConfig], description=__doc__)


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise CommandError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise CommandError(f"{path} is not a config mapping.")
    return config


def load_model_config(name_or_path: str | None, config_file: str | None = None) -> tuple[dict, str, str | None]:
    """The model's config as a dict, its display name, and its shipped short name (if it is one). Never touches
    the network."""
    if config_file:
        if not os.path.isfile(config_file):
            raise CommandError(f"--model_config {config_file}: no such file.")
        config = _read_json(config_file)
        return config, config.get("_name_or_path") or os.path.basename(config_file), None
    if not name_or_path:
        raise CommandError("--model_name_or_path or --model_config is required.")
    key = name_or_path.lower().rstrip("/")
    for short, (file, display) in SHAPES.items():
        config = _read_json(os.path.join(SHAPES_DIR, file))
        if key in (short, config["_name_or_path"].lower()):
            return config, display, short
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, "config.json")
        if not os.path.isfile(path):
            raise CommandError(f"--model_name_or_path {name_or_path}: the folder has no config.json.")
        return _read_json(path), os.path.basename(os.path.abspath(name_or_path)), None
    if os.path.exists(name_or_path):
        return _read_json(name_or_path), os.path.basename(name_or_path), None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json")
    except Exception:  # noqa: BLE001 - not a valid repo id either
        cached = None
    if isinstance(cached, str) and os.path.isfile(cached):
        return _read_json(cached), name_or_path, None
    raise CommandError(
        f"--model_name_or_path {name_or_path!r} is not a local folder, not a shipped shape ({', '.join(SHAPES)}) and "
        "its config.json is not in the Hugging Face cache (plan never downloads): pass --model_config FILE.json."
    )


def _numbers(text: str, flag: str, kind=float) -> list:
    try:
        values = [kind(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise CommandError(f"--{flag} {text!r}: write comma-separated numbers, e.g. '1,8'.") from None
    if not values or any(v <= 0 for v in values):
        raise CommandError(f"--{flag} {text!r}: every value must be positive.")
    return values


def _size(num_bytes: float) -> str:
    gib = num_bytes / 1024**3
    return f"{gib:.0f}" if gib >= 100 else f"{gib:.1f}"


def _disk(num_bytes: float) -> str:
    return f"{num_bytes / 1e12:.2f} TB" if num_bytes >= 1e12 else f"{num_bytes / 1e9:.0f} GB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"~{seconds:.0f} s"
    if seconds < 7200:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def plan_rows(config: dict, display: str, short: str | None, args: PlanArguments, cfg: PruningConfig) -> list[dict]:
    """One row per (mode, GPUs, GPU memory): the estimate and what it rests on."""
    from ..pruning.memory import GIB, PlanAssumptions, estimate_prune_memory

    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise CommandError(f"--mode {args.mode!r}: use one or more of {', '.join(MODES)} (comma-separated).")
    if args.num_samples < 1 or args.seq_len < 1:
        raise CommandError("--num_samples and --seq_len must be at least 1.")
    gpus = _numbers(args.gpus, "gpus", int)
    memories = _numbers(args.gpu_memory_gb, "gpu_memory_gb")
    cpu = (cfg.device or "").startswith("cpu")
    if cpu:
        gpus, memories = [1], [args.host_memory_gb or 0.0]
    assumptions = PlanAssumptions(disk_read_gbps=args.disk_gbps, disk_write_gbps=args.disk_gbps)
    lm_head = "lm_head" in (cfg.targets or [])
    rows = []
    for mode in modes:
        for g in gpus:
            for mem in memories:
                try:
                    est = estimate_prune_memory(
                        config, args.num_samples, args.seq_len, dtype_bytes=args.dtype_bytes, method=cfg.method,
                        batch_size=cfg.batch_size, model_on_device=mode == "on_device",
                        offload_activations=cfg.offload_activations, restore_on_error=cfg.restore_on_error,
                        same_memory=cpu, chunk_size=cfg.chunk_size, error_sample_tokens=cfg.error_sample_tokens,
                        moe_statistics=cfg.moe_statistics, moe_stats_memory_gb=cfg.moe_stats_memory_gb,
                        expert_solve_batch=cfg.expert_solve_batch, streamed=mode == "streamed", world_size=g,
                        sparsity_type=cfg.sparsity_type, prune_lm_head=lm_head,
                        device_memory_gb=mem or None, assumptions=assumptions, gram_dtype=cfg.gram_dtype,
                    )  # fmt: skip
                except (TypeError, KeyError) as err:
                    raise CommandError(f"Cannot read the model shape from its config ({err}).") from None
                fits = "-" if cpu and not mem else "yes"
                if not cpu and est.device_bytes > FIT_FRACTION * mem * GIB:
                    fits = "no"
                host_limit = args.host_memory_gb or (mem if cpu else None)
                if host_limit and est.host_node_bytes > FIT_FRACTION * host_limit * GIB and fits != "no":
                    fits = "no (host)"
                moe = any("MoE" in n for n in est.notes)
                measured = MEASURED
                if (short == measured["shape"] and args.num_samples == measured["rows"] and not cpu
                        and args.seq_len == measured["tokens"] and g == measured["gpus"] and mem == measured["gpu_gb"]
                        and mode == measured["mode"] and cfg.method == measured["method"]
                        and cfg.sparsity_type == measured["sparsity_type"]):  # fmt: skip
                    basis = measured["text"]
                elif moe or g > 1:
                    why = (["MoE"] if moe else []) + ([f"{g} processes"] if g > 1 else [])
                    basis = f"extrapolated ({', '.join(why)})"
                else:
                    basis = "estimate"
                rows.append({"model": display, "mode": mode, "gpus": "cpu" if cpu else g,
                             "gpu_gb": mem, "estimate": est, "fits": fits, "basis": basis})  # fmt: skip
    return rows


HEADER = "| model | mode | GPUs | GPU GB | device peak GiB | host peak GiB / node | disk written | est. time | fits | basis |"


def format_row(row: dict) -> str:
    est = row["estimate"]
    mem = f"{row['gpu_gb']:g}" if row["gpu_gb"] else "-"
    return (
        f"| {row['model']} | {row['mode']} | {row['gpus']} | {mem} | {_size(est.device_bytes)} | "
        f"{_size(est.host_node_bytes)} | {_disk(est.disk_written_bytes)} | {_duration(est.seconds)} | "
        f"{row['fits']} | {row['basis']} |"
    )


def main(argv: list[str]) -> int:
    args, cfg = make_parser().parse(argv)
    config, display, short = load_model_config(args.model_name_or_path, args.model_config)
    rows = plan_rows(config, display, short, args, cfg)
    est = rows[0]["estimate"]
    fp8 = ", stored in FP8" if any("FP8" in t for t in est.terms) or _stored_fp8(config) else ""
    print(
        f"{display}: {est.params / 1e9:.1f}B parameters ({est.active_params / 1e9:.1f}B active{fp8}), "
        f"{args.num_samples} x {args.seq_len} calibration tokens, {cfg.method} {cfg.sparsity_type}. "
        "Times are estimates."
    )
    print()
    print(HEADER)
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(format_row(row))
    print()
    print(f"Disk read per process: {_disk(est.disk_read_bytes)}. Time basis: {est.time_basis}.")
    for note in dict.fromkeys(n for row in rows for n in row["estimate"].notes):
        print(f"- {note}")
    return 0


def _stored_fp8(config: dict) -> bool:
    q = config.get("quantization_config") or {}
    return q.get("quant_method") == "fp8" or q.get("format") == "float-quantized"
