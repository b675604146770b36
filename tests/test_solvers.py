"""The solver registry: a method added from outside the package prunes through `PruningConfig(method=...)` and
`hf-ssgr prune --method ...`, and plug-ins are found through the `hf_ssgr.solvers` entry points."""

import json
import sys

import pytest
import torch
from testing_utils import install_plugin, make_calibration, make_tiny_model

from hf_ssgr import OneShotPruner, PruningConfig
from hf_ssgr.pruning import solvers
from hf_ssgr.pruning.kernels import SolveInfo, row_mask
from hf_ssgr.pruning.solvers import Solver, get_solver, list_solvers, register_solver


class LowestInputNormSolver(Solver):
    """Prunes, in every row, the inputs of the lowest mean squared activation (ties to the lower column)."""

    name = "lowest-input-norm"
    title = "lowest input norm"
    needs = frozenset({"sq_norms"})
    seen: list = []

    def solve(self, weight, stats, shared):
        LowestInputNormSolver.seen.append((stats.count, tuple(weight.shape), shared))
        scores = (stats.sq_norms / stats.count).expand_as(weight)
        return weight.masked_fill(row_mask(scores, int(weight.shape[1] * self.config.sparsity)), 0.0), SolveInfo()


@pytest.fixture
def toy_solver():
    register_solver(LowestInputNormSolver)
    LowestInputNormSolver.seen = []
    yield LowestInputNormSolver
    solvers._SOLVERS.pop(LowestInputNormSolver.name, None)


def test_a_solver_registered_from_outside_prunes_through_the_config(toy_solver):
    assert "lowest-input-norm" in list_solvers() and get_solver("lowest-input-norm") is toy_solver
    model = make_tiny_model("llama", num_layers=2)
    calib = make_calibration()
    pruner = OneShotPruner(PruningConfig(method="lowest-input-norm", sparsity=0.25), progress_bar=False)
    pruner.prune(model, calib)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n}
    assert len(toy_solver.seen) == len(linears) == 14
    assert {count for count, _, _ in toy_solver.seen} == {6 * 24}  # every calibration token fed the statistic
    for name, module in linears.items():
        zeros = (module.weight == 0).sum(1)
        assert bool((zeros == module.weight.shape[1] // 4).all()), name
        # the same inputs are pruned in every row: a column is all zero or not zero at all
        columns = (module.weight == 0).all(0) | (module.weight != 0).all(0)
        assert bool(columns.all()), name
    # modules that read the same input share one scratch space: q/k/v, then gate/up
    shared = [s for _, _, s in toy_solver.seen[:7]]
    assert shared[0] is shared[1] is shared[2] and shared[4] is shared[5]
    assert len({id(s) for s in shared}) == 4
    assert pruner.state.module_metrics["model.layers.0.mlp.up_proj"]["error"] > 0  # the error metric still works


def test_a_solver_registered_from_outside_runs_from_the_cli(toy_solver, tmp_path):
    from hf_ssgr.commands.cli import main

    model_dir = tmp_path / "dense"
    make_tiny_model("qwen2").save_pretrained(model_dir)
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"input_ids": r}) + "\n" for r in make_calibration()))
    out = tmp_path / "pruned"
    args = ["prune", "--model_name_or_path", str(model_dir), "--calibration", str(calib), "--save_dir", str(out)]
    assert main([*args, "--method", "lowest-input-norm", "--sparsity", "0.5"]) == 0
    meta = json.loads((out / "pruning_config.json").read_text())
    assert meta["method"] == "lowest-input-norm" and meta["layers"][0]["sparsity"] == 0.5
    assert "**lowest input norm**" in (out / "README.md").read_text()


def test_solvers_are_found_through_entry_points(tmp_path, monkeypatch):
    source = (
        "from hf_ssgr.pruning.kernels import SolveInfo, magnitude_prune\n"
        "from hf_ssgr.pruning.solvers import Solver\n\n"
        "class HalfMagnitude(Solver):\n"
        "    name = 'half-magnitude'\n"
        "    def solve(self, weight, stats, shared):\n"
        "        return magnitude_prune(weight, self.config.sparsity / 2), SolveInfo()\n"
    )
    install_plugin(tmp_path, monkeypatch, "hf_ssgr_toy_plugin", source, "hf_ssgr.solvers",
                   "half = hf_ssgr_toy_plugin:HalfMagnitude")  # fmt: skip
    monkeypatch.setattr(solvers, "_ENTRY_POINTS_LOADED", False)
    try:
        config = PruningConfig(method="half-magnitude", sparsity=0.5)  # found on first use
        model = make_tiny_model("llama", num_layers=1)
        OneShotPruner(config, progress_bar=False).prune(model)  # needs no data
        w = model.model.layers[0].mlp.down_proj.weight
        assert int((w == 0).sum()) == w.numel() // 4
    finally:
        solvers._SOLVERS.pop("half-magnitude", None)
        sys.modules.pop("hf_ssgr_toy_plugin", None)


def test_registry_errors():
    with pytest.raises(ValueError, match="Unknown pruning method 'obs'.*magnitude, wanda, sparsegpt, alps.*register"):
        get_solver("obs")

    class Clash(Solver):
        name = "wanda"

    with pytest.raises(ValueError, match="named 'wanda' is registered already"):
        register_solver(Clash)

    class NoName(Solver):
        pass

    with pytest.raises(ValueError, match="has no name"):
        register_solver(NoName)

    class Greedy(Solver):
        name = "greedy"
        needs = frozenset({"hessian"})

    with pytest.raises(ValueError, match=r"needs unknown statistics \['hessian'\]"):
        register_solver(Greedy)
    with pytest.raises(TypeError, match="takes a Solver subclass"):
        register_solver(object)


@pytest.mark.parametrize("method, needs", [("magnitude", set()), ("wanda", {"sq_norms"}), ("sparsegpt", {"gram"}),
                                           ("alps", {"gram"})])  # fmt: skip
def test_built_in_solvers_declare_what_they_need(method, needs):
    solver = get_solver(method)
    assert set(solver.needs) == needs and solver.needs_data() == bool(needs)
    assert solver.title and solver.workspace_bytes(8, 16) >= 4 * 3 * 8 * 16
    config = PruningConfig(method=method)
    assert solver(config).cost(8, 16) > 0
