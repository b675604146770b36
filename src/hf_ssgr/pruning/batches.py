"""Calibration rows and batches: what the pruner accepts as calibration data, how rows are checked, fingerprinted,
sampled for the error estimate and cut into right-padded batches, and how nested layer arguments move between devices.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Row", "Batch", "as_rows", "calibration_fingerprint", "stat_span", "assign_error_sample", "make_batches",
           "to_device"]  # fmt: skip


@dataclass
class Row:
    input_ids: torch.Tensor  # (T,) int64
    prompt_length: int
    sample_positions: torch.Tensor | None = None  # positions of this row in the error-estimate sample


def stat_span(row: Row, token_mask: str) -> tuple[int, int]:
    """The positions `[start, end)` of a row that feed the statistics."""
    n = row.input_ids.numel()
    if token_mask == "prompt":
        return 0, row.prompt_length
    if token_mask == "response":
        return row.prompt_length, n
    return 0, n


def assign_error_sample(rows: list[Row], token_mask: str, num_tokens: int, seed: int) -> int:
    """Choose a uniform sample of `num_tokens` statistic tokens over all rows, the same in every layer, and store each
    row's positions in `row.sample_positions`; every statistic token when there are no more. Each token gets a key from
    a generator seeded by its row's index, and the sample is the `num_tokens` smallest keys: the choice does not depend
    on how the rows are split across processes. Returns the sample size."""
    keys = []
    for i, row in enumerate(rows):
        start, end = stat_span(row, token_mask)
        k = torch.full((row.input_ids.numel(),), 2.0, dtype=torch.float64)
        k[start:end] = torch.rand(end - start, generator=torch.Generator().manual_seed(seed * 1_000_003 + i),
                                  dtype=torch.float64)  # fmt: skip
        keys.append(k)
    flat = torch.cat(keys)
    chosen = flat < 2.0
    available = int(chosen.sum())
    if available > num_tokens:
        chosen = torch.zeros_like(chosen)
        chosen[torch.topk(flat, num_tokens, largest=False).indices] = True
    offset = 0
    for row in rows:
        n = row.input_ids.numel()
        row.sample_positions = chosen[offset : offset + n].nonzero().flatten()
        offset += n
    return min(available, num_tokens)


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor | None  # (B, T) when the batch is padded
    stat_mask: torch.Tensor | None  # (B*T,) tokens that feed the statistics; None means all
    num_stat_tokens: int
    sample_index: torch.Tensor | None = None  # (S,) flat positions (of B*T) of the error-estimate sample
    hidden: torch.Tensor | None = None  # input of the next layer to run, (B, T, d)
    layer_inputs: dict[int, tuple[tuple, dict]] | None = None  # per layer: extra positional args and kwargs


def as_rows(calibration: Any, need_prompt_length: bool) -> list[Row]:
    """Accept a `datasets.Dataset` (`input_ids`, optional `prompt_length`), a list of id lists / 1-D tensors / dicts,
    or a 2-D tensor."""
    prompt_lengths = None
    if hasattr(calibration, "column_names") and hasattr(calibration, "features"):  # datasets.Dataset
        if "input_ids" not in calibration.column_names:
            raise ValueError(
                f"The calibration Dataset has no 'input_ids' column (columns: {calibration.column_names}): tokenize it "
                "first, e.g. dataset.map(lambda r: tokenizer(r['text'])), or build it with SSGRCalibrator."
            )
        ids = calibration["input_ids"]
        if "prompt_length" in calibration.column_names:
            prompt_lengths = calibration["prompt_length"]
    elif isinstance(calibration, torch.Tensor):
        if calibration.dim() == 1:
            calibration = calibration.unsqueeze(0)
        if calibration.dim() != 2:
            raise ValueError(f"A calibration tensor must be (rows, tokens); got shape {tuple(calibration.shape)}.")
        ids = list(calibration)
    elif isinstance(calibration, (list, tuple)):
        ids = []
        prompt_lengths = []
        for row in calibration:
            if isinstance(row, dict):
                if "input_ids" not in row:
                    raise ValueError("A calibration row given as a dict needs an 'input_ids' key.")
                ids.append(row["input_ids"])
                prompt_lengths.append(row.get("prompt_length"))
            elif isinstance(row, torch.Tensor) and row.dim() == 2:  # a (rows, tokens) batch in the list: its rows
                ids.extend(row)
                prompt_lengths.extend([None] * row.shape[0])
            else:
                ids.append(row)
                prompt_lengths.append(None)
        if all(p is None for p in prompt_lengths):
            prompt_lengths = None
    else:
        raise TypeError(
            f"Unsupported calibration type {type(calibration).__name__}: pass a datasets.Dataset with an 'input_ids' "
            "column, a list of token-id lists or 1-D tensors, or a 2-D tensor."
        )
    if len(ids) == 0:
        raise ValueError(
            "The calibration set is empty: pass at least one row of token ids (SSGR and RAC use 128 rows)."
        )
    if need_prompt_length and (prompt_lengths is None or any(p is None for p in prompt_lengths)):
        raise ValueError(
            "token_mask='prompt'/'response' needs a 'prompt_length' for every calibration row: add the column (as "
            "SSGRCalibrator does) or use token_mask='all'."
        )
    rows = []
    for i, r in enumerate(ids):
        t = _token_ids(i, r)
        if t.numel() == 0:
            raise ValueError(f"Calibration row {i} is empty: drop empty rows before pruning.")
        p = int(prompt_lengths[i]) if prompt_lengths is not None and prompt_lengths[i] is not None else 0
        if not 0 <= p <= t.numel():
            raise ValueError(f"Calibration row {i}: prompt_length={p} is outside [0, {t.numel()}] (the row length).")
        rows.append(Row(t, p))
    return rows


def _token_ids(i: int, row: Any) -> torch.Tensor:
    """Row `i`'s token ids as a 1-D long tensor; text, a value that is not an integer, or a row of more than one
    dimension is refused, not converted."""
    if isinstance(row, str) or (isinstance(row, (list, tuple)) and row and isinstance(row[0], str)):
        text = row if isinstance(row, str) else row[0]
        raise ValueError(
            f"Calibration row {i} is text ({text[:40]!r}), but calibration rows are token ids: tokenize it first, "
            "e.g. [tokenizer(t)['input_ids'] for t in texts], or build the set with SSGRCalibrator "
            "(policy='text' for a plain corpus)."
        )
    try:
        t = row.detach().to("cpu") if isinstance(row, torch.Tensor) else torch.as_tensor(row)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"Calibration row {i} is not a sequence of token ids ({type(row).__name__}: {err}).") from None
    if t.dim() > 1:
        raise ValueError(
            f"Calibration row {i} has shape {tuple(t.shape)}: a row is one sequence of token ids (pass a 2-D tensor "
            "as the calibration itself, or its rows as a list)."
        )
    t = t.reshape(-1)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        bad = t[t != t.round()] if t.is_floating_point() else t
        if t.dtype == torch.bool or t.is_complex() or bad.numel():
            raise ValueError(
                f"Calibration row {i} holds token id {bad[0].item() if bad.numel() else t[0].item()!r}, not an "
                "integer: token ids are integers; tokenize the calibration text with the model's tokenizer."
            )
    return t.to(torch.long)


def calibration_fingerprint(rows: list[Row]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(r.input_ids.numpy().tobytes())
        h.update(str(r.prompt_length).encode())
        h.update(b"|")
    return h.hexdigest()[:32]


def make_batches(rows: list[Row], batch_size: int, token_mask: str, pad_id: int) -> list[Batch]:
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        length = max(r.input_ids.numel() for r in chunk)
        ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)
        valid = torch.zeros((len(chunk), length), dtype=torch.bool)
        stat = torch.zeros((len(chunk), length), dtype=torch.bool)
        for j, r in enumerate(chunk):
            n = r.input_ids.numel()
            ids[j, :n] = r.input_ids
            valid[j, :n] = True
            if token_mask == "all":
                stat[j, :n] = True
            elif token_mask == "prompt":
                stat[j, : r.prompt_length] = True
            else:
                stat[j, r.prompt_length : n] = True
        padded = not bool(valid.all())
        all_stat = bool(stat.all())
        sample_index = None
        if any(r.sample_positions is not None for r in chunk):
            sample_index = torch.cat([r.sample_positions + j * length for j, r in enumerate(chunk)])
        batches.append(
            Batch(
                input_ids=ids,
                attention_mask=valid.long() if padded else None,
                stat_mask=None if all_stat else stat.reshape(-1),
                num_stat_tokens=int(stat.sum()),
                sample_index=sample_index,
            )
        )
    return batches


def to_device(obj: Any, device: torch.device, memo: dict | None = None, pin: bool = False) -> Any:
    if memo is None:
        memo = {}
    if isinstance(obj, torch.Tensor):
        key = id(obj)
        if key not in memo:
            moved = obj.to(device, non_blocking=obj.device.type == "cpu" and obj.is_pinned())
            if pin and moved.device.type == "cpu" and not moved.is_pinned():
                moved = moved.pin_memory()
            memo[key] = (obj, moved)  # keep obj alive so its id is not reused
        return memo[key][1]
    if isinstance(obj, tuple):
        return tuple(to_device(o, device, memo, pin) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device, memo, pin) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device, memo, pin) for k, v in obj.items()}
    return obj
