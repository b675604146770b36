"""Pruning methods as solvers, and their registry.

A [`Solver`] says which statistics of a module's input it needs (`XᵀX`, squared channel norms, or none), estimates the
cost of its solve (to deal the solves of a layer across processes), and solves one weight matrix, returning the pruned
weight and a [`SolveInfo`]. The pruner's loop knows no method: it asks the solver named by `PruningConfig.method`.

Adding a method is one subclass and one registration:

```python
from hf_ssgr.pruning.solvers import Solver, register_solver
from hf_ssgr.pruning.kernels import SolveInfo, row_mask


@register_solver
class RandomSolver(Solver):
    name = "random"  # PruningConfig(method="random"), hf-ssgr prune --method random
    title = "random pruning"

    def solve(self, weight, stats, shared):
        scores = torch.rand(weight.shape, generator=torch.Generator().manual_seed(self.config.seed))
        return weight.masked_fill(row_mask(scores, int(weight.shape[1] * self.config.sparsity)), 0.0), SolveInfo()
```

A package can also make its solvers known without being imported first, through the `hf_ssgr.solvers` entry-point
group (each entry point loads a `Solver` subclass, which is then registered).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from .kernels import (
    SolveInfo,
    alps_factors,
    alps_prune,
    magnitude_prune,
    sparsegpt_factor,
    sparsegpt_prune_batched,
    wanda_prune,
)

if TYPE_CHECKING:
    from .config import PruningConfig

logger = logging.getLogger("hf_ssgr")

__all__ = [
    "ModuleStats",
    "Solver",
    "register_solver",
    "get_solver",
    "list_solvers",
    "MagnitudeSolver",
    "WandaSolver",
    "SparseGPTSolver",
    "AlpsOptions",
    "AlpsSolver",
    "ENTRY_POINT_GROUP",
]

ENTRY_POINT_GROUP = "hf_ssgr.solvers"
NEEDS = ("gram", "sq_norms")


@dataclass
class ModuleStats:
    """What the statistics pass gives a solver about one module's input, over the calibration tokens that feed it.

    Args:
        count (`int`): tokens summed.
        gram (`torch.Tensor`, *optional*): `Σ xᵀx`, float32, `(d_in, d_in)`, when a solver needs it (or the exact
            error is asked for).
        sq_norms (`torch.Tensor`, *optional*): `Σ x²` per input channel, float32, `(d_in,)`.
        sample (`torch.Tensor`, *optional*): the inputs at the error-estimate sample's tokens, `(tokens, d_in)`.
    """

    count: int = 0
    gram: torch.Tensor | None = None
    sq_norms: torch.Tensor | None = None
    sample: torch.Tensor | None = None


class Solver:
    """One pruning method. Subclass it, set the class attributes, implement [`~Solver.solve`], and register the class
    with [`register_solver`].

    Class attributes:
        name (`str`): the value of `PruningConfig.method` that selects it.
        title (`str`): how cards and reports name it ("SparseGPT").
        needs (`frozenset[str]`): the statistics `solve` reads: `"gram"` (`XᵀX`), `"sq_norms"` (squared input norms), or
            none. A solver that needs none prunes without calibration data.

    Args:
        config ([`PruningConfig`]): the run's configuration (sparsity, pattern, seed and the solver's own settings).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: PruningConfig):
        self.config = config

    @classmethod
    def needs_data(cls) -> bool:
        """Whether the solver reads calibration statistics (otherwise data only serves the error metric)."""
        return bool(cls.needs)

    def cost(self, rows: int, cols: int) -> float:
        """Rough relative cost of solving a `(rows, cols)` weight, to balance the solves across processes."""
        return float(rows * cols)

    @classmethod
    def workspace_bytes(cls, rows: int, cols: int) -> float:
        """Peak bytes of one solve of a `(rows, cols)` weight beyond the statistics (for `estimate_prune_memory`):
        float32 copies of the weight."""
        return 4.0 * 3 * rows * cols

    @classmethod
    def batch_workspace_bytes(cls, rows: int, cols: int, batch: int) -> float:
        """Peak bytes of one `solve_batch` of `batch` weights of shape `(rows, cols)` beyond the statistics."""
        return batch * cls.workspace_bytes(rows, cols)

    def solve(self, weight: torch.Tensor, stats: ModuleStats | None, shared: dict) -> tuple[torch.Tensor, SolveInfo]:
        """Prune one weight matrix.

        Args:
            weight (`torch.Tensor`): a float32 copy of the weight, `(d_out, d_in)`, on the compute device.
            stats ([`ModuleStats`], *optional*): the statistics of its input (`None` without calibration data).
            shared (`dict`): a scratch space shared by the modules of one layer that read the same input (q/k/v,
                gate/up), for work that depends only on the input, such as a factorisation of `XᵀX`.

        Returns the pruned weight (float32 or float64, same shape) and a [`SolveInfo`].
        """
        raise NotImplementedError

    batched: ClassVar[bool] = False  # whether `solve_batch` is more than a loop over `solve`

    def solve_batch(
        self, weights: list[torch.Tensor], stats: list[ModuleStats | None], shared: list[dict]
    ) -> list[tuple[torch.Tensor, SolveInfo]]:
        """Prune several weights of one shape (the experts of a fused module), each against its own statistics and
        scratch space, as `solve` would one by one. A solver overrides it (and sets `batched = True`) where one call
        is faster."""
        return [self.solve(w, s, sh) for w, s, sh in zip(weights, stats, shared)]

    def _stat(self, stats: ModuleStats | None, key: str) -> torch.Tensor:
        value = getattr(stats, key, None) if stats is not None else None
        if value is None:
            raise ValueError(f"The {self.title or self.name} solver needs the {key} statistic of its input.")
        return value


_SOLVERS: dict[str, type[Solver]] = {}
_ENTRY_POINTS_LOADED = False


def register_solver(cls: type[Solver] | None = None, *, overwrite: bool = False):
    """Register a [`Solver`] subclass under its `name` (usable as a class decorator). A name that is taken is
    refused unless `overwrite=True`."""

    def register(solver: type[Solver]) -> type[Solver]:
        if not (isinstance(solver, type) and issubclass(solver, Solver)):
            raise TypeError(f"register_solver takes a Solver subclass, got {solver!r}.")
        if not solver.name or not isinstance(solver.name, str):
            raise ValueError(f"{solver.__name__} has no name: set the class attribute `name`.")
        unknown = sorted(set(solver.needs) - set(NEEDS))
        if unknown:
            raise ValueError(f"{solver.__name__} needs unknown statistics {unknown}: choose from {list(NEEDS)}.")
        if solver.name in _SOLVERS and _SOLVERS[solver.name] is not solver and not overwrite:
            raise ValueError(
                f"A solver named {solver.name!r} is registered already ({_SOLVERS[solver.name].__name__}): choose "
                "another name, or pass overwrite=True."
            )
        _SOLVERS[solver.name] = solver
        return solver

    return register(cls) if cls is not None else register


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from ..utils import load_plugins

    def add(solver) -> None:
        if not (isinstance(solver, type) and issubclass(solver, Solver)):
            raise TypeError(f"it loads {solver!r}, not a Solver subclass")
        if solver.name not in _SOLVERS:
            register_solver(solver)

    load_plugins(ENTRY_POINT_GROUP, add)


def list_solvers() -> list[str]:
    """The names of the registered solvers: the built-in ones first, then those registered later."""
    _load_entry_points()
    return list(_SOLVERS)


def get_solver(name: str) -> type[Solver]:
    """The solver class registered as `name`; an unknown name fails with the list of known ones."""
    if name not in _SOLVERS:
        _load_entry_points()
    if name not in _SOLVERS:
        raise ValueError(
            f"Unknown pruning method {name!r}: choose one of {', '.join(_SOLVERS)} (or register a Solver with "
            "hf_ssgr.pruning.solvers.register_solver)."
        )
    return _SOLVERS[name]


# --------------------------------------------------------------------------------------------------------------------
# The built-in methods


@register_solver
class MagnitudeSolver(Solver):
    """|W| per matrix (the lowest ⌊numel·s⌋ weights), or per group of M for N:M. Needs no calibration data."""

    name = "magnitude"
    title = "magnitude pruning"

    def solve(self, weight, stats, shared):
        return magnitude_prune(weight, self.config.sparsity, self.config.nm), SolveInfo()


@register_solver
class WandaSolver(Solver):
    """Wanda (Sun et al. 2023): |W_ij|·‖X_j‖₂ compared per output row."""

    name = "wanda"
    title = "Wanda"
    needs = frozenset({"sq_norms"})

    def solve(self, weight, stats, shared):
        pruned = wanda_prune(weight, self._stat(stats, "sq_norms"), stats.count, self.config.sparsity, self.config.nm)
        return pruned, SolveInfo()


@register_solver
class SparseGPTSolver(Solver):
    """SparseGPT (Frantar & Alistarh 2023), with `block_size` and `dampening` from the config."""

    name = "sparsegpt"
    title = "SparseGPT"
    needs = frozenset({"gram"})

    def cost(self, rows, cols):  # the column loop, then the Cholesky factors
        return cols * (rows + 256) * self.config.block_size + cols**3 / 3

    @classmethod
    def workspace_bytes(cls, rows, cols):  # the damped Hessian copy, factorised in place, and weight copies
        return 4.0 * (1.5 * cols * cols + 3 * rows * cols)

    @classmethod
    def batch_workspace_bytes(cls, rows, cols, batch):  # each factor, kept until its batch is solved, and their stack
        return 4.0 * batch * (2 * cols * cols + 3 * rows * cols)

    batched = True

    def _factor(self, stats, shared):
        """The input's factorisation, computed once for the weights that read it (kept in `shared`)."""
        if "sparsegpt_factor" not in shared:
            shared["sparsegpt_factor"] = sparsegpt_factor(
                self._stat(stats, "gram"), stats.count, self.config.dampening
            )
        return shared["sparsegpt_factor"]

    def solve(self, weight, stats, shared):
        return self.solve_batch([weight], [stats], [shared])[0]

    def solve_batch(self, weights, stats, shared):
        cfg = self.config
        factors = [self._factor(s, sh) for s, sh in zip(stats, shared)]
        pruned = sparsegpt_prune_batched(torch.stack(weights), factors, cfg.sparsity, cfg.nm, cfg.block_size)
        return [(pruned[b], SolveInfo(damping=f.damping)) for b, f in enumerate(factors)]


@dataclass
class AlpsOptions:
    """ALPS's own settings (reference defaults), read from the `alps_*` fields of [`PruningConfig`].

    Args:
        rho (`float`): initial ADMM penalty. max_iter (`int`): maximum ADMM iterations. update_iter (`int`):
            iterations between penalty updates. switch_iter (`int`): iterations before the support test may stop.
            cg_iters (`int`): conjugate-gradient refinement iterations.
    """

    rho: float = 0.1
    max_iter: int = 300
    update_iter: int = 3
    switch_iter: int = 30
    cg_iters: int = 10

    @classmethod
    def from_config(cls, config: PruningConfig) -> AlpsOptions:
        return cls(config.alps_rho, config.alps_max_iter, config.alps_update_iter, config.alps_switch_iter,
                   config.alps_cg_iters)  # fmt: skip


@register_solver
class AlpsSolver(Solver):
    """ALPS (Meng et al. 2024): ADMM on the column-normalised `XᵀX`, then conjugate-gradient refinement. The damped,
    normalised `XᵀX` and its eigendecomposition are shared by the modules that read the same input."""

    name = "alps"
    title = "ALPS"
    needs = frozenset({"gram"})

    def __init__(self, config):
        super().__init__(config)
        self.options = AlpsOptions.from_config(config)

    def cost(self, rows, cols):  # ADMM iterations in the eigenbasis, then the eigendecomposition
        return rows * cols * cols * 4 + 4 * cols**3

    @classmethod
    def workspace_bytes(cls, rows, cols):  # eigendecomposition and ADMM iterates
        return 4.0 * (6 * cols * cols + 3 * rows * cols)

    def solve(self, weight, stats, shared):
        if "alps_factors" not in shared:
            shared["alps_factors"] = alps_factors(self._stat(stats, "gram"), self.config.dampening)
        o = self.options
        return alps_prune(weight, None, self.config.sparsity, self.config.nm, rho=o.rho, max_iter=o.max_iter,
                          update_iter=o.update_iter, switch_iter=o.switch_iter, cg_iters=o.cg_iters,
                          factors=shared["alps_factors"])  # fmt: skip
