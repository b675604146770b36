"""Configuration dataclasses.

Every config is a plain `@dataclass` whose fields carry `metadata={"help": ...}` so that `transformers.HfArgumentParser`
can turn it into command-line flags, and that validates itself in `__post_init__` so a bad value fails before any
work starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .kernels import GRAM_DTYPES

__all__ = ["PruningConfig", "parse_sparsity_type", "PRUNING_METHODS", "LAYER_SCOPES", "TOKEN_MASKS"]

PRUNING_METHODS = ("magnitude", "wanda", "sparsegpt", "alps")  # the built-in solvers; more can be registered
LAYER_SCOPES = ("all", "first_third", "first_last_third")
TOKEN_MASKS = ("all", "prompt", "response")
MOE_STATISTICS = ("routed", "all_tokens")
STARVED_EXPERTS = ("all_tokens", "magnitude", "routed")
SPARSITY_PROFILES = ("uniform", "owl")
# Fields that change where or how often work happens but never the pruned weights.
_NON_NUMERIC_FIELDS = (
    "moe_stats_memory_gb",
    "expert_solve_batch",
    "output_dir",
    "device",
    "offload_activations",
    "save_every_n_layers",
    "restore_on_error",
    "reconstruction_error",
    "error_sample_tokens",
)


def parse_sparsity_type(sparsity_type: str) -> tuple[int, int] | None:
    """Parse `"unstructured"` (returns `None`) or `"N:M"` (returns `(N, M)`: N zeros in every M weights)."""
    if sparsity_type == "unstructured":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(sparsity_type))
    if match is None:
        raise ValueError(
            f"sparsity_type={sparsity_type!r} is not understood: use 'unstructured' or 'N:M' such as '2:4' or '4:8'."
        )
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise ValueError(f"sparsity_type={sparsity_type!r}: N:M needs 0 < N < M (N zeros in every M weights).")
    return n, m


@dataclass
class PruningConfig:
    r"""
    Configuration of [`OneShotPruner`].

    > Parameters that control what is pruned

    method (`str`, *optional*, defaults to `"sparsegpt"`):
        One of `"magnitude"`, `"wanda"`, `"sparsegpt"` or `"alps"`, or the name of a solver registered with
        `hf_ssgr.pruning.solvers.register_solver`.
    sparsity (`float`, *optional*, defaults to `0.5`):
        Fraction of the weights of every pruned matrix set to zero, in `[0, 1)`.
    sparsity_type (`str`, *optional*, defaults to `"unstructured"`):
        `"unstructured"`, or `"N:M"` (for example `"2:4"` or `"4:8"`): N zeros in every M consecutive input weights of
        a row. `sparsity` must then equal N/M.
    sparsity_profile (`str`, *optional*, defaults to `"uniform"`):
        How the sparsity is spread over the pruned decoder layers: `"uniform"`, every layer at `sparsity`; `"owl"`,
        outlier-weighted layer-wise sparsity (OWL, Yin et al. 2024, as llm-compressor's `sparsity_profile="owl"`):
        before pruning, one pass of the dense model over the calibration rows measures each layer's outlier ratio
        D_l, the share of the entries of the Wanda metric |W| · ‖X‖₂ over all the layer's pruned weights that exceed
        `owl_m` times the layer's mean; the ratios are min-max scaled to [0, 2·`owl_lambda`] and shifted so the
        layers' mean density is 1 − `sparsity`, and layer l is pruned at 1 − that density. Layers with more
        outliers keep more weights; the mean over layers is `sparsity`. Unstructured sparsity only. See
        `hf_ssgr.pruning.owl`.
    owl_m (`float`, *optional*, defaults to `5.0`):
        OWL outlier threshold M: an entry is an outlier when its metric exceeds M times the layer's mean (paper
        default).
    owl_lambda (`float`, *optional*, defaults to `0.08`):
        OWL λ: the layers' sparsities span at most [sparsity − 2λ, sparsity + 2λ] (paper default 0.08).
    layer_sparsities (`list[float]`, *optional*):
        An explicit sparsity for each pruned decoder layer, in the order of the layers `layers` selects (one value
        per layer, each in [0, 1)). `sparsity` must equal their mean. Unstructured sparsity only.
    layers (`str` or `list[int]`, *optional*, defaults to `"all"`):
        Decoder layers to prune: `"all"`, `"first_third"`, `"first_last_third"`, a list of indices, or a
        comma-separated string of indices such as `"0,1,5"`.
    targets (`list[str]`, *optional*):
        Weights inside a decoder layer to prune. `None` means every `nn.Linear` and every expert's projections in a
        fused mixture-of-experts module, routers excepted (see `hf_ssgr.pruning.targets`). An entry matches a module
        whose name relative to the decoder layer equals it, ends with `.<entry>`, or starts with `<entry>.` (so
        `"mlp"` selects the whole MLP); entries starting with `re:` are regular expressions matched against the full
        relative name. An expert's projection is named `mlp.experts.down_proj.3` and also matches through its fused
        parameter's name (`mlp.experts`, `mlp.experts.down_proj`, `down_proj`). The special entry `"lm_head"` also prunes the output projection (refused when it is tied to
        the input embeddings).
    exclude (`list[str]`, *optional*, defaults to `[]`):
        Modules to leave dense, with the same matching rules as `targets`. Embeddings and `lm_head` are never pruned
        unless `targets` names `lm_head`.

    > Parameters for mixtures of experts

    moe_statistics (`str`, *optional*, defaults to `"routed"`):
        The tokens whose statistics prune each expert's projections: `"routed"`, the tokens the router sends that
        expert (top-k, as in the forward); `"all_tokens"`, every token, for the statistics only (the forward still
        follows the router), as llm-compressor's `calibrate_all_experts`.
    starved_experts (`str`, *optional*, defaults to `"all_tokens"`):
        What prunes an expert that received fewer routed tokens than its input size (its `XᵀX` is then singular,
        and an expert that received none has no statistics at all): `"all_tokens"`, its statistics from every
        token instead; `"magnitude"`, magnitude pruning; `"routed"`, its few routed tokens as they are. Such
        experts are warned about and recorded (`starved` in the module metrics, `solver_warnings` in
        `pruning_config.json`). Has no effect with `moe_statistics="all_tokens"`.
    moe_stats_memory_gb (`float`, *optional*):
        Memory, in GiB, that the experts' statistics of one layer may take; the experts are then collected and
        solved in groups that fit, one pass over the calibration data each (the result does not change). Defaults
        to half of what the compute device has free.
    expert_solve_batch (`int`, *optional*, defaults to `8`):
        Experts of one fused module (same projection and shape) solved in one batched solver call, for the solvers
        that have one (SparseGPT); `1` solves them one by one. Each expert keeps its own statistics and mask, and the
        result is the one-by-one result up to float rounding. The batch is also bounded so that its workspace fits
        in a quarter of the statistics' memory bound. 8 was the fastest batch on 2 CPU cores
        (`benchmarks/measured/cpu_expert_solves.md`).

    > Parameters that control the solvers

    block_size (`int`, *optional*, defaults to `128`):
        SparseGPT column block size. Must be a multiple of M for N:M sparsity.
    dampening (`float`, *optional*, defaults to `0.01`):
        SparseGPT / ALPS ridge term, as a fraction of the mean of the Hessian diagonal.
    alps_rho (`float`, *optional*, defaults to `0.1`):
        ALPS initial ADMM penalty ρ (reference default).
    alps_max_iter (`int`, *optional*, defaults to `300`):
        ALPS maximum number of ADMM iterations (reference default).
    alps_update_iter (`int`, *optional*, defaults to `3`):
        ALPS: how often (in iterations) ρ is adapted to the change of support.
    alps_switch_iter (`int`, *optional*, defaults to `30`):
        ALPS: after this many iterations, stop once the support has settled.
    alps_cg_iters (`int`, *optional*, defaults to `10`):
        ALPS: iterations of the conjugate-gradient refinement on the fixed support.
    reconstruction_error (`bool`, *optional*, defaults to `True`):
        Record each module's relative reconstruction error `‖(W − Ŵ)X‖² / ‖WX‖²` (with `error_tokens`, the number of
        tokens it is computed on). Exact and free for SparseGPT and ALPS, which need `XᵀX` anyway; for Wanda and
        magnitude it is estimated on a token sample (see `error_sample_tokens`).
    error_sample_tokens (`int`, *optional*, defaults to `1024`):
        For methods that never form `XᵀX` (Wanda, magnitude): the reconstruction error is estimated on a uniform
        sample of this many calibration tokens (the same positions in every layer, drawn with `seed`), which costs
        `2 · tokens · d_in · d_out` per module (about 3% of a Wanda prune of a 100M model on 64 × 512 tokens) instead
        of an `XᵀX` over every token. With fewer calibration tokens than this, every token is used and the figure is
        exact. `0` computes it exactly from `XᵀX` (slower).

    > Parameters that control the calibration data

    token_mask (`str`, *optional*, defaults to `"all"`):
        Which calibration tokens feed the statistics: `"all"`, `"prompt"` (the first `prompt_length` tokens of each
        row) or `"response"` (the rest). Needs a `prompt_length` column for the latter two.
    batch_size (`int`, *optional*, defaults to `1`):
        Calibration rows per forward pass. Rows of a batch are right-padded; padding never enters the statistics.
    chunk_size (`int`, *optional*, defaults to `4096`):
        Tokens per matrix product when accumulating `XᵀX`, which bounds the temporary memory of the statistics.
    gram_dtype (`str`, *optional*, defaults to `"float32"`):
        Precision of the `XᵀX` products on a CPU (the sum is always float32). `"float32"` upcasts the activations and
        multiplies in float32, as the reference implementations do. `"bfloat16"` multiplies bfloat16 activations
        with float32 accumulation inside each product and rounds each product's result to bfloat16 before adding it:
        about 1.9× faster products on CPUs with AVX-512 bf16, at a relative error of about 1e-3 in `XᵀX`. On a
        GPU, 16-bit activations always go through a 16-bit product with float32 output, which is exact, so this
        setting changes nothing there. `"float64"` multiplies and sums in float64 and rounds the finished (and, across
        processes, all-reduced) `XᵀX` to float32 for the solve: the statistics then do not depend on how the rows
        were split between processes or batched (a different summation order moves a float64 sum by about 1e-16,
        which almost never changes its float32 rounding), so 1 and N processes give the same model. It doubles the
        memory of `XᵀX` while it is collected and costs more time on a CPU (see docs/pruning.md).

    > Parameters that control devices, checkpoints and reproducibility

    device (`str`, *optional*):
        Compute device, such as `"cpu"` or `"cuda"`. Defaults to the device of the first decoder layer. Only the
        layer being pruned is moved there.
    offload_activations (`bool`, *optional*, defaults to `False`):
        Keep the cached layer inputs on the CPU (pinned when computing on a GPU) and stream them batch by batch.
    output_dir (`str`, *optional*):
        Where checkpoints (`checkpoint-layer-XXX/`) and `metrics.jsonl` are written. Needed for resuming.
    save_every_n_layers (`int`, *optional*, defaults to `1`):
        Checkpoint frequency, in decoder layers, when `output_dir` is set.
    restore_on_error (`bool`, *optional*, defaults to `True`):
        Write a copy of every weight to a temporary folder before it is overwritten and put it back if pruning fails,
        so that a failed run leaves the model as it was. Costs temporary disk space equal to the pruned weights (the
        folder honours `TMPDIR`), not memory.
    seed (`int`, *optional*, defaults to `0`):
        Seed set before pruning. The solvers are deterministic; the seed only matters for code that samples.
    """

    method: str = field(
        default="sparsegpt",
        metadata={"help": f"Pruning method: one of {', '.join(PRUNING_METHODS)}, or a registered solver."},
    )
    sparsity: float = field(default=0.5, metadata={"help": "Fraction of weights set to zero per matrix, in [0, 1)."})
    sparsity_type: str = field(
        default="unstructured", metadata={"help": "'unstructured' or 'N:M' (N zeros in every M weights), e.g. '2:4'."}
    )
    sparsity_profile: str = field(
        default="uniform",
        metadata={"help": "Sparsity over layers: 'uniform' or 'owl' (outlier-weighted layer-wise, unstructured only)."},
    )
    owl_m: float = field(default=5.0, metadata={"help": "OWL: outlier threshold M (times the layer's mean metric)."})
    owl_lambda: float = field(
        default=0.08, metadata={"help": "OWL: lambda; the layers' sparsities span sparsity +- 2 lambda."}
    )
    layer_sparsities: list[float] | None = field(
        default=None,
        metadata={"help": "Explicit sparsity per pruned decoder layer (their mean must equal sparsity)."},
    )
    layers: str = field(
        default="all",
        metadata={"help": "Decoder layers: 'all', 'first_third', 'first_last_third' or indices such as '0,1,5'."},
    )
    targets: list[str] | None = field(
        default=None, metadata={"help": "Modules inside a decoder layer to prune (default: every nn.Linear)."}
    )
    exclude: list[str] = field(default_factory=list, metadata={"help": "Modules to leave dense."})
    moe_statistics: str = field(
        default="routed", metadata={"help": "Experts' statistics from their 'routed' tokens or from 'all_tokens'."}
    )
    starved_experts: str = field(
        default="all_tokens",
        metadata={"help": "Experts with fewer routed tokens than inputs: 'all_tokens', 'magnitude' or 'routed'."},
    )
    moe_stats_memory_gb: float | None = field(
        default=None, metadata={"help": "GiB the experts' statistics of a layer may take (default: half the free)."}
    )
    expert_solve_batch: int = field(
        default=8, metadata={"help": "Experts of one module solved in one batched call (SparseGPT); 1: one by one."}
    )
    block_size: int = field(default=128, metadata={"help": "SparseGPT column block size."})
    dampening: float = field(default=0.01, metadata={"help": "Ridge term as a fraction of mean(diag(H))."})
    alps_rho: float = field(default=0.1, metadata={"help": "ALPS initial ADMM penalty."})
    alps_max_iter: int = field(default=300, metadata={"help": "ALPS maximum ADMM iterations."})
    alps_update_iter: int = field(default=3, metadata={"help": "ALPS: iterations between penalty updates."})
    alps_switch_iter: int = field(default=30, metadata={"help": "ALPS: iterations before the support test may stop."})
    alps_cg_iters: int = field(default=10, metadata={"help": "ALPS: conjugate-gradient refinement iterations."})
    reconstruction_error: bool = field(
        default=True, metadata={"help": "Record each module's relative reconstruction error."}
    )
    error_sample_tokens: int = field(
        default=1024,
        metadata={
            "help": "Wanda/magnitude: estimate the reconstruction error on this many sampled tokens (0: exact)."
        },
    )
    token_mask: str = field(
        default="all", metadata={"help": "Tokens feeding the statistics: 'all', 'prompt' or 'response'."}
    )
    batch_size: int = field(default=1, metadata={"help": "Calibration rows per forward pass."})
    chunk_size: int = field(default=4096, metadata={"help": "Tokens per matrix product when accumulating X^T X."})
    gram_dtype: str = field(
        default="float32",
        metadata={
            "help": "X^T X products: 'float32' (reference), 'bfloat16' (CPU, faster, ~1e-3 rel. error) or 'float64' "
            "(the same statistics whatever the number of processes)."
        },
    )
    device: str | None = field(default=None, metadata={"help": "Compute device (default: the model's)."})
    offload_activations: bool = field(default=False, metadata={"help": "Keep cached activations on the CPU."})
    output_dir: str | None = field(default=None, metadata={"help": "Directory for checkpoints and metrics."})
    save_every_n_layers: int = field(default=1, metadata={"help": "Checkpoint every N decoder layers."})
    restore_on_error: bool = field(default=True, metadata={"help": "Restore the original weights if pruning fails."})
    seed: int = field(default=0, metadata={"help": "Random seed."})

    def __post_init__(self):
        from .solvers import get_solver

        get_solver(self.method)  # an unknown name fails with the registered ones
        try:
            self.sparsity = float(self.sparsity)
        except (TypeError, ValueError):
            raise ValueError(f"sparsity={self.sparsity!r} is not a number: pass a float in [0, 1).") from None
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(
                f"sparsity={self.sparsity} is outside [0, 1): pass the fraction of weights to remove, e.g. 0.5."
            )
        nm = parse_sparsity_type(self.sparsity_type)
        if nm is not None:
            n, m = nm
            self.sparsity_type = f"{n}:{m}"
            if abs(self.sparsity - n / m) > 1e-9:
                raise ValueError(
                    f"sparsity_type={self.sparsity_type!r} removes {n}/{m} = {n / m:g} of the weights, but "
                    f"sparsity={self.sparsity:g}: set sparsity={n / m:g} or choose a matching N:M pattern."
                )
            if self.block_size % m != 0:
                raise ValueError(
                    f"block_size={self.block_size} is not a multiple of M={m} for sparsity_type={self.sparsity_type!r}:"
                    f" use a block_size divisible by {m}, e.g. {m * max(1, self.block_size // m)}."
                )
        self._check_layer_profile(nm)
        if self.block_size < 1:
            raise ValueError(f"block_size={self.block_size} must be a positive integer, e.g. 128.")
        if self.dampening < 0:
            raise ValueError(f"dampening={self.dampening} must be >= 0, e.g. 0.01.")
        if self.alps_rho <= 0 or self.alps_max_iter < 1 or self.alps_update_iter < 1 or self.alps_cg_iters < 0:
            raise ValueError(
                "ALPS needs alps_rho > 0, alps_max_iter >= 1, alps_update_iter >= 1 and alps_cg_iters >= 0."
            )
        self.layers = _normalize_layers(self.layers)
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if self.targets is not None and len(self.targets) == 0:
            raise ValueError("targets=[] selects nothing: pass None for every linear module, or name some modules.")
        if isinstance(self.exclude, str):
            self.exclude = [self.exclude]
        self.exclude = list(self.exclude or [])
        for pattern in (self.targets or []) + self.exclude:
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as err:
                    raise ValueError(f"Invalid regular expression in module pattern {pattern!r}: {err}.") from None
        if self.moe_statistics not in MOE_STATISTICS:
            raise ValueError(
                f"moe_statistics={self.moe_statistics!r} is not known: choose one of {', '.join(MOE_STATISTICS)}."
            )
        if self.starved_experts not in STARVED_EXPERTS:
            raise ValueError(
                f"starved_experts={self.starved_experts!r} is not known: choose one of {', '.join(STARVED_EXPERTS)}."
            )
        if self.moe_stats_memory_gb is not None and not self.moe_stats_memory_gb > 0:
            raise ValueError(f"moe_stats_memory_gb={self.moe_stats_memory_gb!r} must be > 0 (GiB), or None.")
        if not isinstance(self.expert_solve_batch, int) or self.expert_solve_batch < 1:
            raise ValueError(f"expert_solve_batch={self.expert_solve_batch!r} must be an integer >= 1.")
        if self.token_mask not in TOKEN_MASKS:
            raise ValueError(f"Unknown token_mask {self.token_mask!r}: choose one of {', '.join(TOKEN_MASKS)}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1.")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size={self.chunk_size} must be >= 1.")
        if self.gram_dtype not in GRAM_DTYPES:
            raise ValueError(
                f"gram_dtype={self.gram_dtype!r} is not supported: choose 'float32' (the reference), 'bfloat16' or "
                "'float64'."
            )
        if not isinstance(self.error_sample_tokens, int) or self.error_sample_tokens < 0:
            raise ValueError(
                f"error_sample_tokens={self.error_sample_tokens!r} must be an integer >= 0 (0 for the exact error)."
            )
        if self.save_every_n_layers < 1:
            raise ValueError(f"save_every_n_layers={self.save_every_n_layers} must be >= 1.")

    def _check_layer_profile(self, nm: tuple[int, int] | None) -> None:
        """Validate `sparsity_profile`, `owl_m`, `owl_lambda` and `layer_sparsities` (the length is checked against
        the model's pruned layers when pruning starts)."""
        if self.sparsity_profile not in SPARSITY_PROFILES:
            raise ValueError(
                f"sparsity_profile={self.sparsity_profile!r} is not known: choose one of "
                f"{', '.join(SPARSITY_PROFILES)}."
            )
        if not float(self.owl_m) > 0 or not float(self.owl_lambda) >= 0:
            raise ValueError(f"OWL needs owl_m > 0 and owl_lambda >= 0 (got {self.owl_m}, {self.owl_lambda}): "
                             "the paper's defaults are owl_m=5, owl_lambda=0.08.")  # fmt: skip
        self.owl_m, self.owl_lambda = float(self.owl_m), float(self.owl_lambda)
        layerwise = self.sparsity_profile == "owl" or self.layer_sparsities is not None
        if layerwise and nm is not None:
            raise ValueError(
                f"sparsity_type={self.sparsity_type!r} fixes N zeros in every M weights of every layer, so it cannot "
                "vary by layer: use sparsity_type='unstructured' with sparsity_profile='owl' or layer_sparsities, or "
                "sparsity_profile='uniform' without layer_sparsities for N:M."
            )
        if self.layer_sparsities is None:
            return
        if self.sparsity_profile == "owl":
            raise ValueError("layer_sparsities and sparsity_profile='owl' both set each layer's sparsity: pass one.")
        if isinstance(self.layer_sparsities, (int, float, str)):
            self.layer_sparsities = [self.layer_sparsities]
        try:
            values = [float(v) for v in self.layer_sparsities]
        except (TypeError, ValueError):
            raise ValueError(
                f"layer_sparsities={self.layer_sparsities!r} must be a list of numbers in [0, 1)."
            ) from None
        bad = [v for v in values if not 0.0 <= v < 1.0]
        if not values or bad:
            raise ValueError(
                f"layer_sparsities={self.layer_sparsities!r}: every value must be in [0, 1) and the list non-empty"
                + (f" ({bad[0]} is not)." if bad else ".")
            )
        self.layer_sparsities = values
        mean = sum(values) / len(values)
        if abs(mean - self.sparsity) > 1e-6:
            raise ValueError(
                f"layer_sparsities average {mean:.6g} over layers but sparsity={self.sparsity:g}: set "
                f"sparsity={mean:.6g}, so that names, cards and reports state the overall sparsity."
            )

    @property
    def layerwise(self) -> bool:
        """Whether the sparsity varies by decoder layer (OWL or an explicit `layer_sparsities`)."""
        return self.sparsity_profile == "owl" or self.layer_sparsities is not None

    @property
    def short_name(self) -> str:
        """A folder-safe name of what is pruned, shared by recipe folders, cards and reports: `sparsegpt-50`,
        `sparsegpt-2of4`, with the layer scope, the token mask and the experts' statistics when they are not the
        defaults (`wanda-50-0_1_5`, `sparsegpt-50-response`, `sparsegpt-50-alltokens`)."""
        tag = (
            f"{self.method}-{self.sparsity_type.replace(':', 'of')}"
            if self.nm
            else f"{self.method}-{round(100 * self.sparsity)}"
        )
        if self.sparsity_profile == "owl":
            tag += "-owl"
        elif self.layer_sparsities is not None:
            tag += "-layerwise"
        if self.layers != "all":
            tag += "-" + (self.layers if isinstance(self.layers, str) else "_".join(str(i) for i in self.layers))
        if self.token_mask != "all":
            tag += f"-{self.token_mask}"
        if self.moe_statistics != "routed":
            tag += "-alltokens"
        if self.starved_experts != "all_tokens":
            tag += f"-starved_{self.starved_experts}"
        return tag

    @property
    def nm(self) -> tuple[int, int] | None:
        """`(N, M)` for N:M sparsity, `None` for unstructured."""
        return parse_sparsity_type(self.sparsity_type)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def numerics_dict(self) -> dict[str, Any]:
        """The fields that decide the pruned weights (used to refuse resuming with a different config)."""
        return {k: v for k, v in self.to_dict().items() if k not in _NON_NUMERIC_FIELDS}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruningConfig:
        from ..utils import dataclass_from_dict

        return dataclass_from_dict(cls, data)

    @classmethod
    def from_yaml(cls, path_or_mapping: str | os.PathLike | dict[str, Any]) -> PruningConfig:
        """Load from a YAML file or an already-parsed mapping. Keys must be field names."""
        if isinstance(path_or_mapping, dict):
            return cls.from_dict(path_or_mapping)
        with open(path_or_mapping, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path_or_mapping}: expected a YAML mapping of PruningConfig fields.")
        return cls.from_dict(data)


def _normalize_layers(layers: Any) -> str | list[int]:
    if isinstance(layers, str):
        if layers in LAYER_SCOPES:
            return layers
        parts = [p.strip() for p in layers.split(",") if p.strip()]
        if parts and all(re.fullmatch(r"-?\d+", p) for p in parts):
            return [int(p) for p in parts]
        raise ValueError(
            f"layers={layers!r} is not understood: use one of {', '.join(LAYER_SCOPES)} or indices such as '0,1,5'."
        )
    if isinstance(layers, int):
        return [layers]
    if isinstance(layers, (list, tuple)) and layers and all(isinstance(i, int) for i in layers):
        return [int(i) for i in layers]
    raise ValueError(
        f"layers={layers!r} is not understood: use one of {', '.join(LAYER_SCOPES)} or a non-empty list of indices."
    )


def resolve_layer_scope(layers: str | list[int], num_layers: int) -> list[int]:
    """Turn a `layers` value into sorted decoder-layer indices for a model with `num_layers` layers."""
    if layers == "all":
        return list(range(num_layers))
    third = num_layers // 3
    if layers == "first_third":
        return list(range(third))
    if layers == "first_last_third":
        return list(range(third)) + list(range(num_layers - third, num_layers))
    out = []
    for i in layers:
        j = i + num_layers if i < 0 else i
        if not 0 <= j < num_layers:
            raise ValueError(f"Layer index {i} is out of range for a model with {num_layers} decoder layers.")
        out.append(j)
    return sorted(set(out))
