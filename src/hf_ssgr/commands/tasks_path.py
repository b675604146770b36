"""`hf-ssgr tasks-path`: print the folder of the shipped lm-eval tasks, for `lm_eval --include_path`."""

from __future__ import annotations

from dataclasses import dataclass

from .parser import SsgrParser

__all__ = ["TasksPathArguments", "make_parser", "main"]


@dataclass
class TasksPathArguments:
    """`hf-ssgr tasks-path` takes no flags."""


def make_parser() -> SsgrParser:
    return SsgrParser("hf-ssgr tasks-path", [TasksPathArguments], description=__doc__)


def main(argv: list[str]) -> int:
    from ..evaluation.registry import tasks_path

    make_parser().parse(argv)
    print(tasks_path())
    return 0
