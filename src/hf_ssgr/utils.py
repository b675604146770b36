"""Small pieces every wing shares: atomic file and folder writes, library versions, the embedded model's names and the
name of `pruning_config.json`.

Temporary folders (a folder being saved `.NAME.tmp-*`, an old copy being replaced `.NAME.old-*`, pruning backups
`hf_ssgr_backup_*`, temporary rollout stores `hf_ssgr_rollouts_*`) carry their owner in their name, `PID@HOST`. A run
killed before removing them leaves them behind; the next run on the same host removes those whose process is gone
(`remove_stale_folders`), and a destination left absent by a kill between the two renames of `move_folder_into_place`
is put back from its hidden old copy on the next save or load (`recover_folder`). Folders of other hosts, of live
processes and of versions that did not record their owner are never removed: they are named in a warning instead."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("hf_ssgr")

__all__ = [
    "PRUNING_CONFIG_NAME",
    "EMBEDDED_MODELS",
    "EMBEDDED_MODEL_NAMES",
    "EMBEDDED_MOE_NAMES",
    "EMBEDDED_VARIED_NAMES",
    "dataclass_from_dict",
    "resolve_model",
    "check_model_path",
    "is_embedded_model",
    "embedded_model",
    "library_versions",
    "write_text_atomically",
    "write_json_atomically",
    "write_folder_atomically",
    "check_output",
    "load_plugins",
    "hub_id",
    "public_name",
    "public_text",
    "scrub_local_paths",
    "disk_full",
    "disk_full_error",
    "parse_torch_dtype",
    "move_folder_into_place",
    "owned_temp_dir",
    "remove_stale_folders",
    "recover_folder",
    "load_tokenizer",
]

PRUNING_CONFIG_NAME = "pruning_config.json"
# The embedded tiny reasoners: the name recipes and the CLI use -> (every name it answers to, the attribute of
# `hf_ssgr.tiny_reasoner` that holds its folder, what it is).
EMBEDDED_MODELS = {
    "tiny": (("tiny", "hf_ssgr:tiny", "embedded"), "MODEL_PATH", "embedded tiny reasoner"),
    "tiny-moe": (("tiny-moe", "hf_ssgr:tiny-moe"), "MOE_MODEL_PATH", "embedded tiny mixture-of-experts reasoner"),
    "tiny-varied": (("tiny-varied", "hf_ssgr:tiny-varied"), "VARIED_MODEL_PATH",
                    "embedded tiny reasoner with varied chains of thought"),
}  # fmt: skip
EMBEDDED_MODEL_NAMES = EMBEDDED_MODELS["tiny"][0]
EMBEDDED_MOE_NAMES = EMBEDDED_MODELS["tiny-moe"][0]
EMBEDDED_VARIED_NAMES = EMBEDDED_MODELS["tiny-varied"][0]
_VERSIONED_PACKAGES = ("hf-ssgr", "torch", "transformers", "datasets", "accelerate", "huggingface-hub",
                       "safetensors", "lm_eval", "math-verify", "vllm")  # fmt: skip


def embedded_model(name: str | None) -> str | None:
    """The `EMBEDDED_MODELS` key of the embedded tiny reasoner `name` names (`tiny`, `hf_ssgr:tiny`, `embedded`;
    `tiny-moe`; `tiny-varied`), or None."""
    return next((key for key, (names, _, _) in EMBEDDED_MODELS.items() if name in names), None)


def is_embedded_model(name: str | None) -> bool:
    """Whether `name` names an embedded tiny reasoner (`tiny`, `hf_ssgr:tiny` or `embedded`; `tiny-moe` for the
    mixture of experts, `tiny-varied` for the reasoner whose chains of thought vary)."""
    return embedded_model(name) is not None


def resolve_model(name: str) -> str:
    """`tiny` (or `hf_ssgr:tiny`, `embedded`) names the embedded tiny reasoner's folder, `tiny-moe` its mixture of
    experts, `tiny-varied` the reasoner whose chains of thought vary; anything else is returned as it is, a path or a
    Hub id."""
    key = embedded_model(name)
    if key is None:
        return name
    from . import tiny_reasoner

    return getattr(tiny_reasoner, EMBEDDED_MODELS[key][1])


def check_model_path(path: str) -> None:
    """Refuse, with a message that says so, a model path that is neither a local folder nor a reachable Hub id."""
    if not os.path.exists(path):
        recover_folder(path)  # a save killed between its two renames leaves the folder hidden
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


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model",
                    "spiece.model", "sentencepiece.bpe.model", "tekken.json")  # fmt: skip


def load_tokenizer(path: str, required: bool = True):
    """The tokenizer saved with the model at `path` (a folder or a Hub id).

    transformers builds a tokenizer of one token from a model folder that holds none (its config names a tokenizer
    class, there is no vocabulary): that is refused here rather than used or written next to a pruned model.

    Args:
        path (`str`): the model's folder or Hub id.
        required (`bool`): raise when there is none (`ValueError`, naming the fix); otherwise warn and return `None`.
    """
    from transformers import AutoTokenizer

    problem = None
    if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES):
        problem = f"{path} holds no tokenizer files ({', '.join(_TOKENIZER_FILES[:2])}, ...)"
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as err:
            problem = f"no tokenizer could be loaded from {path} ({type(err).__name__}: {str(err).splitlines()[0]})"
        else:
            if len(tokenizer) > 1:
                return tokenizer
            problem = f"the tokenizer of {path} has {len(tokenizer)} token(s): its vocabulary is missing"
    if required:
        raise ValueError(f"No tokenizer: {problem}. Save the model's tokenizer into that folder "
                         "(tokenizer.save_pretrained), or pass one (tokenizer=...).")  # fmt: skip
    logger.warning("No tokenizer: %s; none is written next to the result. Save the tokenizer there, or copy it in "
                   "afterwards.", problem)  # fmt: skip
    return None


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


def check_output(path: str | os.PathLike, flag: str, kind: str = "folder") -> str:
    """Refuse, before any work, an output that cannot be written: a folder output that is an existing file (or a file
    output that is an existing folder), or a place where nothing can be created (a read-only file system, a folder
    without write permission), found by creating and removing a file there. Outputs are written beside their
    destination and renamed into place, so that is where it is tried. Returns the absolute path.

    Args:
        path: the output. flag: how the user named it, for the message (`"--save_dir"`, `"save_pruned(save_dir)"`).
        kind: `"folder"` or `"file"`.
    """
    full = os.path.abspath(os.fspath(path))
    if kind == "folder" and os.path.exists(full) and not os.path.isdir(full):
        raise FileExistsError(
            f"{flag} {path} is an existing file, not a folder: give a folder path (nothing was written)."
        )
    if kind == "file" and os.path.isdir(full):
        raise IsADirectoryError(f"{flag} {path} is an existing folder: give a file path (nothing was written).")
    where = os.path.dirname(full)
    while not os.path.exists(where):
        where = os.path.dirname(where)
    if not os.path.isdir(where):
        raise NotADirectoryError(f"{flag} {path}: {where} is a file, so nothing can be written under it.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".hf-ssgr-write-test-", dir=where)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise PermissionError(
            f"{flag} {path}: nothing can be written in {where} ({err.strerror}); choose a writable place (nothing "
            "was done)."
        ) from None
    return full


TORCH_DTYPES = ("auto", "bfloat16", "float16", "float32", "float64")


def parse_torch_dtype(name: str, flag: str = "torch_dtype"):
    """`"auto"`, or the torch dtype named by `name` (`"bfloat16"`, `"torch.float16"`, ...); anything else is refused
    with the valid names."""
    if name in (None, "auto"):
        return "auto"
    import torch

    key = str(name).replace("torch.", "")
    if key not in TORCH_DTYPES:
        raise ValueError(
            f"{flag} {name!r} is not a dtype a model can be loaded in: use one of {', '.join(TORCH_DTYPES)}."
        )
    return getattr(torch, key)


_HUB_CACHE = re.compile(r"(?:^|/)(?:models|datasets)--([^/]+)--([^/]+)/snapshots/[0-9a-f]+")
# an absolute or home path in free text: not part of a word, a number ("1/3") or a URL ("https://...")
_PATH_IN_TEXT = re.compile(r"(?<![\w.:/~-])(?:~|/)[^\s'\"`,;()\[\]{}<>|]*")


def hub_id(name: str | os.PathLike | None) -> str | None:
    """The Hub id `name` stands for: an `org/name` (or legacy bare `name`) that is no local path, or the id a Hub
    cache snapshot folder was downloaded as; `None` for anything else (a local folder, `unknown`)."""
    if name is None:
        return None
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    m = _HUB_CACHE.search(text)
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    local = os.path.exists(text) or text.startswith(("/", "~", "."))
    return text if not local and text != "unknown" and re.fullmatch(r"[\w.-]+(?:/[\w.-]+)?", text) else None


def public_name(name: str | os.PathLike | None) -> str | None:
    """A model, file or folder as a public record may name it: an embedded model by its name, a Hub cache snapshot
    by its Hub id, another absolute or home path by its last component (a relative path and a Hub id as they are).
    Nothing of the local file system (home, user, mount points) survives."""
    if name is None:
        return None
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    from . import tiny_reasoner

    for key, (_, attr, what) in EMBEDDED_MODELS.items():
        if os.path.abspath(text) == os.path.abspath(getattr(tiny_reasoner, attr)):
            return f"{key} (hf-ssgr's {what})"
    if _HUB_CACHE.search(text):
        return hub_id(text)
    if text.startswith(("/", "~")) or os.path.isabs(text) or text.startswith(".." + os.sep):
        return os.path.basename(text.rstrip("/" + os.sep)) or text.strip("/~") or "."
    return text


def public_text(text: str) -> str:
    """`text` (a command line, a message) with every absolute or home path in it replaced by `public_name` of it."""
    return _PATH_IN_TEXT.sub(lambda m: public_name(m.group(0)) if len(m.group(0)) > 1 else m.group(0), text)


def scrub_local_paths(value: Any) -> Any:
    """`value` (a record: dicts, lists, strings) with `public_text` applied to every string, keys included."""
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, dict):
        return {scrub_local_paths(k): scrub_local_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_local_paths(v) for v in value)
    return value


def disk_full(err: BaseException) -> bool:
    """Whether `err` says the disk is full (an `OSError` with ENOSPC, or safetensors' own error for it)."""
    import errno

    return (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in str(err)


def disk_full_error(where: str, needed_bytes: float | None, what: str) -> OSError:
    """The message for a write that ran out of space: where, how much it needs and how much is free."""
    import errno

    folder = where
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    free = shutil.disk_usage(folder or ".").free
    need = f"about {needed_bytes / 2**30:.2f} GiB are needed there and " if needed_bytes else ""
    return OSError(
        errno.ENOSPC, f"No space left on device writing {where}: {need}{free / 2**30:.2f} GiB are free. {what}"
    )


def _umask() -> int:
    """This process's umask (read without changing it where Linux tells it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_folder_atomically(
    save_dir: str | os.PathLike, write: Callable[[str], Any], needed_bytes: float | None = None
) -> str:
    """Run `write(tmp_dir)` into a temporary sibling folder, then move it to `save_dir`, replacing an old one: the
    folder exists only once complete, and a failed or killed write leaves the old one as it was. The folder gets the
    permissions the umask gives a new folder (as `save_pretrained`'s), not the temporary folder's 0700. An existing
    file at `save_dir` is refused (it is never replaced by the folder). A full disk is said as such, with
    `needed_bytes` (what the folder will take, where the caller knows it) and the free space."""
    save_dir = check_output(save_dir, "the output folder")
    parent = os.path.dirname(save_dir)
    os.makedirs(parent, exist_ok=True)
    recover_folder(save_dir)
    tmp = owned_temp_dir(f".{os.path.basename(save_dir)}.tmp-", parent)
    try:
        write(tmp)
        move_folder_into_place(tmp, save_dir)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(err):
            what = "Free some space and run it again (nothing was written)."
            raise disk_full_error(save_dir, needed_bytes, what) from None
        raise
    return save_dir


def move_folder_into_place(src: str, save_dir: str) -> str:
    """Rename the complete folder `src` to `save_dir` (a sibling), replacing an old `save_dir`: the old one is moved
    aside first and removed after, so `save_dir` is at every moment the old folder or the new one, or briefly absent."""
    save_dir = os.path.abspath(save_dir)
    parent = os.path.dirname(save_dir)
    os.chmod(src, 0o777 & ~_umask())  # a new folder's permissions, not the temporary folder's 0700
    if os.path.exists(save_dir) and not os.path.isdir(save_dir):
        raise FileExistsError(
            f"{save_dir} is an existing file, not a folder: it is not replaced (nothing was written)."
        )
    if os.path.exists(save_dir):
        old = owned_temp_dir(f".{os.path.basename(save_dir)}.old-", parent)
        os.rmdir(old)
        os.replace(save_dir, old)
        os.replace(src, save_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, save_dir)
    return save_dir


_OWNER = re.compile(r"(\d+)@(.+)-[A-Za-z0-9_]+")  # PID@HOST-<mkdtemp's random letters>


def owned_temp_dir(prefix: str, parent: str | None = None) -> str:
    """`tempfile.mkdtemp` with this process's `PID@HOST` after `prefix`, so a later run can tell whether the process
    that made it is gone (`remove_stale_folders`)."""
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}@{socket.gethostname()}-", dir=parent)


def _owner_gone(name: str, prefix: str) -> bool | None:
    """Whether the process that made the folder `name` (`prefix` + `PID@HOST-...`) has ended: `True` or `False` for a
    process of this host, `None` when that cannot be known (another host, or no owner recorded)."""
    m = _OWNER.fullmatch(name[len(prefix) :])
    if m is None or m.group(2) != socket.gethostname():
        return None
    pid = int(m.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


def remove_stale_folders(parent: str, prefix: str, what: str) -> list[str]:
    """Remove the folders `parent/prefix*` whose owning process (recorded by `owned_temp_dir`) has ended on this host,
    logging each; warn about the others whose owner is unknown (made by another host or an earlier version), with their
    paths. Folders of live processes are left alone. Returns the removed paths.

    Args:
        parent (`str`): the folder to look in.
        prefix (`str`): the names' prefix, e.g. `"hf_ssgr_backup_"`.
        what (`str`): what they are, for the messages (e.g. `"pruning backup"`).
    """
    removed, unknown = [], []
    try:
        names = sorted(n for n in os.listdir(parent) if n.startswith(prefix))
    except OSError:
        return removed
    for name in names:
        path = os.path.join(parent, name)
        if not os.path.isdir(path):
            continue
        gone = _owner_gone(name, prefix)
        if gone:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            logger.info("Removed %s, a %s left by an ended run.", path, what)
        elif gone is None:
            unknown.append(path)
    if unknown:
        logger.warning(
            "%d %s folder(s) of runs that may have been interrupted (made on another host or by an earlier version, "
            "so hf-ssgr cannot tell whether they are in use): %s. Delete them once no run uses them.",
            len(unknown), what, ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else ""),
        )  # fmt: skip
    return removed


def recover_folder(path: str | os.PathLike) -> bool:
    """Clean up after saves of the folder `path` killed part way, before saving or loading it: put back its hidden old
    copy (`.NAME.old-*`) when a kill between the two renames of `move_folder_into_place` left `path` absent, and
    remove the partial `.NAME.tmp-*` and old `.NAME.old-*` folders of ended processes. Returns whether it put a copy
    back (warned)."""
    path = os.path.abspath(os.fspath(path))
    parent, base = os.path.dirname(path), os.path.basename(path)
    if not base or not os.path.isdir(parent):
        return False
    recovered = False
    old_prefix = f".{base}.old-"
    if not os.path.exists(path):
        olds = [n for n in sorted(os.listdir(parent)) if n.startswith(old_prefix) and _owner_gone(n, old_prefix)]
        if olds:
            os.replace(os.path.join(parent, olds[-1]), path)
            recovered = True
            logger.warning(
                "%s was absent: a save that replaced it was interrupted between moving the old copy aside and moving "
                "the new one in. Its old copy %s was put back.", path, os.path.join(parent, olds[-1]),
            )  # fmt: skip
    remove_stale_folders(parent, f".{base}.tmp-", f"partial save of {base}")
    remove_stale_folders(parent, old_prefix, f"replaced copy of {base}")
    return recovered


def load_plugins(group: str, add: Callable[[Any], None]) -> None:
    """Load every entry point of `group` and hand what it loads to `add` (which registers it, or raises to refuse
    it); a plug-in that fails to load or is refused is warned about and skipped, never stopping the built-ins."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=group):
        try:
            add(entry.load())
        except Exception as err:  # noqa: BLE001 - a broken plug-in must not stop the built-in ones
            logger.warning("The %s entry point %r could not be loaded: %s", group, entry.name, err)


def dataclass_from_dict(cls, data: dict):
    """`cls(**data)` for a config dataclass, refusing unknown keys with the list of its fields."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} field(s) {unknown}: valid fields are {sorted(known)}.")
    return cls(**data)
