"""Run by `torchrun --nproc_per_node 2` from test_distributed.py: prunes the scenarios named in a JSON file and saves
every process's weights and metrics, so the test can compare them with each other and with one process."""

import json
import os
import sys

import torch
from safetensors.torch import save_file
from testing_utils import make_calibration, make_tiny_model, make_tiny_moe

from hf_ssgr import OneShotPruner, PruningConfig
from hf_ssgr.distributed import Distributed
from hf_ssgr.pruning.callbacks import PrunerCallback


def build(spec):
    make = make_tiny_moe if spec.get("moe") else make_tiny_model
    model = make(spec["arch"], num_layers=spec.get("num_layers", 3), seed=spec.get("seed", 0))
    rows = make_calibration(spec.get("num_rows", 7), spec.get("seq_len", 24), ragged=spec.get("ragged", True))
    if spec.get("prompt_length"):
        rows = [{"input_ids": r, "prompt_length": spec["prompt_length"]} for r in rows]
    return model, rows


class StopOnRank(PrunerCallback):
    """Stops the run after `layer` on one process only (the others must stop with it)."""

    def __init__(self, rank, layer):
        self.rank, self.layer = rank, layer

    def on_layer_end(self, config, state, control, **kwargs):
        if Distributed.current().rank == self.rank and kwargs["layer_index"] == self.layer:
            control.should_stop = True
        return control


def calibrate(spec, out, name):
    """SSGR calibration from the embedded tiny reasoner, the problems sharded across processes."""
    from hf_ssgr import CalibrationConfig, SSGRCalibrator
    from hf_ssgr.tiny_reasoner import MODEL_PATH

    dist = Distributed.current()
    calibrator = SSGRCalibrator(CalibrationConfig(**spec["config"]))
    data = calibrator.build(spec.get("model", MODEL_PATH), spec.get("source", "tiny-arith"))
    result = {"rows": data.to_dict(), "counts": calibrator.report.counts, "engine_env": calibrator._engine_env}
    with open(os.path.join(out, f"{name}-rank{dist.rank}.json"), "w") as f:
        json.dump(result, f)


def run(spec, out, name):
    if spec.get("kind") == "calibrate":
        return calibrate(spec, out, name)
    dist = Distributed.current()
    model, rows = build(spec)
    config = PruningConfig(**spec["config"])
    result = {"rank": dist.rank, "world_size": dist.world_size}
    if spec.get("stop_after") is not None:
        config.output_dir = os.path.join(out, name + "-ckpt")
        pruner = OneShotPruner(config, callbacks=[StopOnRank(1, spec["stop_after"])], progress_bar=False)
        pruner.prune(model, rows)
        result["stopped_at"] = pruner.state.layer_index
        model, rows = build(spec)  # a fresh dense model, as after a crash
        pruner = OneShotPruner(config, progress_bar=False)
        pruner.prune(model, rows, resume_from_checkpoint=True)
    else:
        pruner = OneShotPruner(config, progress_bar=False)
        try:
            pruner.prune(model, rows)
        except ValueError as exc:
            result["error"] = str(exc)
    result["num_tokens"] = pruner.state.num_tokens
    result["state_world_size"] = pruner.state.world_size
    result["is_world_process_zero"] = pruner.state.is_world_process_zero
    result["metrics"] = pruner.state.module_metrics
    weights = {n: p.detach().contiguous() for n, p in model.named_parameters()}
    save_file(weights, os.path.join(out, f"{name}-rank{dist.rank}.safetensors"))
    with open(os.path.join(out, f"{name}-rank{dist.rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    out, spec_file = sys.argv[1], sys.argv[2]
    with open(spec_file) as f:
        specs = json.load(f)
    torch.set_num_threads(1)
    for name, spec in specs.items():
        run(spec, out, name)
    Distributed.current().barrier()
