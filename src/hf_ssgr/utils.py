"""Small pieces every wing shares: atomic file and folder writes, library versions, the embedded model's names and the
name of `pruning_config.json`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

__all__ = [
    "PRUNING_CONFIG_NAME",
    "EMBEDDED_MODEL_NAMES",
    "EMBEDDED_MOE_NAMES",
    "dataclass_from_dict",
    "resolve_model",
    "check_model_path",
    "is_embedded_model",
    "library_versions",
    "write_text_atomically",
    "write_json_atomically",
    "write_folder_atomically",
]

PRUNING_CONFIG_NAME = "pruning_config.json"
EMBEDDED_MODEL_NAMES = ("tiny", "hf_ssgr:tiny", "embedded")
EMBEDDED_MOE_NAMES = ("tiny-moe", "hf_ssgr:tiny-moe")
_VERSIONED_PACKAGES = ("hf-ssgr", "torch", "transformers", "datasets", "accelerate", "huggingface-hub",
                       "safetensors", "lm_eval", "math-verify", "vllm")  # fmt: skip


def is_embedded_model(name: str | None) -> bool:
    """Whether `name` names an embedded tiny reasoner (`tiny`, `hf_ssgr:tiny` or `embedded`; `tiny-moe` for the
    mixture of experts)."""
    return name in EMBEDDED_MODEL_NAMES or name in EMBEDDED_MOE_NAMES


def resolve_model(name: str) -> str:
    """`tiny` (or `hf_ssgr:tiny`, `embedded`) names the embedded tiny reasoner's folder, `tiny-moe` its mixture of
    experts; anything else is returned as it is, a path or a Hub id."""
    if name in EMBEDDED_MOE_NAMES:
        from .tiny_reasoner import MOE_MODEL_PATH

        return MOE_MODEL_PATH
    if is_embedded_model(name):
        from .tiny_reasoner import MODEL_PATH

        return MODEL_PATH
    return name


def check_model_path(path: str) -> None:
    """Refuse, with a message that says so, a model path that is neither a local folder nor a reachable Hub id."""
    if os.path.isdir(path):
        return
    if os.path.exists(path):
        raise FileNotFoundError(f"Model path {path} is a file: pass the folder written by save_pretrained.")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path)
    except Exception as err:  # noqa: BLE001 - not a folder and not resolvable as a Hub id
        raise FileNotFoundError(
            f"Model path not found: {path!r} is not a local folder, and loading it from the Hub failed "
            f"({type(err).__name__}). Pass the folder of a saved model or a reachable Hub id."
        ) from err


def library_versions() -> dict[str, str]:
    """The installed versions of hf-ssgr and the libraries its results depend on (those that are installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in _VERSIONED_PACKAGES:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out


def write_text_atomically(path: str | os.PathLike, text: str) -> str:
    """Write `text` to `path` through a temporary sibling file and a rename: a reader sees the old file or the new
    one, never a part. The temporary name holds the process id, so processes writing the same file do not collide."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_json_atomically(path: str | os.PathLike, data: Any, **dump_kwargs) -> str:
    """`json.dump(data, indent=2, **dump_kwargs)` to `path`, atomically (see `write_text_atomically`)."""
    return write_text_atomically(path, json.dumps(data, indent=2, **dump_kwargs))


def write_folder_atomically(save_dir: str | os.PathLike, write: Callable[[str], Any]) -> str:
    """Run `write(tmp_dir)` into a temporary sibling folder, then move it to `save_dir`, replacing an old one: the
    folder exists only once complete, and a failed or killed write leaves the old one as it was."""
    save_dir = os.path.abspath(os.fspath(save_dir))
    parent = os.path.dirname(save_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(save_dir)}.tmp-", dir=parent)
    try:
        write(tmp)
        move_folder_into_place(tmp, save_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return save_dir


def move_folder_into_place(src: str, save_dir: str) -> str:
    """Rename the complete folder `src` to `save_dir` (a sibling), replacing an old `save_dir`: the old one is moved
    aside first and removed after, so `save_dir` is at every moment the old folder or the new one, or briefly absent."""
    save_dir = os.path.abspath(save_dir)
    parent = os.path.dirname(save_dir)
    if os.path.exists(save_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(save_dir)}.old-", dir=parent)
        os.rmdir(old)
        os.replace(save_dir, old)
        os.replace(src, save_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, save_dir)
    return save_dir


def dataclass_from_dict(cls, data: dict):
    """`cls(**data)` for a config dataclass, refusing unknown keys with the list of its fields."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} field(s) {unknown}: valid fields are {sorted(known)}.")
    return cls(**data)
