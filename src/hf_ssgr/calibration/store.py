"""The rollout store: verified samples as token ids, in a persistent, resumable, append-only JSON-lines log.

`RolloutStore` keeps rollouts as token ids, never re-tokenized text: one line per generated chunk of one problem,
written and fsynced as soon as the chunk is verified. A run killed at any point loses at most the line being written
(a torn last line is dropped on reload); samples are keyed by `(problem_id, sample_idx)`, so nothing is duplicated.
Reusing a store with another model or generation config is refused.

`meta.json` records how samples were drawn (`"sampling"`, `SAMPLING`: one seed per (problem, sample index)). A store
written by an earlier version (samples drawn with one seed per generation batch, no `"sampling"` key) is still read
and reused; samples added to it are drawn the new way, which is warned about and recorded in its `meta.json`.

A line is `{"problem_id", "prompt_ids", "samples": [...], "done"?}`; each sample is the JSON form of a
[`VerifiedSample`] (`VerifiedSample.to_dict`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ..verification import VerifiedReply
    from .engines import Sample

logger = logging.getLogger("hf_ssgr")

__all__ = ["VerifiedSample", "RolloutStore", "model_fingerprint", "ROLLOUT_COLUMNS", "SAMPLING"]

SAMPLING = "per-sample-seed"  # how this version draws: sample j of problem p from its own seed (see engines.sample_seed)

ROLLOUT_COLUMNS = [
    "problem_id",
    "sample_idx",
    "prompt_ids",
    "response_ids",
    "finish_reason",
    "response_text",
    "extracted_answer",
    "correct",
    "repetitive",
    "no_reasoning",
    "wrong_format",
]


@dataclass(frozen=True, kw_only=True)
class VerifiedSample:
    """One generated response of a problem and its verdict: what the store keeps and the selection policies read.

    The fields, in this order, are the keys of its JSON form in the store's lines.

    Args:
        sample_idx (`int`): its index among the samples of its problem (0, 1, ...).
        response_ids (`list[int]`): the generated token ids (ending with EOS unless truncated).
        finish_reason (`str`): `"eos"` or `"length"`.
        response_text (`str`, *optional*): the decoded response (special tokens skipped).
        extracted_answer (`str`, *optional*): the final answer read from the response, `None` when there is none.
        correct (`bool`): the extracted answer matches the gold one.
        repetitive / no_reasoning / wrong_format (`bool`, *optional*): the quality flags (see
            `hf_ssgr.verification.quality_flags`); `None` in a line that does not record them.
    """

    sample_idx: int
    response_ids: list[int]
    finish_reason: str | None
    response_text: str | None = None
    extracted_answer: str | None = None
    correct: bool
    repetitive: bool | None = None
    no_reasoning: bool | None = None
    wrong_format: bool | None = None

    @classmethod
    def from_reply(cls, sample_idx: int, sample: Sample, text: str, reply: VerifiedReply) -> VerifiedSample:
        """The verified form of an engine's `sample`, whose decoded `text` was verified as `reply`."""
        return cls(
            sample_idx=sample_idx,
            response_ids=sample.response_ids,
            finish_reason=sample.finish_reason,
            response_text=text,
            extracted_answer=reply.extracted_answer,
            correct=reply.correct,
            repetitive=reply.repetitive,
            no_reasoning=reply.no_reasoning,
            wrong_format=reply.wrong_format,
        )

    @property
    def low_quality(self) -> bool:
        """Whether any quality flag is set (repetitive, no reasoning, or no boxed answer)."""
        return bool(self.repetitive or self.no_reasoning or self.wrong_format)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written in the store's lines."""
        return {name: getattr(self, name) for name in _SAMPLE_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerifiedSample:
        """Read the JSON form. `sample_idx`, `response_ids` and `correct` are required; a missing optional key reads
        as `None` and unknown keys are ignored."""
        missing = [k for k in ("sample_idx", "response_ids", "correct") if k not in data]
        if missing:
            raise ValueError(
                f"A stored rollout sample lacks {missing} (keys: {sorted(data)}): the store is not an hf-ssgr rollout "
                "store, or was damaged; use another rollouts_dir."
            )
        return cls(**{name: data.get(name) for name in _SAMPLE_FIELDS})


_SAMPLE_FIELDS = tuple(f.name for f in dataclasses.fields(VerifiedSample))


def model_fingerprint(model) -> str:
    """A cheap identity of a model for the store's `meta.json`: its config and a sample of its weights."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        h.update(json.dumps(config.to_diff_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for _, p in list(model.named_parameters())[:: max(1, len(list(model.parameters())) // 8)]:
            flat = p.detach().reshape(-1)
            h.update(flat[:4096].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class RolloutStore:
    """Append-only, crash-safe store of rollouts for one (model, generation config).

    Layout: `path/meta.json` (what the rollouts were generated with) and `path/rollouts.jsonl` (one line per generated
    chunk of a problem: `{"problem_id", "prompt_ids", "samples": [...]}`), plus `path/rollouts-rank{r}.jsonl` when
    several processes share the store.
    """

    META_NAME = "meta.json"
    # Recorded, not compared: a model is identified by its weights' fingerprint and config, not by where it lies.
    INFO_KEYS = ("model", "sampling")

    def __init__(self, path: str, meta: dict[str, Any], rank: int | None = None):
        self.path = path
        os.makedirs(path, exist_ok=True)
        meta_path = os.path.join(path, self.META_NAME)
        if os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                saved = json.load(f)
            diff = {
                k: (saved.get(k), meta.get(k))
                for k in sorted(set(saved) | set(meta))
                if saved.get(k) != meta.get(k) and k not in self.INFO_KEYS
            }
            if not diff and saved.get("model") != meta.get("model"):
                logger.info("The rollout store %s was made from %s, the same weights and config as %s: reused.",
                            path, saved.get("model"), meta.get("model"))  # fmt: skip
            if diff:
                raise ValueError(
                    f"The rollout store {path} was made with another model or generation config (stored, now): {diff}. "
                    "Use another rollouts_dir, or delete the store to regenerate."
                )
            self._earlier_sampling = saved.get("sampling", "per-batch-seed (an earlier hf-ssgr)")
            if self._earlier_sampling == meta.get("sampling"):
                self._earlier_sampling = None
            self._saved_meta = saved
        else:
            tmp = f"{meta_path}.{os.getpid()}.tmp"  # processes sharing the store may write it at the same time
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=2, sort_keys=True)
            os.replace(tmp, meta_path)
            self._earlier_sampling = None
        self.meta = meta
        self.file = os.path.join(path, "rollouts.jsonl" if rank is None else f"rollouts-rank{rank}.jsonl")
        self._records: dict[str, dict[str, Any]] = {}
        self._damaged: set[tuple[str, int]] = set()  # (file, line number) of the damaged lines warned about
        self._load()

    def _files(self) -> list[str]:
        return sorted(
            os.path.join(self.path, f)
            for f in os.listdir(self.path)
            if f.startswith("rollouts") and f.endswith(".jsonl")
        )

    def refresh(self) -> None:
        """Read what other processes appended to their files of this store since it was opened."""
        self._load(skip_own=True)

    def _load(self, skip_own: bool = False) -> None:
        for file in self._files():
            if skip_own and file == self.file:
                continue
            with open(file, "rb") as f:
                data = f.read()
            lines = data.splitlines(keepends=True)
            torn = bool(lines) and not lines[-1].endswith(b"\n")  # the last write of a process killed mid-line
            damaged = []
            for number, line in enumerate(lines[:-1] if torn else lines, start=1):
                try:
                    self._merge(json.loads(line))
                except (ValueError, KeyError, TypeError, AttributeError):  # a damaged line: the others still count
                    damaged.append(number)
            if any((file, n) not in self._damaged for n in damaged):  # warned once per line, refreshes included
                self._damaged.update((file, n) for n in damaged)
                logger.warning(
                    "Skipped %d damaged line(s) of %s (line %s); the %d other lines were read. Their samples are "
                    "generated again unless another line holds them.", len(damaged), file,
                    ", ".join(map(str, damaged[:10])) + (" ..." if len(damaged) > 10 else ""),
                    len(lines) - len(damaged) - torn,
                )  # fmt: skip
            if torn and file == self.file:
                with open(file, "r+b") as f:  # drop the torn tail so appends start on a clean line
                    f.truncate(len(data) - len(lines[-1]))
                logger.warning("Dropped a torn line at the end of %s (an interrupted write).", file)

    def _merge(self, rec: dict) -> None:
        """Add one line's record; a malformed one raises before anything is merged."""
        problem_id = rec["problem_id"]
        if not isinstance(problem_id, str) or not isinstance(rec["samples"], list):
            raise TypeError("not a rollouts record")
        samples = [(s["sample_idx"], VerifiedSample.from_dict(s)) for s in rec["samples"]]
        cur = self._records.get(problem_id)
        if cur is None:
            cur = self._records[problem_id] = {k: v for k, v in rec.items() if k != "samples"}
            cur["samples"] = {}
        for idx, sample in samples:
            cur["samples"].setdefault(idx, sample)  # first write wins: never duplicated
        for k in ("done", "stopped_early"):
            if k in rec:
                cur[k] = rec[k]

    def get(self, problem_id: str) -> dict[str, Any] | None:
        """The merged record of a problem: `problem_id`, `prompt_ids`, `samples` (`{sample_idx: VerifiedSample}`)
        and, when written, `done`; `None` for a problem never generated."""
        return self._records.get(problem_id)

    def samples(self, problem_id: str) -> list[VerifiedSample]:
        """The samples of a problem, in `sample_idx` order (empty for a problem never generated)."""
        rec = self._records.get(problem_id)
        return [] if rec is None else [rec["samples"][i] for i in sorted(rec["samples"])]

    def append(self, problem_id: str, prompt_ids: list[int], samples: list[VerifiedSample], **extra) -> None:
        """Write one line (a chunk of new samples of a problem, plus `extra` keys such as `done`) and fsync it."""
        if samples and self._earlier_sampling is not None:
            self._record_mixed_sampling()
        rec = {"problem_id": problem_id, "prompt_ids": prompt_ids, "samples": [s.to_dict() for s in samples], **extra}
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        with open(self.file, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._merge(json.loads(line))

    def _record_mixed_sampling(self) -> None:
        """Warn, once, that new samples join samples drawn another way, and record it in `meta.json`."""
        earlier, now = self._earlier_sampling, self.meta.get("sampling")
        logger.warning(
            "The rollout store %s holds samples drawn by an earlier version (sampling %r); the samples added now are "
            "drawn with one seed per (problem, sample index) (%r), so this store is not what one uninterrupted run of "
            "either version draws. Use a new rollouts_dir to regenerate everything the new way.", self.path, earlier, now
        )  # fmt: skip
        mixed = earlier if str(earlier).startswith("mixed:") else f"mixed: {earlier} then {now}"
        meta_path = os.path.join(self.path, self.META_NAME)
        tmp = f"{meta_path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({**self._saved_meta, "sampling": mixed}, f, indent=2, sort_keys=True)
        os.replace(tmp, meta_path)
        self._earlier_sampling = None

    def __len__(self) -> int:
        """The number of problems in the store."""
        return len(self._records)

    def problem_ids(self) -> list[str]:
        return list(self._records)

    def to_dataset(self):
        """All rollouts, one row per sample, with the `ROLLOUT_COLUMNS`."""
        import datasets

        rows = {c: [] for c in ROLLOUT_COLUMNS}
        for pid, rec in self._records.items():
            for idx in sorted(rec["samples"]):
                s = rec["samples"][idx]
                rows["problem_id"].append(pid)
                rows["prompt_ids"].append(rec["prompt_ids"])
                for c in ROLLOUT_COLUMNS:
                    if c not in ("problem_id", "prompt_ids"):
                        rows[c].append(getattr(s, c))
        return datasets.Dataset.from_dict(rows)
