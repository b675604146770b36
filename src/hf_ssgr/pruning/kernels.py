"""Pure tensor math of the pruning methods. Nothing here knows about models, layers or devices.

Conventions: a weight `W` has shape `(d_out, d_in)` like `nn.Linear.weight`; an input batch `x` has shape
`(tokens, d_in)`; `gram = Σ xᵀx` over calibration tokens (float32); `count` is the number of tokens summed.
N:M means N zeros in every M consecutive input weights of a row. Masks are `True` where a weight is pruned.

Mask selection is deterministic: on exact ties the lower index is pruned first (stable sorts everywhere), so two runs,
two devices or two processes on the same inputs give identical masks. The references choose N:M groups (and ALPS its
projections) with `torch.topk(largest=False)`, whose order among equal scores is unspecified: on one CPU build it
takes the later of two tied entries in some groups and the earlier in others. Outside exact ties the masks are the
same; ties only happen between equal scores (for example bfloat16 weights under magnitude pruning), whose choice
costs the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

# The precisions of the XᵀX products (`PruningConfig.gram_dtype`); defined here, where they are computed.
GRAM_DTYPES = ("float32", "bfloat16", "float64")

__all__ = [
    "accumulate_gram",
    "all_finite",
    "complete_gram",
    "accumulate_sq_norms",
    "lowest_k_mask",
    "nm_mask",
    "check_nm",
    "check_gram",
    "row_mask",
    "magnitude_prune",
    "wanda_prune",
    "sparsegpt_factor",
    "sparsegpt_prune",
    "sparsegpt_prune_batched",
    "SparseGPTFactor",
    "alps_prune",
    "relative_reconstruction_error",
    "sampled_reconstruction_error",
    "SolveInfo",
]


@dataclass
class SolveInfo:
    """What a solver reports next to the pruned weight."""

    damping: float | None = None  # relative damping actually used (SparseGPT / ALPS)
    iterations: int | None = None  # ALPS ADMM iterations
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# Statistics


_MM_OUT_DTYPE: dict[str, bool] = {}


def _mm_fp32_out_supported(x: torch.Tensor) -> bool:
    """Whether `torch.mm(a, b, out_dtype=torch.float32)` works for 16-bit inputs on this device (CUDA, torch >= 2.9)."""
    key = f"{x.device.type}:{x.dtype}"
    if key not in _MM_OUT_DTYPE:
        try:
            probe = torch.ones(2, 2, dtype=x.dtype, device=x.device)
            _MM_OUT_DTYPE[key] = torch.mm(probe, probe, out_dtype=torch.float32).dtype == torch.float32
        except (TypeError, RuntimeError, NotImplementedError):
            _MM_OUT_DTYPE[key] = False
    return _MM_OUT_DTYPE[key]


def _block_bounds(d: int, blocks: int) -> list[int]:
    size = -(-d // blocks)
    return list(range(0, d, size)) + [d]


def accumulate_gram(
    gram: torch.Tensor, x: torch.Tensor, chunk_size: int = 4096, upper_blocks: int = 1, dtype: str = "float32"
) -> int:
    """`gram += xᵀx`, summed in float32 (in float64 with `dtype="float64"`, into a float64 `gram`), `chunk_size`
    tokens at a time. Returns the number of tokens added.

    16-bit activations on a GPU go through a 16-bit matrix product with float32 accumulation and output: the product
    of two bf16/fp16 numbers is exact in float32, so this is float32 statistics without upcasting the activations
    (and uses the tensor cores). Elsewhere, with `dtype="float32"` (the reference), the chunk is upcast and
    multiplied in float32. With `dtype="bfloat16"` the chunk goes through a bfloat16 product instead (float32
    accumulation inside the product, its result rounded to bfloat16, then added to the float32 sum): about twice as
    fast on CPUs with AVX-512 bf16, at a relative error of about 1e-3 in `XᵀX` (about 1e-7 in float32). Inputs that
    are not bfloat16 are rounded to it first.

    With `upper_blocks=B > 1`, the columns are cut into B blocks and only the blocks on or above the block diagonal
    are accumulated: (B + 1)/(2B) of the work, since XᵀX is symmetric. Call `complete_gram(gram, B)` once after the
    last batch to mirror the rest.
    """
    if dtype not in GRAM_DTYPES:
        raise ValueError(f"Unknown XᵀX product dtype {dtype!r}: choose one of {', '.join(GRAM_DTYPES)}.")
    x = x.reshape(-1, x.shape[-1])
    if dtype == "float64":
        if gram.dtype != torch.float64:
            raise TypeError(f"gram_dtype='float64' accumulates into a float64 XᵀX, got {gram.dtype}.")
    elif x.dtype in (torch.bfloat16, torch.float16) and x.is_cuda and _mm_fp32_out_supported(x):
        gram.add_(torch.mm(x.t(), x, out_dtype=torch.float32))  # no upcast copy, so no need to chunk
        return x.shape[0]
    bounds = _block_bounds(x.shape[-1], upper_blocks) if upper_blocks > 1 else [0, x.shape[-1]]
    for start in range(0, x.shape[0], chunk_size):
        xc = x[start : start + chunk_size].to(getattr(torch, dtype))
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if dtype in ("float32", "float64"):
                gram[lo:hi, lo:].addmm_(xc[:, lo:hi].t(), xc[:, lo:])
            else:
                gram[lo:hi, lo:].add_(torch.mm(xc[:, lo:hi].t(), xc[:, lo:]))
    return x.shape[0]


def all_finite(t: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """A device-side flag: whether every entry of `t` is finite. Checked `rows` rows at a time, since
    `torch.isfinite` of a float tensor makes full-size temporaries (an absolute value and two masks)."""
    t = t.reshape(-1, t.shape[-1]) if t.dim() > 1 else t.reshape(1, -1)
    flags = [torch.isfinite(t[i : i + rows]).all() for i in range(0, t.shape[0], rows)]
    return torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool, device=t.device)


def complete_gram(gram: torch.Tensor, upper_blocks: int) -> torch.Tensor:
    """Fill the blocks below the block diagonal of a Gram matrix accumulated with `upper_blocks` (in place)."""
    if upper_blocks > 1:
        bounds = _block_bounds(gram.shape[0], upper_blocks)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            gram[hi:, lo:hi] = gram[lo:hi, hi:].t()
            # A diagonal block comes out of one product, which the BLAS need not make exactly symmetric.
            diag = gram[lo:hi, lo:hi]
            diag.copy_((diag + diag.t()) / 2)
    return gram


def accumulate_sq_norms(sq_norms: torch.Tensor, x: torch.Tensor, chunk_size: int = 4096) -> int:
    """`sq_norms += Σ_tokens x²` per input channel in float32 (Wanda's statistic). Returns the tokens added."""
    x = x.reshape(-1, x.shape[-1])
    for start in range(0, x.shape[0], chunk_size):
        xc = x[start : start + chunk_size].to(torch.float32)
        sq_norms.add_(xc.pow(2).sum(0))
    return x.shape[0]


# ----------------------------------------------------------------------------------------------------------------
# Mask selection


def lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the `k` lowest entries of `scores` (whole tensor), ties towards the lower flat index.

    Selection in O(numel): the k-th smallest value is found with `kthvalue`; everything below it is taken, and the
    entries equal to it fill the rest in flat order. Same result as a stable argsort, without the sort.
    """
    flat = scores.reshape(-1)
    n = flat.numel()
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(flat.cpu() if flat.device.type == "mps" else flat, k).values
    below = flat < threshold
    equal = flat == threshold
    missing = k - int(below.sum())
    take_equal = equal & (torch.cumsum(equal, 0) <= missing)
    return (below | take_equal).reshape(scores.shape)


def row_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the `k` lowest entries of every row, ties towards the lower column.

    Same selection as a stable argsort per row, found with a row-wise `kthvalue` instead of a sort.
    """
    cols = scores.shape[-1]
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= cols:
        return torch.ones_like(scores, dtype=torch.bool)
    source = scores.cpu() if scores.device.type == "mps" else scores
    threshold = torch.kthvalue(source, k, dim=-1, keepdim=True).values.to(scores.device)
    below = scores < threshold
    equal = scores == threshold
    missing = k - below.sum(-1, keepdim=True)
    return below | (equal & (torch.cumsum(equal, -1) <= missing))


def check_nm(cols: int, nm: tuple[int, int] | None, what: str = "the weight") -> None:
    """Refuse an N:M pattern that does not tile the input columns, naming the numbers."""
    if nm is None:
        return
    n, m = nm
    if not 0 < n < m:
        raise ValueError(f"N:M sparsity needs 0 < N < M, got {n}:{m}.")
    if cols % m:
        raise ValueError(
            f"{n}:{m} sparsity needs a number of input columns divisible by {m}, but {what} has {cols}: choose an M "
            f"that divides {cols}, or leave this module out of the targets."
        )


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Mask of the `n` lowest entries in every group of `m` consecutive columns of each row, ties towards the lower
    column (the order of a stable sort; see the module docstring for the references' `topk`).

    For M ≤ 8 (2:4, 4:8) each entry's rank in its group is counted from the M(M−1) pairwise comparisons (an entry
    ranks after every smaller one and every equal one to its left), which is several times faster than sorting
    groups of four; larger M sorts."""
    rows, cols = scores.shape
    check_nm(cols, (n, m), "the scores")
    groups = scores.reshape(rows, cols // m, m)
    if m <= 8:
        rank = torch.zeros(groups.shape, dtype=torch.int8, device=scores.device)
        for j in range(m):
            for k in range(m):
                if k != j:
                    rank[..., j] += groups[..., k] <= groups[..., j] if k < j else groups[..., k] < groups[..., j]
        return (rank < n).reshape(rows, cols)
    idx = torch.argsort(groups, dim=-1, stable=True)[..., :n]
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(-1, idx, True)
    return mask.reshape(rows, cols)


# ----------------------------------------------------------------------------------------------------------------
# Solvers


def magnitude_prune(weight: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None) -> torch.Tensor:
    """Magnitude pruning: |W| per matrix (the lowest ⌊numel·s⌋ weights), or per group of M for N:M."""
    w = weight.to(torch.float32)
    scores = w.abs()
    mask = nm_mask(scores, *nm) if nm else lowest_k_mask(scores, int(w.numel() * sparsity))
    return w.masked_fill(mask, 0.0)


def wanda_prune(
    weight: torch.Tensor, sq_norms: torch.Tensor, count: int, sparsity: float, nm: tuple[int, int] | None = None
) -> torch.Tensor:
    """Wanda (Sun et al. 2023): score |W_ij| · ‖X_j‖₂, compared per output row.

    `sq_norms / count` is the mean squared norm of each input channel; exactly ⌊d_in·s⌋ weights are pruned per row
    (stable sort), or N in every group of M for N:M.
    """
    w = weight.to(torch.float32)
    scores = w.abs() * torch.sqrt(sq_norms.to(torch.float32) / max(count, 1)).reshape(1, -1)
    mask = nm_mask(scores, *nm) if nm else row_mask(scores, int(w.shape[1] * sparsity))
    return w.masked_fill(mask, 0.0)


_SPARSEGPT_SUB_BLOCK = 16


def _lower_triangular_inverse_(m: torch.Tensor, leaf: int = 256) -> torch.Tensor:
    """Invert a lower-triangular matrix (zeros above the diagonal) in place, by recursive 2x2 blocks: [[A, 0], [C, D]]⁻¹
    has the blocks A⁻¹, D⁻¹ and -D⁻¹CA⁻¹. n³/3 multiply-adds in matrix products, a third of a triangular solve against
    the identity, and no full-size copy: the temporaries are the size of C."""
    n = m.shape[0]
    if n <= leaf:
        m.copy_(torch.linalg.solve_triangular(m, torch.eye(n, dtype=m.dtype, device=m.device), upper=False))
        return m
    k = n // 2
    a_inv = _lower_triangular_inverse_(m[:k, :k], leaf)
    d_inv = _lower_triangular_inverse_(m[k:, k:], leaf)
    c = m[k:, :k]
    c.copy_(d_inv @ (c @ a_inv)).neg_()
    return m


def _reverse_rows_and_columns_(m: torch.Tensor, rows_per_step: int = 256) -> torch.Tensor:
    """`m.flip(0, 1)` in place (square m), a band of rows at a time: no full-size copy."""
    n = m.shape[0]
    half = n // 2
    for i in range(0, half, rows_per_step):
        j = min(i + rows_per_step, half)
        top = m[i:j].flip(0, 1)
        m[i:j] = m[n - j : n - i].flip(0, 1)
        m[n - j : n - i] = top
    if n % 2:
        m[half] = m[half].flip(0)
    return m


def _transpose_(m: torch.Tensor, block: int = 256) -> torch.Tensor:
    """`m.T` in place (square m), a pair of blocks at a time: no full-size copy."""
    n = m.shape[0]
    for i in range(0, n, block):
        i2 = min(i + block, n)
        m[i:i2, i:i2] = m[i:i2, i:i2].t().clone()
        for j in range(i2, n, block):
            j2 = min(j + block, n)
            upper = m[i:i2, j:j2].clone()
            m[i:i2, j:j2] = m[j:j2, i:i2].t()
            m[j:j2, i:i2] = upper.t()
    return m


def _cholesky_inverse_upper(
    hessian: torch.Tensor, dampening: float, max_damping: float = 100.0, scale: float = 1.0, dead=None
) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor U of `(H + λI)⁻¹ = UᵀU` with H = `scale`·`hessian` (dead inputs: H_ii = 1) and
    λ = damping · mean(diag H) over the live inputs only. (The reference takes the mean over every input, the dead
    ones' 1s included; with H normalised by the token count those 1s do not scale with the activations and can
    dominate the mean: λ would then depend on the activation scale and on how many inputs are dead.)

    Computed as U = P L⁻¹ P, where P reverses the order of rows and columns and L is the lower Cholesky factor of
    P(H + λI)P: one factorisation and one triangular inverse, where the reference's cholesky → cholesky_inverse →
    cholesky takes twice the arithmetic. Same U up to rounding (closer to a float64 computation, in tests). The
    scaled, flipped and damped copy of `hessian` is the only full-size allocation: it is factorised, inverted and
    reversed in place.

    If the factorisation fails, the relative damping is multiplied by 10 (starting from at least 1e-4) and the solve
    retried, up to `max_damping`; the damping that worked is returned so that the caller can record it. There is no
    silent fallback to an identity Hessian.
    """

    def damped(damping: float) -> torch.Tensor:  # P(H + λI)P
        h = hessian.flip(0, 1)  # a copy: `hessian` is never modified
        h = (h if h.dtype in (torch.float32, torch.float64) else h.to(torch.float32)).mul_(scale)
        diag = h.diagonal()
        if dead is not None and bool(dead.any()):
            flipped = dead.flip(0)
            live = diag[~flipped]
            mean = live.mean() if live.numel() else torch.ones((), dtype=h.dtype, device=h.device)
            diag[flipped] = 1.0
        else:
            mean = torch.mean(diag)
        diag.add_(damping * mean)
        return h

    damping = dampening
    while True:
        # Factorised, inverted and reversed in place: the damped copy is the only full-size allocation. The damped
        # matrix is symmetric, so its transposed view is the column-major layout LAPACK factorises without a copy.
        work = damped(damping)
        info = torch.empty((), dtype=torch.int32, device=work.device)
        torch.linalg.cholesky_ex(work.mT, out=(work.mT, info))  # work.mT now holds L
        if int(info) == 0:
            upper = _reverse_rows_and_columns_(_transpose_(_lower_triangular_inverse_(work.mT).mT))
            if bool(all_finite(upper)):
                return upper, damping
        del work
        if damping >= max_damping:
            raise torch.linalg.LinAlgError(
                f"The Hessian is not positive definite even with damping {damping:g} x mean(diag(H)): check the "
                "calibration activations for degenerate inputs."
            )
        damping = max(damping * 10, 1e-4)


@dataclass
class SparseGPTFactor:
    """`hinv`: upper factor U of (H + λI)⁻¹ = UᵀU; `dead`: inputs with H_ii = 0; `damping`: the relative damping used."""

    hinv: torch.Tensor
    dead: torch.Tensor
    damping: float


def check_gram(gram: torch.Tensor, method: str) -> None:
    """Refuse an `XᵀX` that holds NaN or inf, naming the cause (a factorisation would blame positive definiteness)."""
    if not bool(all_finite(gram)):
        bad = int((~torch.isfinite(gram)).sum())
        raise ValueError(
            f"{method}: XᵀX holds {bad} NaN or inf entries, so non-finite activations reached this module: check the "
            "calibration data and the model's weights for NaN/inf (a float16 model can overflow: load it in "
            "bfloat16 or float32)."
        )


def sparsegpt_factor(gram: torch.Tensor, count: int, dampening: float = 0.01) -> SparseGPTFactor:
    """The part of a SparseGPT solve that depends only on the input: the dead inputs and the upper Cholesky factor of
    the damped inverse Hessian, H = (2/N) Σ xxᵀ (see [`sparsegpt_prune`]). Weights that read the same input (q/k/v,
    gate/up, every expert under `all_tokens` statistics) can share one."""
    if gram.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"sparsegpt_prune needs a float32 or float64 gram (XᵀX), got {gram.dtype}.")
    check_gram(gram, "SparseGPT")
    dead = torch.diag(gram) == 0
    hinv, damping = _cholesky_inverse_upper(gram, dampening, scale=2.0 / max(count, 1), dead=dead)
    return SparseGPTFactor(hinv, dead, damping)


def sparsegpt_prune(
    weight: torch.Tensor,
    gram: torch.Tensor,
    count: int,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    block_size: int = 128,
    dampening: float = 0.01,
) -> tuple[torch.Tensor, SolveInfo]:
    """SparseGPT (Frantar & Alistarh 2023), following IST-DASLab `sparsegpt.py::fasterprune`.

    H = (2/N) Σ xxᵀ. Dead inputs (H_ii = 0) get H_ii = 1 and their weight column zeroed before damping. Columns are
    processed in blocks of `block_size`: the unstructured mask is chosen per block from w²/diag(Hinv)² on the
    already-updated block (exactly ⌊rows·block·s⌋ weights, the lowest scores); an N:M mask is chosen every M
    columns per row on the current weights. Each column's error is spread over the later columns of the block, and
    the later blocks are updated lazily.

    Differences from the reference code, all deliberate: the unstructured mask takes exactly the ⌊rows·block·s⌋
    lowest scores (the reference keeps every score ≤ the value at that index, one more weight per block and any
    ties); H is normalised by the token count rather than the sequence count (a scale that cancels in the solve);
    the damping is relative to the mean of the live diagonal (see `_cholesky_inverse_upper`).

    The solve runs in float32, or in float64 when `gram` is float64 (the returned weight is then float64).
    """
    factor = sparsegpt_factor(gram, count, dampening)
    (w,) = sparsegpt_prune_batched(weight[None], [factor], sparsity, nm, block_size)
    return w, SolveInfo(damping=factor.damping)


def sparsegpt_prune_batched(
    weights: torch.Tensor,
    factors: list[SparseGPTFactor],
    sparsity: float,
    nm: tuple[int, int] | None = None,
    block_size: int = 128,
) -> torch.Tensor:
    """[`sparsegpt_prune`] of B weights of one shape at once, each against its own factor (the experts of a fused
    mixture-of-experts module): `weights` is `(B, rows, cols)`, and the result is what B separate calls return, up to
    float rounding. Each weight keeps its own mask (the unstructured selection is per weight and block, never across
    weights). One batched column loop in place of B: the per-column operations, which bound a solve's time on a GPU
    and much of it on a CPU, are issued once for the batch.

    Returns the pruned weights, `(B, rows, cols)`, in the factors' dtype (a new tensor; `weights` is not modified).
    """
    batch, rows, cols = weights.shape
    if len(factors) != batch:
        raise ValueError(f"{batch} weights but {len(factors)} factors.")
    check_nm(cols, nm)
    dtype = factors[0].hinv.dtype
    w = weights.to(dtype=dtype, copy=True)
    for b, f in enumerate(factors):
        w[b][:, f.dead] = 0.0
    first = factors[0].hinv
    shared = all(f.hinv is first for f in factors)
    hinv = first.expand(batch, cols, cols) if shared else torch.stack([f.hinv for f in factors])
    # Columns of a block are visited in sub-blocks: a column's error updates the rest of its sub-block at once and
    # the later sub-blocks of the block in one matrix product when the sub-block ends (the reference's lazy update,
    # one level down). Every column still sees all the updates of the columns before it when it is reached, so the
    # result is the reference's up to float rounding; the rank-1 updates touch `sub` columns instead of the whole
    # block. The block is held transposed so that a column is a contiguous row.
    sub = _SPARSEGPT_SUB_BLOCK if nm is None else max(nm[1], _SPARSEGPT_SUB_BLOCK // nm[1] * nm[1])
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        count_b = i2 - i1
        wt = w[:, :, i1:i2].transpose(1, 2).contiguous()  # (B, block, rows): [b, i] is column i1 + i of weight b
        qt = torch.empty_like(wt)
        errt = torch.empty_like(wt)
        hinv1 = hinv[:, i1:i2, i1:i2]
        d1 = torch.diagonal(hinv1, dim1=1, dim2=2)  # (B, block)
        if nm is None:
            scores = wt.transpose(1, 2).pow(2) / d1[:, None, :].pow(2)  # (B, rows, block)
            k = int(rows * count_b * sparsity)
            maskt = row_mask(scores.reshape(batch, -1), k).reshape(batch, rows, count_b).transpose(1, 2).contiguous()
        else:
            n, m = nm
            maskt = torch.zeros_like(wt, dtype=torch.bool)
        for j1 in range(0, count_b, sub):
            j2 = min(j1 + sub, count_b)
            for i in range(j1, j2):
                if nm is not None and i % m == 0:
                    scores = wt[:, i : i + m].transpose(1, 2).pow(2) / d1[:, None, i : i + m].pow(2)
                    maskt[:, i : i + m] = nm_mask(scores.reshape(-1, m), n, m).reshape(batch, rows, m).transpose(1, 2)
                col = wt[:, i]
                q = col.masked_fill(maskt[:, i], 0.0)
                qt[:, i] = q
                e = (col - q) / hinv1[:, i, i, None]
                errt[:, i] = e
                if i + 1 < j2:
                    wt[:, i + 1 : j2].baddbmm_(hinv1[:, i, i + 1 : j2, None], e[:, None, :], alpha=-1.0)
            if j2 < count_b:
                wt[:, j2:].baddbmm_(hinv1[:, j1:j2, j2:].transpose(1, 2), errt[:, j1:j2], alpha=-1.0)
        w[:, :, i1:i2] = qt.transpose(1, 2)
        if i2 < cols:
            w[:, :, i2:].baddbmm_(errt.transpose(1, 2), hinv[:, i1:i2, i2:], alpha=-1.0)
    return w


def _alps_project(b: torch.Tensor, keep: int, nm: tuple[int, int] | None) -> torch.Tensor:
    """Keep the `keep` largest |b| (unstructured, whole matrix) or zero N of every M in a row of `bᵀ` (N:M).

    `b` is laid out as in ALPS, `(d_in, d_out)`: a row of the weight is a column of `b`.
    """
    if nm is None:
        mask = lowest_k_mask(b.pow(2), b.numel() - keep)
        return b.masked_fill(mask, 0.0)
    n, m = nm
    bt = b.t()
    return bt.masked_fill(nm_mask(bt.pow(2), n, m), 0.0).t()


def _masked_cg(
    a: torch.Tensor, rhs: torch.Tensor, support: torch.Tensor, x0: torch.Tensor, max_iter: int, rtol: float
):
    """Conjugate gradient for `A X = B` restricted to `support` (columns solved independently; A is SPD)."""
    x = x0.clone()
    r = (rhs - a @ x) * support
    p = r.clone()
    rs = (r * r).sum(0)
    rhs_norm = torch.linalg.vector_norm(rhs * support, dim=0)
    for _ in range(max_iter):
        ap = (a @ p) * support
        denom = (p * ap).sum(0)
        alpha = torch.where(denom > 0, rs / denom.clamp_min(1e-30), torch.zeros_like(rs))
        x += alpha.unsqueeze(0) * p
        r -= alpha.unsqueeze(0) * ap
        rs_new = (r * r).sum(0)
        if bool((rs_new.sqrt() <= rtol * rhs_norm).all()):
            break
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-30), torch.zeros_like(rs))
        p = r + beta.unsqueeze(0) * p
        rs = rs_new
    return x


@dataclass
class AlpsFactors:
    """What ALPS precomputes from XᵀX; shared by every module that reads the same input."""

    gram_n: torch.Tensor  # normalised, damped XᵀX (unit diagonal)
    x_norm: torch.Tensor  # per-channel scale used for the normalisation
    eigvals: torch.Tensor
    eigvecs: torch.Tensor
    damping: float


def alps_factors(gram: torch.Tensor, dampening: float = 0.01, max_damping: float = 100.0) -> AlpsFactors:
    """The damped, column-normalised XᵀX and its eigendecomposition (float64), as ALPS's reference computes them.

    XᵀX is positive semi-definite in exact arithmetic, but a rounded one (16-bit products, few tokens) or a user's
    matrix may not be: when the damped, normalised matrix has an eigenvalue that is not positive (beyond 1e-12 of the
    largest), the relative damping is multiplied by 10 (from at least 1e-4), as SparseGPT does, up to `max_damping`.
    The damping used is recorded in the factors.
    """
    check_gram(gram, "ALPS")
    base = gram.to(torch.float32)
    idx = torch.arange(base.shape[0], device=base.device)
    mean_diag = torch.mean(torch.diag(base))
    damping = dampening
    while True:
        g = base.clone()
        g[idx, idx] += damping * mean_diag
        x_norm = torch.diag(g).clamp_min(0).sqrt() + 1e-8
        g = g / x_norm.reshape(1, -1) / x_norm.reshape(-1, 1)
        if bool(all_finite(g)):
            eigvals, eigvecs = torch.linalg.eigh(g.double())
            if bool(torch.isfinite(eigvals).all()) and float(eigvals[0]) > 1e-12 * float(eigvals[-1].abs()):
                return AlpsFactors(g, x_norm, eigvals, eigvecs, damping)
        if damping >= max_damping:
            raise torch.linalg.LinAlgError(
                f"ALPS: XᵀX is not positive definite even with damping {damping:g} x mean(diag(XᵀX)): check the "
                "calibration activations for degenerate inputs."
            )
        damping = max(damping * 10, 1e-4)


def _alps_objective(b: torch.Tensor, b_orig: torch.Tensor, g: torch.Tensor, denominator: float) -> float:
    """‖(W − Ŵ)X‖² / ‖WX‖² in ALPS's normalised basis (the same value as in the original one)."""
    delta = b - b_orig
    return float(torch.sum(delta * (g @ delta))) / denominator if denominator > 0 else 0.0


def alps_prune(
    weight: torch.Tensor,
    gram: torch.Tensor | None,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    rho: float = 0.1,
    max_iter: int = 300,
    update_iter: int = 3,
    switch_iter: int = 30,
    cg_iters: int = 10,
    dampening: float = 0.01,
    factors: AlpsFactors | None = None,
) -> tuple[torch.Tensor, SolveInfo]:
    """ALPS (Meng et al. 2024, arXiv 2406.07831), following `mazumder-lab/ALPS alps.py`.

    Operator splitting (ADMM) on min ‖(W − Ŵ)X‖² s.t. Ŵ sparse, in the column-normalised basis, with the penalty ρ
    adapted to how much the support still moves; then a conjugate-gradient refinement of the kept weights on the
    fixed support. Unstructured sparsity keeps the ⌈(1−s)·numel⌉ largest weights of the whole matrix, as the
    reference does; N:M zeroes N of every M inputs per row.
    """
    check_nm(weight.shape[1], nm)
    if factors is None:
        factors = alps_factors(gram, dampening)
    g, x_norm = factors.gram_n, factors.x_norm
    w = weight.to(device=g.device, dtype=torch.float32)
    b_orig = (w * x_norm.reshape(1, -1)).t().contiguous()  # (d_in, d_out)
    rhs = (b_orig.t() @ g).t().contiguous()  # (W̃ G̃)ᵀ
    numel = b_orig.numel()
    keep = int(round((1.0 - sparsity) * numel)) if nm is None else None
    k_spar = keep if nm is None else numel * nm[0] / nm[1]
    d_init = _alps_project(b_orig, keep, nm)
    b, iterations = _alps_admm(factors, b_orig, rhs, d_init, keep, k_spar, nm, rho, max_iter, update_iter,
                               switch_iter)  # fmt: skip
    b = _alps_project(b, keep, nm)
    if cg_iters > 0:
        b = _masked_cg(g, rhs, (b != 0).to(torch.float32), b, cg_iters, rtol=1e-4)
    b, extra = _alps_guard(b, b_orig, d_init, g, rhs, cg_iters)
    w_new = (b.t() / x_norm.reshape(1, -1)).contiguous()
    return w_new, SolveInfo(damping=factors.damping, iterations=iterations, extra=extra)


def _alps_admm(factors: AlpsFactors, b_orig, rhs, d_init, keep, k_spar, nm, rho, max_iter, update_iter, switch_iter):
    """ALPS's ADMM iterations, with the reference's penalty schedule: ρ grows while the support moves a lot, shrinks
    (and the iterates restart) while it barely moves before having moved, and the loop stops once it has settled.
    Returns the last iterate `b` (before projection) and the number of iterations."""
    q = factors.eigvecs
    inverse: dict[float, torch.Tensor] = {}

    def solve_plus_rho(r: float, rhs_: torch.Tensor) -> torch.Tensor:
        # (G + ρI)⁻¹ = Q diag(1 / (λ + ρ)) Qᵀ, formed in float64 once per value of ρ (ρ changes at most every
        # `update_iter` iterations), so that an iteration is one float32 product, as in the reference
        if r not in inverse:
            inverse.clear()
            inverse[r] = ((q * (1.0 / (factors.eigvals + r)).unsqueeze(0)) @ q.t()).to(torch.float32)
        return inverse[r] @ rhs_

    def support(d: torch.Tensor) -> torch.Tensor:
        return (d == 0).to(torch.float32)

    b, d = b_orig.clone(), d_init.clone()
    v = torch.zeros_like(b)
    supp_prev = support(d)
    init_rho = False
    iterations = 0
    for it in range(max_iter):
        iterations = it + 1
        b = solve_plus_rho(rho, rhs - v + rho * d)
        d = _alps_project((v + rho * b) / rho, keep, nm)
        v = v + rho * (b - d)
        if (it + 1) % update_iter == 0:
            supp = support(d)
            change = float(((supp - supp_prev) ** 2).sum())
            if change / k_spar > 0.1:
                init_rho = True
                rho *= 1.3
            elif change / k_spar > 0.005:
                init_rho = True
                rho *= 1.2
            elif change > 0.5:
                if init_rho:
                    rho *= 1.1
                else:
                    rho /= 5
                    b = b_orig.clone()
                    d = d_init.clone()
                    v = torch.zeros_like(b)
            else:
                if init_rho:
                    break
                rho /= 5
            supp_prev = supp
            rho = min(rho, 1e6)
            if it >= switch_iter and change / k_spar < 0.0003:
                break
    return b, iterations


def _alps_guard(b, b_orig, d_init, g, rhs, cg_iters) -> tuple[torch.Tensor, dict]:
    """Divergence check: the ADMM result must reconstruct at least as well as its own starting point (the projection
    of W). An ill-conditioned XᵀX can make the iterations blow up; then the projection refined on its support is
    returned instead, and `{"fallback": "projection"}` is reported."""
    denominator = float(torch.sum(b_orig * (g @ b_orig)))
    error = _alps_objective(b, b_orig, g, denominator)
    start_bound = _alps_objective(d_init, b_orig, g, denominator)
    # float32 rounding of the two objectives: a bound of 0 (sparsity 0) may be met at 1e-13, not exactly
    tolerance = 1e-6 * (1.0 + start_bound)
    if bool(all_finite(b)) and math.isfinite(error) and -tolerance <= error <= start_bound + tolerance:
        return b, {}
    start = d_init
    if cg_iters > 0:
        start = _masked_cg(g, rhs, (d_init != 0).to(torch.float32), d_init, cg_iters, rtol=1e-4)
    start_error = _alps_objective(start, b_orig, g, denominator)
    if not (math.isfinite(start_error) and start_error <= start_bound + tolerance and bool(all_finite(start))):
        start = d_init
    return start, {"fallback": "projection", "diverged_error": error}


# ----------------------------------------------------------------------------------------------------------------
# Metrics


def relative_reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor, gram: torch.Tensor) -> float:
    """‖(W − Ŵ)X‖² / ‖WX‖², computed from the Gram matrix `XᵀX` (rows of X are tokens)."""
    w = weight.to(torch.float32)
    delta = w - pruned.to(torch.float32)
    g = gram.to(torch.float32)
    num = torch.sum((delta @ g) * delta)
    den = torch.sum((w @ g) * w)
    if float(den) <= 0:
        return 0.0 if float(num) <= 0 else math.inf
    return float(num / den)


def sampled_reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor, sample: torch.Tensor) -> float:
    """‖(W − Ŵ)Xₛᵀ‖² / ‖WXₛᵀ‖² on a sample `Xₛ` of input tokens `(tokens, d_in)`: the estimate of
    `relative_reconstruction_error` for methods that never form `XᵀX` (Wanda, magnitude), at tokens·d_in·d_out cost."""
    w = weight.to(torch.float32)
    x = sample.to(device=w.device, dtype=torch.float32)
    delta = w - pruned.to(torch.float32)
    num = torch.linalg.vector_norm(x @ delta.t()).pow(2)
    den = torch.linalg.vector_norm(x @ w.t()).pow(2)
    if float(den) <= 0:
        return 0.0 if float(num) <= 0 else math.inf
    return float(num / den)
