"""Functions the task YAMLs of this folder call; everything lives in `hf_ssgr.evaluation.registry`."""

from hf_ssgr.evaluation.registry import GradeCode, load_task_dataset, median_of_all, process_results, total  # noqa: F401


def load_gsm8k(**metadata):
    return load_task_dataset("ssgr_gsm8k", **metadata)


def load_math500(**metadata):
    return load_task_dataset("ssgr_math500", **metadata)


def load_aime(**metadata):
    return load_task_dataset("ssgr_aime", **metadata)


def load_aime24(**metadata):
    return load_task_dataset("ssgr_aime24", **metadata)


def load_aime25(**metadata):
    return load_task_dataset("ssgr_aime25", **metadata)


def load_olympiadbench(**metadata):
    return load_task_dataset("ssgr_olympiadbench", **metadata)


def load_gpqa_diamond(**metadata):
    return load_task_dataset("ssgr_gpqa_diamond", **metadata)


def load_tiny_arith(**metadata):
    return load_task_dataset("ssgr_tiny_arith", **metadata)


def load_livecodebench(**metadata):
    return load_task_dataset("ssgr_livecodebench", **metadata)
