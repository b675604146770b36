"""Saving and sharing a pruned model or a calibration Dataset.

* `save_pruned` writes a folder that loads with plain `AutoModelForCausalLM.from_pretrained`: safetensors weights
  with exact zeros, the tokenizer, `pruning_config.json` (see `pruning_metadata`) and a model card (`README.md`).
  It writes into a temporary sibling folder and renames it into place, so a crash leaves no half-written checkpoint.
* `push_to_hub` / `push_calibration_to_hub` make one commit each: create the repo (`exist_ok`), save everything to a
  temporary folder, `upload_folder`. They run on the main process only, and check the token before any work.

No token is ever written: cards, configs and logs are built from the model, the config and the reports only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile

from ..utils import public_text, scrub_local_paths, write_folder_atomically
from .cards import calibration_card, model_card
from .files import write_checkpoint_files
from .metadata import pruning_metadata, sparsity_description

logger = logging.getLogger("hf_ssgr")

__all__ = ["save_pruned", "push_to_hub", "push_calibration_to_hub"]


def _pruning_of(pruner, config, module_metrics, model=None):
    """The config and module metrics of a prune: given (`config=`, `module_metrics=`), from the pruner, or from the
    record `OneShotPruner.prune` leaves on the model, in that order; refused when none says it."""
    if pruner is not None:
        return config or pruner.config, module_metrics or pruner.state.module_metrics
    record = getattr(model, "hf_ssgr_pruning", None) if model is not None else None
    if config is None and record is not None:
        return record["config"], module_metrics or record["module_metrics"]
    if config is None:
        raise TypeError(
            "This model carries no pruning record (it was not pruned by OneShotPruner.prune in this process): pass "
            "the OneShotPruner as pruner=, or its config= (a PruningConfig) and module_metrics=."
        )
    return config, module_metrics


def save_pruned(
    model,
    save_dir: str,
    tokenizer=None,
    config=None,
    module_metrics: dict[str, dict] | None = None,
    calibration=None,
    report=None,
    baseline=None,
    base_model: str | None = None,
    command: str | None = None,
    recipe: str | None = None,
    pruner=None,
    quantization: str | None = None,
) -> str:
    """Save a pruned model with its tokenizer, `pruning_config.json` and a model card; returns the folder.

    Pass the `OneShotPruner` as `pruner=` (its config and per-module metrics are used), or `config=` and
    `module_metrics=`. `report` / `baseline` (`EvalReport`s) add the evaluation to the card.

    `quantization="fp8"` exports the weights as compressed-tensors FP8 (`FP8_DYNAMIC`, data-free; see
    `hf_ssgr.hub.quantize`) from a copy of `model`, which stays as it was; `pruning_config.json` and the card record
    the pruning, then the quantization.

    With several processes only the main one writes; every process returns once the folder is complete.
    """
    from ..distributed import wait_for_everyone

    if not _is_main_process():
        wait_for_everyone()
        return save_dir
    config, module_metrics = _pruning_of(pruner, config, module_metrics, model)
    meta = pruning_metadata(model, config, module_metrics, calibration, base_model)
    model, compressor = _quantized(model, meta, quantization)
    card = model_card(meta, report, baseline, command=command, recipe=recipe)
    try:
        size = sum(p.numel() * p.element_size() for p in model.state_dict().values())
        return write_folder_atomically(
            save_dir, lambda tmp: write_checkpoint_files(tmp, model, tokenizer, meta, card, compressor), size
        )
    finally:
        wait_for_everyone()


def _quantized(model, meta: dict, quantization: str | None):
    """`(model, None)` without quantization; else a quantized copy and its compressor, with the quantization recorded
    in `meta` (after the pruning)."""
    if quantization is None:
        return model, None
    from .quantize import quantized_copy

    twin, compressor, record = quantized_copy(model, quantization)
    meta["steps"] = ["pruning", "quantization"]
    meta["quantization"] = record
    return twin, compressor


def _is_main_process() -> bool:
    from ..distributed import is_main_process

    return is_main_process()


def _resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PermissionError(
            "Pushing to the Hub needs a token with write access: run `hf auth login`, set HF_TOKEN, or pass token=... "
            "Nothing was uploaded."
        )
    return token


def _unreachable(err: BaseException) -> bool:
    """Whether `err` says the Hub could not be reached (no network, a name that does not resolve, a time-out, offline
    mode), as opposed to an answer from the Hub."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return True
    if isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
        return False
    name = type(err).__name__
    module = type(err).__module__ or ""
    return isinstance(err, (ConnectionError, TimeoutError, socket.gaierror)) or (
        module.startswith(("httpx", "httpcore", "requests", "urllib3")) and ("Connect" in name or "Timeout" in name)
    )


def _hub_unreachable(err: BaseException, action: str) -> ConnectionError:
    offline = " (HF_HUB_OFFLINE=1 is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
    return ConnectionError(
        f"The Hub cannot be reached{offline} while {action} ({type(err).__name__}: {str(err).splitlines()[0][:200]}): "
        "nothing was uploaded. Check the network (or HF_ENDPOINT) and run the same command again."
    )


def _create_repo(api, repo_id: str, repo_type: str, private: bool) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    except Exception as err:  # noqa: BLE001 - sorted below: unreachable, refused, or re-raised
        if _unreachable(err):
            raise _hub_unreachable(err, f"creating {repo_id}") from err
        if not isinstance(err, HfHubHTTPError):
            raise
        status = getattr(getattr(err, "response", None), "status_code", None)
        raise PermissionError(
            f"Cannot create or write the {repo_type} repo {repo_id!r} (HTTP {status}): check that the token has write "
            f"access and that the namespace {repo_id.split('/')[0]!r} is yours or your organisation's. Nothing was "
            "uploaded."
        ) from err


# The records an upload writes itself (not tokenizer files or rollout texts, whose strings are data).
_RECORD_FILES = ("README.md", "pruning_config.json", "eval_results.json", "eval_results_dense.json", "meta.json")


def _scrub_records(folder: str) -> None:
    """The last look before an upload: no absolute or home path in the records it writes (`public_text`); any that
    got through is replaced by its last component, and warned about."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            if name not in _RECORD_FILES:
                continue
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            if name.endswith(".json"):
                data = json.loads(text)
                scrubbed = scrub_local_paths(data)
                clean, changed = json.dumps(scrubbed, indent=2) + "\n", scrubbed != data
            else:
                clean = public_text(text)
                changed = clean != text
            if changed:
                if not name.startswith("eval_results"):  # evaluation settings name local data files by design
                    found.append(os.path.relpath(path, folder))
                with open(path, "w", encoding="utf-8") as f:
                    f.write(clean)
    if found:
        logger.warning("Local paths in %s were replaced by their last component before the upload.", ", ".join(found))


def _upload(api, repo_id: str, repo_type: str, folder: str, message: str, create_pr: bool):
    """One commit of `folder`'s files; a Hub that cannot be reached is said as such (a commit is all or nothing)."""
    _scrub_records(folder)
    try:
        return api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=folder, commit_message=message,
                                 create_pr=create_pr)  # fmt: skip
    except Exception as err:  # noqa: BLE001
        if _unreachable(err):
            raise _hub_unreachable(err, f"uploading to {repo_id}") from err
        raise


def push_to_hub(
    model,
    tokenizer,
    repo_id: str,
    calibration=None,
    report=None,
    private: bool = False,
    create_pr: bool = False,
    token: str | None = None,
    *,
    baseline=None,
    pruner=None,
    config=None,
    module_metrics: dict[str, dict] | None = None,
    base_model: str | None = None,
    command: str | None = None,
    recipe: str | None = None,
    commit_message: str | None = None,
    quantization: str | None = None,
):
    """Upload a pruned model, its tokenizer, `pruning_config.json` and its model card in one commit.

    `quantization="fp8"` uploads the compressed-tensors FP8 export instead of the compute-dtype weights (see
    `save_pruned`).

    Returns the `CommitInfo` (with `pr_url` when `create_pr=True`), or `None` on processes other than the main one.
    Without a token, or with a repo the token cannot write, it raises before uploading anything.
    """
    if not _is_main_process():
        return None
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise ValueError(f"repo_id must look like 'namespace/name' (got {repo_id!r}).")
    from huggingface_hub import HfApi

    token = _resolve_token(token)
    config, module_metrics = _pruning_of(pruner, config, module_metrics, model)
    meta = pruning_metadata(model, config, module_metrics, calibration, base_model)
    model, compressor = _quantized(model, meta, quantization)
    card = model_card(meta, report, baseline, model_name=repo_id.split("/")[-1], command=command, recipe=recipe)
    api = HfApi(token=token)
    _create_repo(api, repo_id, "model", private)
    with tempfile.TemporaryDirectory(prefix="hf_ssgr_push_") as tmp:
        write_checkpoint_files(tmp, model, tokenizer, meta, card, compressor)
        if report is not None:
            report.save(os.path.join(tmp, "eval_results.json"))
        if baseline is not None:
            baseline.save(os.path.join(tmp, "eval_results_dense.json"))
        message = commit_message or f"Upload {meta.get('method')} pruned model ({sparsity_description(meta)})" + (
            f", {quantization} quantized" if quantization else ""
        )
        info = _upload(api, repo_id, "model", tmp, message, create_pr)
    logger.info("Uploaded %s to %s", sparsity_description(meta), getattr(info, "commit_url", repo_id))
    return info


def push_calibration_to_hub(
    calibration,
    repo_id: str,
    rollouts_dir: str | None = None,
    private: bool = False,
    create_pr: bool = False,
    token: str | None = None,
    *,
    pretty_name: str | None = None,
    commit_message: str | None = None,
):
    """Upload a calibration Dataset (Parquet, in the layout `load_dataset(repo_id)` reads), its dataset card, and
    optionally the rollout store it was selected from, in one commit to a dataset repo."""
    if not _is_main_process():
        return None
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise ValueError(f"repo_id must look like 'namespace/name' (got {repo_id!r}).")
    if rollouts_dir is not None and not os.path.isfile(os.path.join(rollouts_dir, "meta.json")):
        raise FileNotFoundError(f"{rollouts_dir} is not a rollout store (no meta.json).")
    from huggingface_hub import HfApi

    token = _resolve_token(token)
    card = calibration_card(calibration, pretty_name=pretty_name, rollouts=rollouts_dir is not None)
    api = HfApi(token=token)
    _create_repo(api, repo_id, "dataset", private)
    with tempfile.TemporaryDirectory(prefix="hf_ssgr_push_") as tmp:
        os.makedirs(os.path.join(tmp, "data"))
        calibration.to_parquet(os.path.join(tmp, "data", "train-00000-of-00001.parquet"))
        card.save(os.path.join(tmp, "README.md"))
        if rollouts_dir is not None:
            shutil.copytree(
                rollouts_dir, os.path.join(tmp, "rollouts"), ignore=shutil.ignore_patterns("*.lock", "*.tmp")
            )
        message = commit_message or f"Upload calibration data ({len(calibration)} rows)"
        info = _upload(api, repo_id, "dataset", tmp, message, create_pr)
    return info
