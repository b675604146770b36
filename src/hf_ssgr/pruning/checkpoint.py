"""Checkpoints of a pruning run and the backups that undo a failed one.

A checkpoint `checkpoint-layer-XXX/` holds the pruned weights of the layers finished since the previous checkpoint
(`model.safetensors`), the [`PrunerState`] and the [`PruningConfig`]. It is written through a temporary folder and a
rename, so a directory with that name is always complete. Resuming loads every checkpoint up to the chosen one into a
dense model; the pruner then replays the finished layers to rebuild their activations.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator

import torch
from torch import nn

from ..utils import PRUNING_CONFIG_NAME, owned_temp_dir, remove_stale_folders, write_folder_atomically
from .callbacks import PRUNER_STATE_NAME, PrunerState
from .config import PruningConfig

__all__ = ["CHECKPOINT_PREFIX", "WEIGHTS_NAME", "WeightBackup", "save_checkpoint", "list_checkpoints",
           "find_checkpoint", "load_checkpoints"]  # fmt: skip

CHECKPOINT_PREFIX = "checkpoint-layer-"
WEIGHTS_NAME = "model.safetensors"


class WeightBackup:
    """The original weights modified so far, keyed by parameter name (a fused experts parameter whole), written to a
    temporary folder rather than kept in memory (the pruned weights of a 7B model are 13 GB), to put back if the run
    fails. Removed when the run ends; the folders of killed runs (`hf_ssgr_backup_PID@HOST-*` in the temporary
    directory) are removed by the next run on the host whose process is gone."""

    PREFIX = "hf_ssgr_backup_"

    def __init__(self):
        self._dir: str | None = None
        self._files: dict[str, str] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def __len__(self) -> int:
        return len(self._files)

    def __setitem__(self, name: str, weight: torch.Tensor) -> None:
        from safetensors.torch import save_file

        if self._dir is None:
            remove_stale_folders(tempfile.gettempdir(), self.PREFIX, "pruning backup")
            self._dir = owned_temp_dir(self.PREFIX)
        path = os.path.join(self._dir, f"{len(self._files):06d}.safetensors")
        save_file({"weight": weight.detach().to("cpu").contiguous()}, path)
        self._files[name] = path

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        from safetensors.torch import load_file

        for name, path in self._files.items():
            yield name, load_file(path)["weight"]

    def restore(self, model: nn.Module) -> int:
        """Put every backed-up weight back into `model`; returns how many."""
        params = dict(model.named_parameters(remove_duplicate=False))
        for name, tensor in self.items():
            params[name].data.copy_(tensor.to(params[name].device))
        return len(self)

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir, self._files = None, {}


def save_checkpoint(output_dir: str, layer_index: int, weights: dict[str, torch.Tensor], layers: list[int],
                    state: PrunerState, config: PruningConfig) -> str:  # fmt: skip
    """Write `checkpoint-layer-{layer_index:03d}/` with `weights` (of the decoder `layers` finished since the last
    checkpoint), the state and the config; returns its path."""
    from safetensors.torch import save_file

    def write(folder: str) -> None:
        save_file(weights, os.path.join(folder, WEIGHTS_NAME), metadata={"layers": json.dumps(layers)})
        state.save_to_json(os.path.join(folder, PRUNER_STATE_NAME))
        with open(os.path.join(folder, PRUNING_CONFIG_NAME), "w", encoding="utf-8") as f:
            f.write(config.to_json_string())

    return write_folder_atomically(os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{layer_index:03d}"), write)


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in `output_dir`, as `(layer_index, path)` sorted by layer."""
    found = []
    for path in glob.glob(os.path.join(output_dir, f"{CHECKPOINT_PREFIX}*")):
        m = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", os.path.basename(path))
        if m and os.path.isfile(os.path.join(path, PRUNER_STATE_NAME)):
            found.append((int(m.group(1)), path))
    return sorted(found)


def find_checkpoint(resume_from_checkpoint: str | bool, output_dir: str | None) -> str:
    """The checkpoint folder to resume from: the given path, or with `True` the latest one in `output_dir`."""
    if resume_from_checkpoint is True:
        if not output_dir:
            raise ValueError("resume_from_checkpoint=True needs config.output_dir to look for checkpoints.")
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            raise ValueError(f"No checkpoint-layer-XXX directory in {output_dir} to resume from.")
        return checkpoints[-1][1]
    path = str(resume_from_checkpoint)
    if not os.path.isfile(os.path.join(path, PRUNER_STATE_NAME)):
        raise ValueError(f"{path} is not a pruning checkpoint (no {PRUNER_STATE_NAME}).")
    return path


def load_checkpoints(path: str, model: nn.Module, config: PruningConfig, fingerprint: str | None,
                     backup: WeightBackup | None = None) -> PrunerState:  # fmt: skip
    """Check that the checkpoint at `path` was made with the same numerics and calibration data, load it and every
    earlier checkpoint of its folder into `model` (backing up what they overwrite), and return its state."""
    from safetensors.torch import load_file

    with open(os.path.join(path, PRUNING_CONFIG_NAME), encoding="utf-8") as f:
        saved_cfg = PruningConfig.from_dict(json.load(f))
    now = config.numerics_dict()
    if saved_cfg.numerics_dict() != now:
        diff = {k: (v, now[k]) for k, v in saved_cfg.numerics_dict().items() if now[k] != v}
        raise ValueError(f"Cannot resume from {path}: its pruning config differs (saved, now): {diff}.")
    saved = PrunerState.load_from_json(os.path.join(path, PRUNER_STATE_NAME))
    if saved.calibration_fingerprint != fingerprint:
        raise ValueError(f"Cannot resume from {path}: it was made with different calibration data.")
    params = dict(model.named_parameters())
    for index, checkpoint in list_checkpoints(os.path.dirname(os.path.abspath(path))):
        if index > saved.layer_index:
            continue
        for key, tensor in load_file(os.path.join(checkpoint, WEIGHTS_NAME)).items():
            if key not in params:
                raise ValueError(f"Checkpoint {checkpoint} holds {key}, which this model does not have.")
            if backup is not None and key not in backup:
                backup[key] = params[key]
            params[key].data.copy_(tensor.to(params[key].device))
    return saved
