"""The extension examples of docs/ run as written: a method added with `register_solver` and a policy added with
`register_policy` work through the public configs."""

import pathlib
import re

import torch
from testing_utils import make_calibration, make_tiny_model

from hf_ssgr import OneShotPruner, PruningConfig
from hf_ssgr.calibration import policies
from hf_ssgr.calibration.store import VerifiedSample
from hf_ssgr.pruning import solvers

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


def section_block(page: str, heading: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return block


def test_adding_a_method_example_prunes():
    namespace = {}
    try:
        exec(compile(section_block("pruning.md", "Adding a method"), "docs/pruning.md", "exec"), namespace)
        model = make_tiny_model("llama", num_layers=2)
        OneShotPruner(PruningConfig(method="random", sparsity=0.5), progress_bar=False).prune(
            model, make_calibration()
        )
        w = model.model.layers[1].mlp.down_proj.weight
        assert bool(((w == 0).sum(1) == w.shape[1] // 2).all())
        # random, so not the magnitude mask
        magnitude = make_tiny_model("llama", num_layers=2).model.layers[1].mlp.down_proj.weight
        assert not torch.equal(w == 0, magnitude.abs() <= magnitude.abs().median(1, keepdim=True).values)
    finally:
        solvers._SOLVERS.pop("random", None)


def test_adding_a_policy_example_selects():
    namespace = {}
    try:
        exec(compile(section_block("calibration.md", "Adding a policy"), "docs/calibration.md", "exec"), namespace)
        policy = policies.get_policy("longest_correct")
        samples = [
            VerifiedSample(sample_idx=i, response_ids=[1] * n, finish_reason="eos", correct=ok)
            for i, (n, ok) in enumerate([(5, True), (30, False), (12, True), (9, True)])
        ]
        decision = policy.select(samples)
        assert decision.reason == "selected" and decision.sample.sample_idx == 2
        assert policy.select(samples, budget=10).sample.sample_idx == 3
        assert policy.select(samples[1:2]).sample is None
    finally:
        policies.unregister_policy("longest_correct")
